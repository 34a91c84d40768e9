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
