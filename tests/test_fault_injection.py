"""Issue 14, "every bad input gets one line and loses nothing": a table of bad inputs
and settings x the commands they reach. Each must exit 2 with exactly one stderr line
``mine: error: ...`` naming the file or setting, no traceback, and leave every file
that existed under the run folder before the command byte for byte as it was.

In process (click's ``CliRunner``) against a finished run of the example corpus,
built once per module and copied per test."""

import errno
import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES

from miner.cli import main

DE, EN = EXAMPLES / "corpus.de.txt", EXAMPLES / "corpus.en.txt"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """`mine run` of the example corpus (de-en, shards of 25), finished."""
    from miner.config import Config
    from miner.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = Config(out=str(out), pairs=["de-en"], inputs=[str(DE), str(EN)], shard_size=25)
    run_pipeline(cfg.validate(), progress=lambda msg: None)
    assert (out / "bitext" / "de-en" / "bitext.parquet").exists()
    return out


@pytest.fixture
def run_dir(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def snapshot(root: Path) -> dict:
    """The content hash of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2: stderr is always apart
        runner = CliRunner()
    return runner.invoke(main, list(map(str, args)), prog_name="mine")


def assert_one_line(result, *words, progress_ok=False):
    """Exit 2, one ``mine: error:`` line naming ``words``, no traceback. ``progress_ok``:
    stages that finished before the failing one may have printed progress lines."""
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("mine: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    if not progress_ok:
        assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for w in words:
        assert str(w) in errors[0], errors[0]


def check_unchanged(run_dir: Path, before: dict) -> None:
    after = snapshot(run_dir)
    assert {k: after.get(k) for k in before} == before, \
        [k for k in before if after.get(k) != before[k]]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- settings: refused before any stage runs -------------------------------------------

SETTINGS = {  # name -> (command builder(run_dir, tmp), words the line names)
    "run threshold nan": (lambda d, t: ["run", DE, EN, "--pair", "de-en", "--out", d,
                                        "--threshold", "nan"], ["threshold", "nan"]),
    "run threshold inf": (lambda d, t: ["run", DE, EN, "--pair", "de-en", "--out", d,
                                        "--threshold", "inf"], ["threshold", "inf"]),
    "bitext threshold -inf": (lambda d, t: ["bitext", d, "--pair", "de-en", "--threshold",
                                            "-inf"], ["threshold"]),
    "bitext threshold nan in TOML": (
        lambda d, t: ["bitext", d, "--pair", "de-en", "--config",
                      write(t / "c.toml", "[score]\nthreshold = nan\n")], ["c.toml", "threshold"]),
    "run pairs of wrong type": (
        lambda d, t: ["run", "--out", d, "--config",
                      write(t / "c.toml", f'pairs = ["de-en", 5]\ninputs = ["{DE}"]\n')],
        ["c.toml", "pairs"]),
    "run inputs of wrong type": (
        lambda d, t: ["run", "--pair", "de-en", "--out", d, "--config",
                      write(t / "c.toml", "inputs = [3]\n")], ["c.toml", "inputs"]),
    "run min-chars above max-chars": (
        lambda d, t: ["run", DE, EN, "--pair", "de-en", "--out", d, "--min-chars", 600,
                      "--max-chars", 500], ["max_chars", "min_chars"]),
    "prepare min-chars above max-chars": (
        lambda d, t: ["prepare", DE, "--lang", "de", "--no-lid", "--out", d, "--min-chars", 9,
                      "--max-chars", 9], ["max_chars"]),
    "knn nprobe 0": (lambda d, t: ["knn", d, "--pair", "de-en", "--nprobe", 0], ["nprobe"]),
    "score shard-size 0": (lambda d, t: ["score", d, "--pair", "de-en", "--shard-size", 0],
                           ["shard_size"]),
    "pair shard-size 0": (lambda d, t: ["pair", DE, EN, "--src-lang", "de", "--tgt-lang", "en",
                                        "-o", d / "pairs.tsv", "--shard-size", 0], ["shard_size"]),
    "pair shard-size negative": (
        lambda d, t: ["pair", DE, EN, "--src-lang", "de", "--tgt-lang", "en", "-o",
                      d / "pairs.tsv", "--shard-size", -5], ["shard_size"]),
    "pair threshold nan": (lambda d, t: ["pair", DE, EN, "--src-lang", "de", "--tgt-lang", "en",
                                         "-o", d / "pairs.tsv", "--threshold", "nan"],
                           ["threshold"]),
    "eval bucc threshold-free k 0": (
        lambda d, t: ["eval", "bucc", EXAMPLES / "bucc_format", "--pair", "de-en", "-k", 0],
        ["k = 0"]),
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_bad_setting_is_one_line_and_changes_nothing(run_dir, tmp_path, case):
    build, words = SETTINGS[case]
    before = snapshot(run_dir)
    assert_one_line(cli(*build(run_dir, tmp_path)), *words)
    check_unchanged(run_dir, before)
    assert not (run_dir / "pairs.tsv").exists()


# -- the run folder: its manifest, the folder itself -----------------------------------

@pytest.mark.parametrize("manifest", ["[]", '{"stages": 5}', '{"stages": {"prepare": 3}}',
                                      '{"stages": {"score/de-en": {"tasks": []}}}',
                                      '{"stages": {"prepare": {"finish": {"outputs": [1]}}}}'])
@pytest.mark.parametrize("command", ["bitext", "score", "report", "run"])
def test_manifest_of_the_wrong_structure(run_dir, manifest, command):
    (run_dir / "manifest.json").write_text(manifest)
    before = snapshot(run_dir)
    args = {"bitext": ["bitext", run_dir, "--pair", "de-en"],
            "score": ["score", run_dir, "--pair", "de-en"],
            "report": ["report", run_dir],
            "run": ["run", DE, EN, "--pair", "de-en", "--out", run_dir]}[command]
    assert_one_line(cli(*args), "manifest.json", "not a miner manifest")
    check_unchanged(run_dir, before)


@pytest.mark.parametrize("command", ["run", "prepare", "embed", "knn", "score", "bitext",
                                     "report"])
def test_out_that_is_a_file(tmp_path, command):
    f = write(tmp_path / "out", "a file\n")
    args = {"run": ["run", DE, EN, "--pair", "de-en", "--out", f],
            "prepare": ["prepare", DE, "--lang", "de", "--no-lid", "--out", f],
            "embed": ["embed", f, "--lang", "de"], "knn": ["knn", f, "--pair", "de-en"],
            "score": ["score", f, "--pair", "de-en"], "bitext": ["bitext", f, "--pair", "de-en"],
            "report": ["report", f]}[command]
    assert_one_line(cli(*args), f, "not a directory")
    assert f.read_text() == "a file\n"


def test_out_below_a_file(tmp_path):
    f = write(tmp_path / "out", "a file\n")
    assert_one_line(cli("prepare", DE, "--lang", "de", "--no-lid", "--out", f / "sub"), f / "sub")


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES])
def test_read_only_out(run_dir, monkeypatch, err):
    """The folder cannot be written (as root, chmod does not stop us: the error is
    injected where the run lock is created)."""
    from miner import runlock

    real_open = os.open

    def deny(path, flags, *a, **kw):
        if str(path).endswith(".lock") and flags & os.O_CREAT:
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(runlock.os, "open", deny)
    before = snapshot(run_dir)
    assert_one_line(cli("bitext", run_dir, "--pair", "de-en", "--threshold", 1.2), run_dir,
                    "cannot write the run folder")
    check_unchanged(run_dir, before)


def test_bitext_on_a_read_only_file_system_names_the_file(run_dir, monkeypatch):
    """EROFS while writing an output (not the folder): the CLI's one line names it."""
    _fail_writing(monkeypatch, "bitext.tsv.gz", errno.EROFS)
    before = snapshot(run_dir)
    assert_one_line(cli("bitext", run_dir, "--pair", "de-en", "--threshold", 1.2,
                        "--no-report"), "bitext.tsv.gz", "Read-only file system")
    check_unchanged(run_dir, before)


# -- a full disk ------------------------------------------------------------------------

def _fail_writing(monkeypatch, name: str, code: int = errno.ENOSPC) -> list:
    """Make writing the file called ``name`` fail with OSError ``code`` (no file name,
    as a failing write() gives) once its bytes are out (``miner.io.atomic_path`` and
    the modules that imported it). Returns the paths hit."""
    import contextlib

    from miner import io, outputs, report

    real = io.atomic_path
    hits = []

    @contextlib.contextmanager
    def full(path):
        with real(path) as tmp:
            yield tmp
            if Path(str(path)).name == name:
                hits.append(path)
                raise OSError(code, os.strerror(code))

    for module in (io, outputs, report):
        monkeypatch.setattr(module, "atomic_path", full)
    return hits


@pytest.mark.parametrize("name", ["train.en", "bitext.parquet", "README.md", "manifest.json"])
def test_disk_full_in_bitext_then_rerun_gives_identical_bitext(run_dir, finished, monkeypatch,
                                                               name):
    before = snapshot(run_dir)
    with monkeypatch.context() as m:
        hits = _fail_writing(m, name)
        result = cli("bitext", run_dir, "--pair", "de-en", "--threshold", 1.2, "--no-report")
    assert hits, (result.stderr, result.exc_info)
    assert_one_line(result, name, "No space left on device")
    # the published bitext is the old one, whole; the manifest as it was (unless the
    # bitext was published and only its record could not be written)
    if name != "manifest.json":
        check_unchanged(run_dir, before)
    else:
        check_unchanged(run_dir, {k: v for k, v in before.items() if not k.startswith("bitext/")})
    # with space again the same command writes what a run that never failed writes
    ok = cli("bitext", run_dir, "--pair", "de-en", "--threshold", 1.2, "--no-report")
    assert ok.exit_code == 0, ok.stderr
    ref = Path(str(finished) + "-ref-1.2")
    if not ref.exists():
        shutil.copytree(finished, ref)
        assert cli("bitext", ref, "--pair", "de-en", "--threshold", 1.2,
                   "--no-report").exit_code == 0
    got, want = snapshot(run_dir / "bitext"), snapshot(ref / "bitext")
    assert got == want
    assert not [p for p in run_dir.rglob("*.tmp")]


def test_disk_full_in_report(run_dir, monkeypatch):
    before = snapshot(run_dir)
    _fail_writing(monkeypatch, "report.html")
    assert_one_line(cli("report", run_dir), "report.html", "No space left on device")
    check_unchanged(run_dir, {k: v for k, v in before.items() if not k.startswith("report")})
    assert snapshot(run_dir)["report.html"] == before["report.html"]


def test_other_os_errors_are_bugs_and_raise(run_dir, monkeypatch):
    """Only storage errors become a line: anything else still raises."""
    from miner import outputs

    def broken(*a, **kw):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(outputs, "publish", broken)
    result = cli("bitext", run_dir, "--pair", "de-en", "--threshold", 1.2, "--no-report")
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.EBADF


# -- languages left with no sentence ----------------------------------------------------

@pytest.mark.slow  # prepare and embed of the corpus in a fresh folder: ~2-3 s each
@pytest.mark.parametrize("flags,words", [
    (["--pair", "de-ja"], ["ja:", "no input document", "in another language"]),
    (["--pair", "de-en", "--min-chars", 400], ["de:", "shorter than min_chars 400"]),
])
def test_a_language_with_no_sentences_is_one_line(tmp_path, flags, words):
    result = cli("run", DE, EN, "--out", tmp_path / "run", *flags)
    # one of the two wordings: no document at all, or every sentence dropped
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and lines[-1].startswith("mine: error:"), result.stderr
    assert words[0] in lines[-1] and any(w in lines[-1] for w in words[1:]), lines[-1]
    assert_one_line(result, words[0], progress_ok=True)
    assert not (tmp_path / "run" / "bitext").exists()


def test_knn_of_an_empty_language_names_it(run_dir):
    """The kNN stage's check, on a folder whose German embeddings hold no row (as
    prepare leaves a language that kept no sentence)."""
    import pyarrow.parquet as pq

    for p in sorted((run_dir / "embeddings" / "de").glob("part-*.parquet")):
        t = pq.read_table(p)
        pq.write_table(t.slice(0, 0), p)
    before = snapshot(run_dir)
    # --index ivf: not current, so the stage checks its inputs again
    result = cli("knn", run_dir, "--pair", "de-en", "--index", "ivf")
    assert_one_line(result, "de:", "no sentences")
    check_unchanged(run_dir, before)


# -- mine pair ----------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_pair_refuses_an_output_that_is_an_input(tmp_path, spelling):
    src = tmp_path / "in.de"
    shutil.copy(DE, src)
    out = {"same": src, "dotted": tmp_path / "x" / ".." / "in.de",
           "symlink": tmp_path / "link.de", "hardlink": tmp_path / "hard.de"}[spelling]
    if spelling == "symlink":
        out.symlink_to(src)
    if spelling == "hardlink":
        os.link(src, out)
    (tmp_path / "x").mkdir()
    before = src.read_bytes()
    assert_one_line(cli("pair", src, EN, "--src-lang", "de", "--tgt-lang", "en", "-o", out),
                    "is the input")
    assert src.read_bytes() == before


@pytest.mark.slow  # the encoder runs: ~1 s after the module fixture
def test_pair_cleans_lines_as_prepare_does(tmp_path):
    """NUL bytes, controls, zero-width characters and decomposed accents are cleaned
    the way prepare cleans sentences before the pairs are written."""
    from miner.sentences import normalize_text

    dirty = [f"\x00{line}\x07\u200b" if i % 2 else line.replace("ü", "u\u0308") + "\x1b"
             for i, line in enumerate(DE.read_text(encoding="utf-8").splitlines())]
    src = write(tmp_path / "dirty.de", "\n".join(dirty) + "\n")
    out = tmp_path / "pairs.tsv.gz"
    result = cli("pair", src, EN, "--src-lang", "de", "--tgt-lang", "en", "-o", out,
                 "--threshold", 0, "--work", tmp_path / "work")
    assert result.exit_code == 0, result.stderr
    rows = [line.split("\t") for line in gzip.open(out, "rt", encoding="utf-8").read().splitlines()]
    clean = {normalize_text(line) for line in dirty}
    assert rows and all(r[1] in clean and r[1] == normalize_text(r[1]) for r in rows)
    assert not any(c in r[1] for r in rows for c in "\x00\x07\x1b\u200b")


# -- mine report with odd values in the record ------------------------------------------

@pytest.mark.parametrize("threshold,bounds", [
    (float("nan"), [0.5, 2.0]), (float("inf"), [0, float("inf")]), ("high", "wide"),
    (None, [-1, 2]), (1.2, [float("nan"), 2.0]),
])
def test_report_with_odd_values_never_raises(run_dir, threshold, bounds):
    m = json.loads((run_dir / "manifest.json").read_text())
    m["stages"]["bitext/de-en"]["finish"]["data"].update(threshold=threshold,
                                                         length_ratio_bounds=bounds)
    (run_dir / "manifest.json").write_text(json.dumps(m))
    result = cli("report", run_dir)
    assert result.exit_code == 0, (result.stderr, result.exc_info)
    assert "Traceback" not in result.stderr
