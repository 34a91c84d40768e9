"""The `mine` command as a user runs it, on real example data: the mining runs and the
exit-code contract in real subprocesses, the other user errors in process (click's
``CliRunner``, a fraction of a second each instead of an interpreter start)."""

import gzip
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, REPO

from miner.cli import main

MINE = [sys.executable, "-m", "miner"]


def mine(*args, cwd=None):
    return subprocess.run([*MINE, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=600)


def assert_user_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mine: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 dropped the argument: stderr is always apart
        return CliRunner()


def cli(*args):
    """``mine ARGS`` in this process; the result has ``exit_code``, ``stdout``, ``stderr``."""
    return _runner().invoke(main, list(map(str, args)), prog_name="mine")


def assert_cli_user_error(result, *words):
    """The in-process twin of ``assert_user_error``: exit 2, one ``mine: error:`` line
    naming ``words`` on stderr, nothing on stdout, no exception but the exit."""
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mine: error:"), result.stderr
    assert "Traceback" not in result.stderr and not result.stdout, (result.stdout, result.stderr)
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.slow  # `mine pair` in a subprocess, the encoder loaded: ~5 s
def test_pair_mines_the_example_corpus(tmp_path):
    out = tmp_path / "de-en.tsv.gz"
    p = mine("pair", EXAMPLES / "corpus.de.txt", EXAMPLES / "corpus.en.txt", "--src-lang", "de",
             "--tgt-lang", "en", "-o", out, "--show", "3")
    assert p.returncode == 0, p.stderr
    rows = [line.split("\t") for line in gzip.open(out, "rt", encoding="utf-8").read().splitlines()]
    scores = [float(r[0]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    de = (EXAMPLES / "corpus.de.txt").read_text(encoding="utf-8").splitlines()
    en = (EXAMPLES / "corpus.en.txt").read_text(encoding="utf-8").splitlines()
    gold = {(de[int(a) - 1], en[int(b) - 1]) for a, b in
            (line.split("\t") for line in (EXAMPLES / "gold.de-en.tsv").read_text().splitlines())}
    top = {(r[1], r[2]) for r in rows[: len(gold)]}
    # the best-scored pairs are the true translations
    assert len(top & gold) >= 0.9 * len(gold)
    assert p.stdout.count("\n") >= 3


@pytest.mark.slow  # `mine pair` in a subprocess, the encoder loaded: ~4 s
def test_pair_threshold_and_config_file(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[knn]\nk = 2\n[score]\nthreshold = 1.2\nmargin = 'ratio'\n")
    out = tmp_path / "o.tsv"
    p = mine("pair", EXAMPLES / "corpus.fr.txt", EXAMPLES / "corpus.en.txt", "--src-lang", "fr",
             "--tgt-lang", "en", "-o", out, "--config", cfg)
    assert p.returncode == 0, p.stderr
    scores = [float(line.split("\t")[0]) for line in out.read_text(encoding="utf-8").splitlines()]
    assert scores and min(scores) >= 1.2


def test_a_user_error_is_one_line_and_exit_2_in_a_real_process(tmp_path):
    """The exit-code contract as a shell sees it (the one subprocess among the error
    tests): exit status 2, one ``mine: error:`` line on stderr, no traceback."""
    en = EXAMPLES / "corpus.en.txt"
    assert_user_error(mine("pair", tmp_path / "missing.txt", en, "--src-lang", "de",
                           "--tgt-lang", "en", "-o", tmp_path / "o.tsv"),
                      "missing.txt", "no such file")
    assert not (tmp_path / "o.tsv").exists()


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    en = EXAMPLES / "corpus.en.txt"
    args = ["--src-lang", "de", "--tgt-lang", "en", "-o", tmp_path / "o.tsv"]
    assert_cli_user_error(cli("pair", tmp_path / "missing.txt", en, *args), "missing.txt",
                          "no such file")
    assert_cli_user_error(cli("pair", empty, en, *args), "empty.txt", "empty")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"gut\n\xff\xfe kaputt\n")
    assert_cli_user_error(cli("pair", bad, en, *args), "bad.txt", "UTF-8")
    assert_cli_user_error(cli("pair", en, en, "--src-lang", "de", "--tgt-lang", "de", "-o",
                              tmp_path / "o"), "de-de")
    assert_cli_user_error(cli("pair", en, en, "--src-lang", "Deutsch", "--tgt-lang", "en", "-o",
                              tmp_path / "o"), "Deutsch")
    assert not (tmp_path / "o.tsv").exists()


@pytest.mark.slow  # imports sentence-transformers (torch, transformers): seconds
def test_a_model_that_cannot_load_is_a_user_error(tmp_path):
    en = EXAMPLES / "corpus.en.txt"
    assert_cli_user_error(cli("pair", en, en, "--src-lang", "de", "--tgt-lang", "en", "-o",
                              tmp_path / "o.tsv", "--encoder", "sentence-transformers",
                              "--model", tmp_path / "no-model"), "cannot load")
    assert not (tmp_path / "o.tsv").exists()


def invoke(*args):
    """``mine ARGS`` in this process (click's CliRunner: no interpreter start, the
    encoder loaded once per test session); stdout and stderr apart."""
    from click.testing import CliRunner

    from miner.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def assert_invoke_error(result, *words):
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mine: error:"), result.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_eval_bucc_bad_inputs(tmp_path):
    (tmp_path / "de-en.training.de").write_text("de-1\tHallo\nnot a pair\n")
    (tmp_path / "de-en.training.en").write_text("en-1\tHello\n")
    (tmp_path / "de-en.training.gold").write_text("de-1\ten-1\n")
    assert_invoke_error(invoke("eval", "bucc", tmp_path, "--pair", "de-en", "--test-split",
                               "training"), "de-en.training.de:2", "malformed")
    assert_invoke_error(invoke("eval", "bucc", tmp_path, "--pair", "xx-en", "--test-split",
                               "training"), "xx-en")
    assert_invoke_error(invoke("eval", "bucc", tmp_path / "nowhere", "--pair", "de-en"), "nowhere")


def test_eval_bucc_on_examples_writes_pairs_and_json(tmp_path):
    pairs, js = tmp_path / "pairs.tsv", tmp_path / "r.json"
    r = invoke("eval", "bucc", EXAMPLES / "bucc_format", "--pair", "de-en", "--tune-split",
               "sample", "--test-split", "sample", "--output-pairs", pairs, "--json", js)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "F1=" in r.stdout and "filters:" not in r.stdout
    lines = pairs.read_text().splitlines()
    assert lines and all(a.startswith("de-") and b.startswith("en-")
                         for a, b in (x.split("\t") for x in lines))
    import json

    result = json.loads(js.read_text())
    assert result["f1"] > 0.9 and result["filters"] is False


def test_eval_bucc_filters_and_select(tmp_path):
    js = tmp_path / "r.json"
    r = invoke("eval", "bucc", EXAMPLES / "bucc_format", "--pair", "fr-en", "--tune-split",
               "sample", "--test-split", "sample", "--filters", "--select", "--json", js)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "fr-en sample filters:" in r.stdout and r.stdout.count("  tune ") == 8
    import json

    result = json.loads(js.read_text())
    assert result["filters"] is True and result["f1"] > 0.9
    counts = result["filter_counts"]
    # every bitext filter ran except the threshold, which is what the evaluation tunes
    assert counts["dropped"].get("below_threshold", 0) == 0 and "length_ratio" in counts["dropped"]
    assert counts["kept"] == counts["candidates"] - sum(counts["dropped"].values())


def test_unknown_config_key_is_a_user_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[knn]\nkk = 3\n")
    en = EXAMPLES / "corpus.en.txt"
    assert_cli_user_error(cli("pair", en, en, "--src-lang", "de", "--tgt-lang", "en", "-o",
                              tmp_path / "o", "--config", cfg), "c.toml", "kk")


def test_corrupt_gzip_body_is_one_line_for_pair_and_prepare(tmp_path):
    """A gzip stream with a valid header and a damaged body raises zlib.error, not OSError."""
    data = gzip.compress(("Ein Satz über Züge und Bahnhöfe im Winter.\n" * 400).encode())
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(data[:20] + b"\x00garbage" * 60 + data[-8:])
    assert_cli_user_error(cli("pair", bad, EXAMPLES / "corpus.en.txt", "--src-lang", "de",
                              "--tgt-lang", "en", "-o", tmp_path / "o.tsv"), "bad.txt.gz")
    assert_cli_user_error(cli("prepare", bad, "--lang", "de", "--out", tmp_path / "w"),
                          "bad.txt.gz")


# --- the flags: generated from the Config, the same on every command ----------------

import dataclasses  # noqa: E402
import importlib.metadata  # noqa: E402
import tomllib  # noqa: E402

import click  # noqa: E402

from miner.cli_options import SettingOption  # noqa: E402
from miner.config import Config  # noqa: E402


def _commands(group=main, path=()):
    """``(("eval", "bucc"), command)`` for every command of ``mine``."""
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def _config_fields():
    """``(section or None, field)`` of every setting of a Config, sections included."""
    sections = {f.name for f in dataclasses.fields(Config)
                if dataclasses.is_dataclass(f.default_factory)}
    for f in dataclasses.fields(Config):
        if f.name not in sections:
            yield None, f
    for s in sorted(sections):
        for f in dataclasses.fields(getattr(Config(), s)):
            yield s, f


def _printed(result) -> tuple[str, dict, dict[str, str]]:
    """``mine config`` output -> (config hash, the TOML as data, comment of each line)."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exc_info)
    text = result.stdout
    digest = next(line.split()[-1] for line in text.splitlines() if "config hash" in line)
    section, comments = None, {}
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif " = " in line and "  # " in line:
            name = line.lstrip("# ").split(" = ")[0]
            comments[f"{section}.{name}" if section else name] = line.rsplit("  # ", 1)[1]
    return digest, tomllib.loads(text), comments


def test_version_comes_from_the_package_metadata():
    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"mine {importlib.metadata.version('miner')}"


def test_h_is_help_on_every_command():
    assert cli("-h").stdout == cli("--help").stdout and "Commands:" in cli("-h").stdout
    for path, _ in _commands():
        short, long = cli(*path, "-h"), cli(*path, "--help")
        assert short.exit_code == 0 and short.stdout == long.stdout, path
        assert short.stdout.startswith(f"Usage: mine {' '.join(path)} "), path


def test_every_option_has_help_and_every_setting_shows_its_default():
    for path, cmd in _commands():
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            assert param.help, (path, param.name)
            if isinstance(param, SettingOption) or param.name == "show":
                record = param.get_help_record(click.Context(cmd))
                assert "[default: " in record[1], (path, param.name, record)


def test_every_config_field_is_a_flag_of_mine_run():
    """Introspects the dataclasses: a new field without a flag (or a `via` to the flag
    that sets it) fails here."""
    params = {p.name: p for p in main.commands["run"].params}
    for section, f in _config_fields():
        name = f.metadata.get("via", f.name)
        assert name in params, f"Config field {section}.{f.name} is no flag of mine run"
        assert f.metadata.get("help"), f"Config field {section}.{f.name} has no help text"
        if isinstance(params[name], SettingOption):
            assert params[name].setting.section == section


def _other_value(setting, param):
    """A valid value other than the default for one setting, as command-line words,
    and the value the Config then holds."""
    default, hint = setting.default, setting.hint
    special = {  # values that need a partner setting, or a shape of their own
        "encoder": (["--encoder", "sentence-transformers", "--model", "m"], "sentence-transformers"),
        "model": (["--model", "m", "--encoder", "sentence-transformers"], "m"),
        "lid_thresholds": (["--lid-threshold", "de=0.7"], {"de": 0.7}),
        "inputs": ([str(EXAMPLES / "corpus.de.txt")], [str(EXAMPLES / "corpus.de.txt")]),
        "pairs": (["--pair", "de-en"], ["de-en"]),
        "scorer": (["--scorer", "default"], "default"),
        "threshold": (["--threshold", "1.2"], 1.2),
        "min_length_ratio": (["--min-length-ratio", "0.4"], 0.4),
        "max_length_ratio": (["--max-length-ratio", "3"], 3.0),
        "device": (["--device", "cpu"], "cpu"),
        "st_backend": (["--st-backend", "onnx", "--encoder", "sentence-transformers",
                        "--model", "m"], "onnx"),
    }
    if setting.name in special:
        return special[setting.name]
    if hint is bool:
        flag = param.secondary_opts[0] if default else param.opts[0]
        return [flag], not default
    if setting.meta.get("choices"):
        value = next(c for c in setting.meta["choices"] if c != default)
    elif hint is int:
        value = (default or 0) + 1
    elif hint is float:
        value = default / 2
    elif hint is str:
        value = "1G" if setting.name in ("chunk_size", "max_memory") else "x"
    else:
        raise AssertionError(f"no test value for setting {setting.name} ({hint})")
    return [param.opts[0], str(value)], value


def test_every_setting_set_by_its_flag_reaches_the_config():
    """For each field: its flag with another value than the default, through `mine
    config`: the printed TOML holds the value and says it came from the flag."""
    from miner.cli_options import SETTINGS

    params = {p.name: p for p in main.commands["config"].params}
    for section, f in _config_fields():
        setting = SETTINGS[f.name]
        args, expected = _other_value(setting, params.get(f.metadata.get("via", f.name)))
        _, data, comments = _printed(cli("config", *args))
        got = (data.get(section, {}) if section else data).get(f.name)
        cfg = Config().update(data)
        value = getattr(getattr(cfg, section) if section else cfg, f.name)
        assert value == (got if f.name == "inputs" else expected), (f.name, args, got)
        key = f"{section}.{f.name}" if section else f.name
        assert comments[key].startswith(("flag ", "argument ")), (key, comments[key])


def test_lid_threshold_per_language_and_one_to_one_reach_the_config(tmp_path):
    """The acceptance case of the issue: `--lid-threshold de=0.7 --one-to-one` on `mine
    run`'s command line (once answered "did you mean --threshold") parse into the config."""
    conf = tmp_path / "run.toml"
    conf.write_text("[prepare]\nlid_thresholds = { fra = 0.9, deu = 0.5 }\nmin_chars = 5\n")
    _, data, comments = _printed(cli("config", EXAMPLES / "corpus.de.txt", "--pair", "de-en",
                                     "--config", conf, "--lid-threshold", "de=0.7",
                                     "--lid-threshold", "0.6", "--one-to-one", "-k", "8"))
    assert data["prepare"]["lid_thresholds"] == {"fr": 0.9, "de": 0.7}
    assert data["prepare"]["lid_threshold"] == 0.6 and data["filters"]["one_to_one"] is True
    assert comments["prepare.lid_thresholds"] == f"config file {conf} and flag --lid-threshold"
    assert comments["prepare.min_chars"] == f"config file {conf}"
    assert comments["filters.one_to_one"] == "flag --one-to-one"
    assert comments["knn.k"] == "flag -k" and comments["knn.index"] == "default"
    assert comments["inputs"] == "argument INPUTS"
    r = cli("config", "--lid-threshold", "de=high")
    assert r.exit_code == 2 and "de=high" in r.stderr and "LANG=P" in r.stderr


def test_mine_config_round_trip_gives_the_same_hash(tmp_path, monkeypatch):
    conf = tmp_path / "run.toml"
    conf.write_text('inputs = ["corpus.de.txt"]\n[score]\nmargin = "distance"\n')
    (tmp_path / "corpus.de.txt").write_text("Ein Satz.\n")
    monkeypatch.chdir(tmp_path)  # relative inputs on the command line: from here
    args = ["config", "corpus.de.txt", "--config", conf, "--pair", "de-en", "--out", "o \"x\"",
            "--lid-threshold", "de=0.7", "--no-pair-dedup", "--threshold", "0.25"]
    first = cli(*args)
    digest, data, _ = _printed(first)
    elsewhere = tmp_path / "sub" / "dir"
    elsewhere.mkdir(parents=True)
    printed = elsewhere / "printed.toml"
    printed.write_text(first.stdout)
    monkeypatch.chdir(elsewhere)  # the file read from another folder: same settings
    again_digest, again, comments = _printed(cli("config", "--config", printed))
    assert again_digest == digest and again == data
    present = {f"{k}.{n}" if isinstance(v, dict) else k  # tables: the sections
               for k, v in again.items() for n in (v if isinstance(v, dict) else [None])}
    # every value written is read from the file; unset ones (comment lines) stay default
    assert {comments[k] for k in present} == {f"config file {printed}"}
    assert {v for k, v in comments.items() if k not in present} == {"default"}
    assert Config.from_toml(printed).config_hash() == digest
    # a flag changes the hash
    assert _printed(cli("config", "--config", printed, "-k", "5"))[0] != digest


@pytest.mark.parametrize("args", [
    ["embed", "{d}", "-k", "3"],  # a knn setting
    ["embed", "{d}", "--min-chars", "3"],  # a prepare setting
    ["knn", "{d}", "--pair", "de-en", "--margin", "distance"],
    ["score", "{d}", "--pair", "de-en", "--threshold", "1.1"],  # bitext's
    ["bitext", "{d}", "--pair", "de-en", "--encoder", "muse"],
    ["prepare", "{d}/in.txt", "--lang", "de", "--index", "ivf"],
    ["eval", "tatoeba", "{d}", "-k", "3"],  # xsim uses no k, margin, retrieval, shard size
    ["eval", "tatoeba", "{d}", "--margin", "ratio"],
    ["eval", "bucc", "{d}", "--pair", "de-en", "--threshold", "1.2"],  # bucc tunes it
])
def test_a_command_refuses_a_setting_it_does_not_use(tmp_path, args):
    d = tmp_path / "run"
    r = cli(*[a.format(d=d) for a in args])
    assert r.exit_code == 2 and "No such option" in r.stderr, r.stderr
    assert not d.exists()


def test_pair_and_run_show_the_same_number_of_pairs_by_default():
    show = {name: next(p for p in main.commands[name].params if p.name == "show").default
            for name in ("pair", "run")}
    assert show == {"pair": 10, "run": 10}


def test_embed_without_lang_embeds_the_languages_with_sentence_shards(tmp_path):
    from miner.pair import write_line_shards

    run_dir = tmp_path / "run"
    for lang in ("de", "en"):
        write_line_shards(EXAMPLES / f"corpus.{lang}.txt", lang, run_dir, 50)
    r = cli("embed", run_dir)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exc_info)
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == ["embed de", "embed en"]
    assert "embed de: 70 sentences in 2 shard(s)" in r.stdout
    assert len(list((run_dir / "embeddings" / "en").glob("part-*.parquet"))) == 2
    assert_cli_user_error(cli("embed", tmp_path / "empty"), "empty", "no sentence shards")


@pytest.mark.slow  # mine pair twice in process, mUSE loaded: ~10-25 s
def test_pair_applies_the_threshold_and_filters_of_mine_run(tmp_path):
    """No --threshold: the bitext stage's default (1.30 for muse + ratio), as `mine run`
    and `mine bitext` apply it; told otherwise, another threshold and no filters."""
    from miner.filters import DEFAULT_THRESHOLDS

    default = DEFAULT_THRESHOLDS[("muse", "ratio")]
    work, out = tmp_path / "work", tmp_path / "o.tsv"
    args = ["pair", EXAMPLES / "corpus.de.txt", EXAMPLES / "corpus.en.txt", "--src-lang", "de",
            "--tgt-lang", "en", "-o", out, "--work", work, "--show", "0"]
    r = cli(*args)
    assert r.exit_code == 0, (r.stderr, r.exc_info)
    kept = [float(line.split("\t")[0]) for line in out.read_text(encoding="utf-8").splitlines()]
    assert kept and min(kept) >= default and "below_threshold" in r.stderr
    r = cli(*args, "--threshold", "0.5", "--no-length-ratio", "--no-lid-agreement")
    assert r.exit_code == 0, (r.stderr, r.exc_info)
    every = [float(line.split("\t")[0]) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(every) > len(kept) and min(every) < default
    assert "dropped: none" in r.stderr


@pytest.mark.slow  # a whole `mine run` of the example articles in process: ~10-20 s
def test_mine_run_with_per_language_lid_threshold_and_one_to_one(tmp_path):
    """The issue's acceptance case end to end: `mine run --lid-threshold de=0.7
    --one-to-one` runs with those settings (manifest), `mine config` with the same
    arguments shows them and the same hash, and `mine run --config` of what it printed
    is the same run (same hash, every stage current)."""
    import json

    out = tmp_path / "out"
    args = [EXAMPLES / "articles" / "de.jsonl", EXAMPLES / "articles" / "en.jsonl",
            "--pair", "de-en", "--out", out, "--lid-threshold", "de=0.7", "--one-to-one"]
    r = cli("run", *args, "--show", "0")
    assert r.exit_code == 0, (r.stderr, r.exc_info)
    run_hash = r.stdout.split("config hash ")[1].split()[0]
    config = json.loads((out / "manifest.json").read_text())["run"]["config"]
    assert config["prepare"]["lid_thresholds"] == {"de": 0.7}
    assert config["filters"]["one_to_one"] is True
    printed = cli("config", *args)
    digest, data, comments = _printed(printed)
    assert digest == run_hash and data["prepare"]["lid_thresholds"] == {"de": 0.7}
    assert comments["filters.one_to_one"] == "flag --one-to-one"
    conf = tmp_path / "printed.toml"
    conf.write_text(printed.stdout)
    again = cli("run", "--config", conf, "--show", "0")
    assert again.exit_code == 0, (again.stderr, again.exc_info)
    assert again.stdout == r.stdout  # the same pairs and the same config hash
