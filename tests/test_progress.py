"""Progress of long stages: a bar on a terminal, log lines elsewhere (miner.progress)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miner.progress import Progress, human_count, human_seconds

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_progress_lines_count_rate_and_eta(caplog, monkeypatch):
    monkeypatch.setattr("miner.progress.is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="miner.progress"):
        with Progress("knn de-en fwd", total=4_000_000, unit="query", every_s=0.0) as bar:
            bar.update(1_200_000)
            bar.update(800_000)
    lines = [r.getMessage() for r in caplog.records if r.name == "miner.progress"]
    assert len(lines) == 2
    assert lines[0].startswith("knn de-en fwd: 1.2M/4.0M query (30%), ")
    assert "query/s, ETA " in lines[0]
    assert lines[1].startswith("knn de-en fwd: 2.0M/4.0M query (50%), ")


def test_progress_is_quiet_when_disabled_or_before_its_interval(caplog, monkeypatch):
    monkeypatch.setattr("miner.progress.is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="miner.progress"):
        with Progress("quiet", total=10, enabled=False, every_s=0.0) as bar:
            bar.update(5)
        with Progress("slow", total=10, every_s=3600.0) as bar:
            bar.update(5)
    assert bar.n == 5
    assert not [r for r in caplog.records if r.name == "miner.progress"]


def test_human_numbers():
    assert [human_count(v) for v in (7, 12_345, 4_000_000, 2.5e9)] == ["7", "12.3k", "4.0M", "2.5G"]
    assert [human_seconds(v) for v in (4.2, 75, 3725)] == ["4s", "1m15s", "1h02m"]


@pytest.mark.slow
def test_every_long_stage_logs_progress_off_a_terminal(tmp_path):
    """`mine run` with stderr not a terminal (a pipe): embed, knn, score and bitext each
    log labelled progress lines without -v (interval 0 here instead of 30 s)."""
    env = dict(os.environ, MINER_PROGRESS_EVERY_S="0", HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "-m", "miner", "run",
                        *map(str, sorted((EXAMPLES / "articles").glob("*.jsonl"))),
                        "--pair", "de-en", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stderr.splitlines() if " miner.progress INFO " in line]
    for label in ("embed de: ", "knn de-en ", "score de-en: neighbour shards scored: ",
                  "bitext de-en: candidates filtered"):
        assert any(label in line for line in lines), (label, lines[:20])
    assert any(" query (" in line and "knn de-en" in line for line in lines)
