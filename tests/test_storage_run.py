"""`mine run` with inputs and outputs in an S3 bucket (a real S3 protocol server on
127.0.0.1: moto), compared with the same run on local disk."""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO
from s3server import s3_server

# the `runs` fixture: `mine run` four times against an S3 server, ~35 s
pytestmark = pytest.mark.slow

MINE = [sys.executable, "-m", "miner"]
BUCKET = "s3://miner-test"


def run_mine(*args, env=None):
    return subprocess.run([*MINE, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=900, env={**os.environ, **(env or {})})


def download(url: str, target: Path, env: dict) -> None:
    """Copy a bucket prefix to a local directory (pyarrow, in a subprocess with ``env``)."""
    code = ("import sys, pyarrow.fs as f; fs, p = f.FileSystem.from_uri(sys.argv[1]); "
            "f.copy_files(p, sys.argv[2], source_filesystem=fs, "
            "destination_filesystem=f.LocalFileSystem())")
    subprocess.run([sys.executable, "-c", code, url, str(target)], check=True, env={**os.environ, **env})


def upload(path: Path, url: str, env: dict) -> None:
    code = ("import sys, pyarrow.fs as f; fs, p = f.FileSystem.from_uri(sys.argv[2]); "
            "f.copy_files(sys.argv[1], p, source_filesystem=f.LocalFileSystem(), "
            "destination_filesystem=fs)")
    subprocess.run([sys.executable, "-c", code, str(path), url], check=True, env={**os.environ, **env})


def strip_seconds(obj):
    if isinstance(obj, dict):
        return {k: strip_seconds(v) for k, v in obj.items() if k != "seconds"}
    return obj


def same_files(a: Path, b: Path, names) -> None:
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("s3run")
    examples = sorted((EXAMPLES / "articles").glob("*.jsonl"))
    args = ["--pair", "de-en", "--shard-size", 20]
    local = run_mine("run", *examples, *args, "--out", base / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    with s3_server() as env:
        for p in examples:
            upload(p, f"{BUCKET}/in/{p.name}", env)
        first = run_mine("run", *examples, *args, "--out", f"{BUCKET}/run", env=env)
        download(f"{BUCKET}/run/manifest.json", base / "first.manifest.json", env)
        rerun = run_mine("run", *examples, *args, "--out", f"{BUCKET}/run", env=env)
        remote_in = run_mine("run", *(f"{BUCKET}/in/{p.name}" for p in examples), *args,
                             "--out", f"{BUCKET}/run-in", env=env)
        for name, p in (("first", first), ("rerun", rerun), ("remote inputs", remote_in)):
            assert p.returncode == 0, (name, p.stderr[-3000:])
        download(f"{BUCKET}/run", base / "s3", env)
        download(f"{BUCKET}/run-in", base / "s3-in", env)
    return base, first, rerun


def test_run_into_a_bucket_writes_the_local_bitext(runs):
    base, first, _ = runs
    bitext = Path("bitext") / "de-en"
    names = ["bitext.tsv.gz", "train.de", "train.en", "bitext.parquet", "README.md"]
    same_files(base / "local" / bitext, base / "s3" / bitext, names)
    local = json.loads((base / "local" / "manifest.json").read_text())["stages"]
    remote = json.loads((base / "first.manifest.json").read_text())["stages"]
    for stage in ("prepare", "embed/de", "embed/en", "knn/de-en", "score/de-en", "bitext/de-en"):
        assert strip_seconds(remote[stage]["counts"]) == strip_seconds(local[stage]["counts"]), stage
    assert (base / "s3" / "report.html").stat().st_size > 1000
    assert "s3://miner-test/run/bitext/de-en/" in first.stdout


def test_a_rerun_on_the_bucket_redoes_nothing(runs):
    _, _, rerun = runs
    assert "prepare: up to date, skipped" in rerun.stderr
    for lang in ("de", "en"):
        assert f"embed/{lang}: up to date, skipped" in rerun.stderr
    assert "score/de-en: up to date, skipped" in rerun.stderr


def test_inputs_read_from_the_bucket_mine_the_same_pairs(runs):
    base, _, _ = runs
    bitext = Path("bitext") / "de-en"
    # the texts and scores are the same; only the provenance (source URLs) differs
    same_files(base / "local" / bitext, base / "s3-in" / bitext,
               ["bitext.tsv.gz", "train.de", "train.en"])
