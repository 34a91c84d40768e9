"""One typed configuration filled by TOML files and flags with the same names."""

from pathlib import Path

import pytest

from miner.config import Config, parse_memory, parse_pair
from miner.errors import MinerError


def test_toml_sections_and_flat_names(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('out = "w"\npairs = ["de-en"]\ninputs = ["a.xml", "/abs/b.txt"]\n'
                 'min_chars = 5\n[knn]\nk = 8\n[score]\nthreshold = 1\n')
    cfg = Config.from_toml(f)
    assert cfg.knn.k == 8 and cfg.prepare.min_chars == 5
    assert cfg.score.threshold == 1.0 and isinstance(cfg.score.threshold, float)
    assert cfg.inputs == [str(tmp_path / "a.xml"), "/abs/b.txt"]
    assert cfg.parsed_pairs() == [("de", "en")]


def test_flags_override_file_and_none_keeps_value(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("[knn]\nk = 8\n")
    cfg = Config.from_toml(f).update({"k": None, "margin": "distance", "max-chars": 300})
    assert cfg.knn.k == 8 and cfg.score.margin == "distance" and cfg.prepare.max_chars == 300


@pytest.mark.parametrize("text,msg", [
    ("[knn]\nkk = 1\n", "kk"), ("k = 'four'\n", "integer"), ("nope = 1\n", "nope"),
    ("[knn\n", "TOML"),
])
def test_bad_config_is_a_user_error(tmp_path, text, msg):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(MinerError, match=msg):
        Config.from_toml(f)


def test_stage_hash_changes_with_its_settings_only():
    a = Config()
    b = Config().update({"k": 8})
    assert a.stage_hash("embed") == b.stage_hash("embed")
    assert a.stage_hash("knn") != b.stage_hash("knn")


def test_parsers():
    assert parse_memory("8G") == 8 << 30 and parse_memory("512M") == 512 << 20
    assert parse_pair("fr-en") == ("fr", "en")
    for bad in ("de", "de-de", "de-en-fr"):
        with pytest.raises(MinerError):
            parse_pair(bad)
    with pytest.raises(MinerError):
        parse_memory("lots")


# --- Config.validate: every setting checked before any stage runs -------------------

def test_default_config_and_example_validate():
    assert Config().validate().knn.k == 4
    from conftest import EXAMPLES

    assert Config.from_toml(EXAMPLES / "run.toml").parsed_pairs() == [("de", "en"), ("fr", "en")]


@pytest.mark.parametrize("settings,words", [
    # top level
    ({"shard_size": 0}, ["shard_size = 0", ">= 1"]),
    ({"executor": "slurm"}, ["executor = 'slurm'", "local, ray"]),
    ({"seed": -1}, ["seed = -1"]),
    ({"out": " "}, ["out"]),
    # prepare
    ({"format": "pdf"}, ["format = 'pdf'", "auto, wiki"]),
    ({"min_chars": -1}, ["min_chars = -1", ">= 0"]),
    ({"max_chars": 10}, ["max_chars = 10", "min_chars (10)"]),
    ({"lid_threshold": 1.5}, ["lid_threshold = 1.5", "between 0 and 1"]),
    ({"lid_thresholds": {"de": -0.1}}, ["lid_thresholds[de] = -0.1", "between 0 and 1"]),
    ({"lid_thresholds": {"Deutsch": 0.5}}, ["lid_thresholds = 'Deutsch'"]),
    ({"workers": -2}, ["workers = -2", ">= 0"]),
    ({"chunk_size": "lots"}, ["chunk_size = 'lots'", "512M"]),
    ({"chunk_size": "0"}, ["chunk_size = '0'", "> 0"]),
    ({"text_field": ""}, ["text_field"]),
    # embed
    ({"encoder": "laser"}, ["encoder = 'laser'", "muse, sentence-transformers"]),
    ({"model": "x/y"}, ["model = 'x/y'", "muse"]),
    ({"encoder": "sentence-transformers"}, ["model = None", "sentence-transformers"]),
    ({"batch_size": 0}, ["batch_size = 0", ">= 1"]),
    ({"embed_dtype": "bfloat16"}, ["embed_dtype = 'bfloat16'", "float16, float32"]),
    ({"device": "gpu"}, ["device = 'gpu'", "cuda:N"]),
    ({"device": "cuda:x"}, ["device = 'cuda:x'"]),
    # knn
    ({"k": 0}, ["k = 0", ">= 1"]),
    ({"index": "hnsw"}, ["index = 'hnsw'", "flat, ivf, ivfpq, auto"]),
    ({"nprobe": 0}, ["nprobe = 0", ">= 1"]),
    ({"knn_backend": "cuda"}, ["knn_backend = 'cuda'", "faiss"]),
    ({"max_memory": "12X"}, ["max_memory = '12X'", "8G"]),
    ({"max_memory": "-1G"}, ["max_memory = '-1G'", "> 0"]),
    # score
    ({"margin": "foo"}, ["margin = 'foo'", "ratio, distance, absolute"]),
    ({"retrieval": "both"}, ["retrieval = 'both'", "max, intersect, fwd, bwd"]),
    ({"threshold": float("inf")}, ["threshold = inf", "finite"]),
    ({"threshold": float("nan")}, ["threshold = nan", "finite"]),
    # filters
    ({"min_length_ratio": 0.0}, ["min_length_ratio = 0.0", "> 0"]),
    ({"max_length_ratio": -2.0}, ["max_length_ratio = -2.0", "> 0"]),
    ({"min_length_ratio": 3.0, "max_length_ratio": 2.0}, ["min_length_ratio = 3.0", "max_length_ratio (2.0)"]),
    ({"lid_agreement_min_prob": 2.0}, ["lid_agreement_min_prob = 2.0", "between 0 and 1"]),
    ({"lid_agreement_min_expected": -1.0}, ["lid_agreement_min_expected = -1.0"]),
    ({"number_min_digits": 0}, ["number_min_digits = 0", ">= 1"]),
    ({"max_pairs_per_doc": 0}, ["max_pairs_per_doc = 0", ">= 1"]),
])
def test_validate_names_setting_value_and_what_is_allowed(settings, words):
    cfg = Config().update(settings)
    with pytest.raises(MinerError) as e:
        cfg.validate()
    msg = str(e.value)
    assert msg.startswith("setting ") and "\n" not in msg and "expected" in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("settings", [
    {"device": "cuda:1"}, {"device": "mps"}, {"encoder": "sentence-transformers", "model": "m"},
    {"min_length_ratio": 2.0, "max_length_ratio": 2.0}, {"min_length_ratio": 0.1},
    {"max_pairs_per_doc": 1}, {"threshold": 1.0}, {"workers": 0}, {"min_chars": 0, "max_chars": 1},
    {"lid_thresholds": {"deu": 0.7, "__label__fr": 1}}, {"chunk_size": "1"}, {"format": "auto"},
])
def test_validate_accepts_edge_values(settings):
    Config().update(settings).validate()


@pytest.mark.parametrize("pairs,words", [
    (["de-deu"], ["'de-deu'", "both de"]),  # one language under two codes
    (["de-DE"], ["'de-DE'", "both de"]),
    (["de-de"], ["'de-de'", "two different"]),
    (["de"], ["'de'", "like de-en"]),
    (["de-en-fr"], ["'de-en-fr'"]),
    (["de-xx"], ["'de-xx'", "'xx'"]),  # not an ISO 639-1 code
    (["und-en"], ["'und-en'", "'und'"]),
    (["de-1"], ["'de-1'", "'1'"]),
    (["de-en", "fr-en", "deu-eng"], ["'deu-eng'", "same as 'de-en'"]),
])
def test_validate_pairs_after_normalisation(pairs, words):
    with pytest.raises(MinerError) as e:
        Config(pairs=pairs).validate()
    for w in ["setting pairs", *words]:
        assert w in str(e.value), str(e.value)


def test_validate_pairs_accepts_codes_in_any_form():
    Config(pairs=["deu-eng", "fr-en", "en-fr", "zh_Hans-en", "gsw-de"]).validate()


@pytest.mark.parametrize("field,value,words", [
    ("shard_size", "10", ["shard_size = '10'", "an integer"]),
    ("shard_size", True, ["shard_size = True", "an integer"]),
    ("pairs", "de-en", ["pairs = 'de-en'", "a list of strings"]),
    ("inputs", [1], ["inputs = [1]", "a list of strings"]),
])
def test_validate_checks_types_of_values_set_directly(field, value, words):
    cfg = Config()
    setattr(cfg, field, value)
    with pytest.raises(MinerError) as e:
        cfg.validate()
    for w in words:
        assert w in str(e.value), str(e.value)
    cfg = Config()
    cfg.prepare.lid_thresholds = {"de": "high"}
    with pytest.raises(MinerError, match="lid_thresholds"):
        cfg.validate()
    cfg = Config()
    cfg.filters.max_pairs_per_doc = 1.5
    with pytest.raises(MinerError, match="max_pairs_per_doc = 1.5: expected an integer or unset"):
        cfg.validate()


@pytest.mark.parametrize("text,words", [
    ("[knn]\nk = 0\n", ["k = 0"]), ("max_memory = '12X'\n", ["max_memory = '12X'"]),
    ("pairs = ['de-deu']\n", ["de-deu"]), ("[score]\nmargin = 'foo'\n", ["margin = 'foo'"]),
    ("[filters]\nmax_pairs_per_doc = 0\n", ["max_pairs_per_doc = 0"]),
])
def test_from_toml_validates_and_names_the_file(tmp_path, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(MinerError) as e:
        Config.from_toml(f)
    for w in ["bad.toml", *words]:
        assert w in str(e.value), str(e.value)


def test_parse_memory_overflow_is_a_user_error():
    with pytest.raises(MinerError):
        parse_memory("infG")


# --- one set of choices: config constants, stage modules, CLI -----------------------

def test_stage_modules_reexport_the_config_constants():
    from miner import config, executor, margin, readers
    from miner.embed import encoders

    assert readers.FORMATS is config.FORMATS and config.FORMAT_CHOICES == ("auto", *config.FORMATS)
    assert encoders.ENCODERS is config.ENCODERS
    assert margin.MARGINS is config.MARGINS and margin.RETRIEVALS is config.RETRIEVALS
    assert executor.EXECUTORS is config.EXECUTORS


def _choice_params(group, path=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _choice_params(cmd, (*path, name))
            continue
        for param in cmd.params:
            if isinstance(param.type, click.Choice):
                yield " ".join((*path, name)), param


def test_cli_choices_are_the_config_constants():
    """Every flag with a fixed set of values is generated from a Config field whose
    choices are a constant of miner.config (the one the stage modules use)."""
    from miner import config
    from miner.cli import main
    from miner.cli_options import SettingOption

    constants = [v for v in vars(config).values() if isinstance(v, tuple)]
    seen = set()
    for command, param in _choice_params(main):
        assert isinstance(param, SettingOption), f"mine {command} --{param.name}: not generated"
        choices = param.setting.meta["choices"]
        assert any(choices is c for c in constants), f"mine {command} --{param.name}"
        assert tuple(param.type.choices) == choices, f"mine {command} --{param.name}"
        seen.add(param.name)
    assert {"executor", "encoder", "margin", "retrieval", "knn_backend", "format",
            "embed_dtype", "index"} <= seen


# --- the CLI: a bad value fails before any stage runs --------------------------------

def _invoke(*args):
    from click.testing import CliRunner

    from miner.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_line_error(result, *words):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mine: error: "), result.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("args,words", [
    (["-k", "0"], ["k = 0"]),
    (["--max-memory", "12X"], ["max_memory = '12X'"]),
    (["--chunk-size", "0"], ["chunk_size = '0'"]),
    (["--pair", "de-deu"], ["de-deu"]),
    (["--pair", "de-xx"], ["de-xx"]),
    (["--min-chars", "600"], ["max_chars = 500"]),
    (["--threshold", "nan"], ["threshold = nan"]),
])
def test_mine_run_bad_value_fails_before_any_stage(tmp_path, args, words):
    src = tmp_path / "in.txt"
    src.write_text("Ein Satz.\n")
    out = tmp_path / "out"
    result = _invoke("run", src, "--pair", "de-en", "--out", out, *args)
    _assert_one_line_error(result, *words)
    assert not out.exists()


@pytest.mark.parametrize("text,words", [
    ("[score]\nmargin = 'foo'\n", ["c.toml", "margin = 'foo'"]),
    ("[knn]\nk = 0\n", ["c.toml", "k = 0"]),
    ("max_memory = '12X'\n", ["c.toml", "max_memory"]),
    ("pairs = ['de-deu']\n", ["c.toml", "de-deu"]),
])
def test_mine_run_bad_config_file_fails_before_any_stage(tmp_path, text, words):
    conf = tmp_path / "c.toml"
    conf.write_text(f"out = {str(tmp_path / 'out')!r}\ninputs = ['in.txt']\n" + text)
    (tmp_path / "in.txt").write_text("Ein Satz.\n")
    _assert_one_line_error(_invoke("run", "--config", conf), *words)
    assert not (tmp_path / "out").exists()


def test_mine_run_click_rejects_unknown_choice(tmp_path):
    result = _invoke("run", tmp_path / "in.txt", "--pair", "de-en", "--out", tmp_path / "out",
                     "--margin", "foo")
    assert result.exit_code == 2 and "foo" in result.stderr
    assert not (tmp_path / "out").exists()


def test_mine_prepare_checks_per_language_lid_threshold(tmp_path):
    result = _invoke("prepare", tmp_path / "in.txt", "--lang", "de", "--out", tmp_path / "out",
                     "--lid-threshold", "de=1.5")
    _assert_one_line_error(result, "lid_thresholds[de] = 1.5")
    assert not (tmp_path / "out").exists()


# --- the resolved settings as TOML (mine config) and their hash ----------------------

def test_to_toml_reads_back_to_the_same_config_and_hash(tmp_path):
    import tomllib

    cfg = Config(out='runs/"q" \\ tab\there\x7f ü', pairs=["de-en", "fr-en"],
                 inputs=["a.txt", "s3://bucket/b.jsonl"])
    cfg.update({"lid_thresholds": {"de": 0.7, "zh_Hans": 0.25}, "threshold": 1.3,
                "one_to_one": True, "k": 8, "lid_model": "lid 176.bin"})
    text = cfg.to_toml({"knn.k": "flag -k"})
    assert "k = 8  # flag -k" in text and "one_to_one = true  # default" in text
    assert "# scorer = (unset)  # default" in text  # TOML has no null: a comment line
    f = tmp_path / "sub" / "printed.toml"
    f.parent.mkdir()
    f.write_text(text, encoding="utf-8")
    back = Config.from_toml(f)
    assert back.config_hash() == cfg.config_hash()
    # inputs are written absolute (a URL as it is), so the file can be read from anywhere
    assert back.inputs == [str((Path.cwd() / "a.txt").absolute()), "s3://bucket/b.jsonl"]
    assert {**back.to_dict(), "inputs": None} == {**cfg.to_dict(), "inputs": None}
    assert tomllib.loads(text)["out"] == cfg.out


def test_config_hash_covers_every_setting_and_inputs_by_absolute_path():
    base = Config(inputs=["a.txt"]).config_hash()
    assert Config(inputs=[str(Path("a.txt").absolute())]).config_hash() == base
    assert Config(inputs=["b.txt"]).config_hash() != base
    assert Config(inputs=["a.txt"]).update({"script_min_share": 0.6}).config_hash() != base
    assert Config(inputs=["a.txt"], seed=1).config_hash() != base


def test_update_records_where_each_setting_came_from(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("min_chars = 5\n[knn]\nk = 8\n")
    origin: dict[str, str] = {}
    cfg = Config.from_toml(f, origin)
    cfg.update({"margin": "distance", "k": None}, origin=origin, source="flag --margin")
    assert origin == {"prepare.min_chars": f"config file {f}", "knn.k": f"config file {f}",
                      "score.margin": "flag --margin"}


def test_docstring_example_is_a_valid_config_with_the_default_threshold():
    """The example of miner/config.py once set threshold = 1.06, LASER's value, which
    keeps nearly every mUSE candidate."""
    import tomllib

    from miner import config
    from miner.filters import DEFAULT_THRESHOLDS

    example = config.__doc__.split("Example ``run.toml``::")[1]
    cfg = Config().update(tomllib.loads(example)).validate()
    assert cfg.score.threshold == DEFAULT_THRESHOLDS[(cfg.embed.encoder, cfg.score.margin)]
