"""`mine run` end to end: examples, sharding invariance, resume after SIGKILL."""

import filecmp
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miner.knn.stage import read_knn

from conftest import EXAMPLES, REPO, shared_data

# every test runs `mine run` in subprocesses on real data: 7-14 s each
pytestmark = pytest.mark.slow

MINE = [sys.executable, "-m", "miner"]


def run_mine(*args, **kw):
    return subprocess.run([*MINE, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=900, **kw)


def bucc_inputs(directory: Path) -> list[Path]:
    """About 2,600 real sentences: the German side and part of the English side of
    BUCC de-en (300 translation pairs hidden among them), one sentence a line."""
    bucc = shared_data("bucc")
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for lang, limit in (("de", None), ("en", 1500)):
        lines = (bucc / f"de-en.training.{lang}").read_text(encoding="utf-8").splitlines()
        path = directory / f"bucc.{lang}.txt"
        path.write_text("\n".join(x.split("\t", 1)[1] for x in lines[:limit]) + "\n",
                        encoding="utf-8")
        out.append(path)
    return out


def neighbours(out: Path, pair: str, direction: str):
    """ids, neighbour ids and similarities of all parts of one direction."""
    return read_knn(out, *pair.split("-"), direction)[:3]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run with everything in one shard."""
    base = tmp_path_factory.mktemp("ref")
    inputs = bucc_inputs(base / "in")
    out = base / "out"
    p = run_mine("run", *inputs, "--pair", "de-en", "--out", out, "--shard-size", 1_000_000,
                 "--index", "flat")
    assert p.returncode == 0, p.stderr
    return inputs, out


def test_run_mines_the_examples(tmp_path):
    out = tmp_path / "out"
    p = run_mine("run", *sorted((EXAMPLES / "articles").glob("*.jsonl")), "--pair", "de-en",
                 "--pair", "fr-en", "--out", out)
    assert p.returncode == 0, p.stderr
    for pair in ("de-en", "fr-en"):
        d = out / "bitext" / pair
        assert (d / "bitext.tsv.gz").exists() and (d / "README.md").exists()
        src, tgt = pair.split("-")
        corpus_src = (EXAMPLES / f"corpus.{src}.txt").read_text(encoding="utf-8").splitlines()
        corpus_tgt = (EXAMPLES / f"corpus.{tgt}.txt").read_text(encoding="utf-8").splitlines()
        gold = {(corpus_src[int(a) - 1], corpus_tgt[int(b) - 1]) for a, b in
                (x.split("\t") for x in (EXAMPLES / f"gold.{pair}.tsv").read_text().splitlines())}
        got = set(zip((d / f"train.{src}").read_text(encoding="utf-8").splitlines(),
                      (d / f"train.{tgt}").read_text(encoding="utf-8").splitlines()))
        assert len(got & gold) >= 0.8 * len(gold), (pair, len(got & gold), len(gold))
    # a rerun skips every finished stage and rewrites identical bitext
    before = (out / "bitext" / "de-en" / "bitext.tsv.gz").read_bytes()
    p2 = run_mine("run", *sorted((EXAMPLES / "articles").glob("*.jsonl")), "--pair", "de-en",
                  "--pair", "fr-en", "--out", out)
    assert p2.returncode == 0, p2.stderr
    assert "prepare: up to date" in p2.stderr
    assert (out / "bitext" / "de-en" / "bitext.tsv.gz").read_bytes() == before


@pytest.mark.parametrize("shard_size", [997, 100])
def test_neighbours_and_bitext_do_not_depend_on_shard_size(reference, tmp_path, shard_size):
    inputs, ref = reference
    out = tmp_path / "out"
    p = run_mine("run", *inputs, "--pair", "de-en", "--out", out, "--shard-size", shard_size,
                 "--index", "flat")
    assert p.returncode == 0, p.stderr
    assert len(list((out / "sentences" / "de").glob("part-*.parquet"))) > 1
    for direction in ("fwd", "bwd"):
        for a, b in zip(neighbours(ref, "de-en", direction), neighbours(out, "de-en", direction)):
            assert a.tobytes() == b.tobytes()
    for name in ("bitext.tsv.gz", "train.de", "train.en", "bitext.parquet"):
        assert filecmp.cmp(ref / "bitext" / "de-en" / name, out / "bitext" / "de-en" / name,
                           shallow=False), name


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_when(proc: subprocess.Popen, pattern: str, out: Path, timeout: float = 600) -> set[int]:
    """SIGKILL ``proc`` as soon as ``pattern`` matches under ``out``; returns the
    processes it had started."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(out.glob(pattern)):
            children = _children(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return children
        if proc.poll() is not None:
            pytest.fail(f"run ended before {pattern} appeared: {proc.stderr.read()}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"{pattern} never appeared")


@pytest.mark.slow
@pytest.mark.parametrize("stage_glob", [".prepare/*/*.parquet",
                                        "embeddings/*/part-00001.parquet",
                                        "knn/de-en/fwd/part-00001.parquet",
                                        "scores/de-en/.shuffle/*",
                                        "bitext/.de-en.new/*"])
def test_sigkill_in_each_stage_then_rerun_gives_identical_bitext(reference, tmp_path, stage_glob):
    """kill -9 in each stage: no worker outlives the run, and the rerun leaves no
    temporary file and writes the uninterrupted run's bytes."""
    inputs, ref = reference
    out = tmp_path / "out"
    args = [*MINE, "run", *map(str, inputs), "--pair", "de-en", "--out", str(out),
            "--shard-size", "100", "--index", "flat"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    children = _kill_when(proc, stage_glob, out)
    deadline = time.time() + 5
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.05)
    assert not [c for c in children if _alive(c)], "workers outlived the killed run"
    assert not (out / "bitext" / "de-en").exists()
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    assert "taking over the lock" in p.stderr, p.stderr  # the killed run's, with a warning
    for name in ("bitext.tsv.gz", "train.de", "train.en"):  # (the reference has one shard)
        assert filecmp.cmp(ref / "bitext" / "de-en" / name, out / "bitext" / "de-en" / name,
                           shallow=False), name
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or
                 p.name in (".shuffle", ".partial", ".index") or p.name.endswith((".new", ".old", ".parts"))]
    assert not leftovers, leftovers
    assert not (out / ".lock").exists()


def test_run_from_the_example_config_file(tmp_path):
    import json

    out = tmp_path / "out"
    p = run_mine("run", "--config", EXAMPLES / "run.toml", "--out", out)
    assert p.returncode == 0, p.stderr
    run = json.loads((out / "manifest.json").read_text())["run"]["config"]
    assert run["shard_size"] == 50 and run["score"]["threshold"] == 1.25
    assert run["filters"]["one_to_one"] is True and run["pairs"] == ["de-en", "fr-en"]
    assert len(list((out / "sentences" / "de").glob("part-*.parquet"))) == 2
    scores = [float(line.split("\t")[0]) for line in
              gzip.open(out / "bitext" / "fr-en" / "bitext.tsv.gz", "rt", encoding="utf-8")]
    assert scores and min(scores) >= 1.25
