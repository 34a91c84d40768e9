"""The benchmark scripts run and check what they claim, on small sizes.

Timings are never asserted (they are printed ratios, measured side by side); these
runs prove the scripts work and that their correctness checks hold.
"""

import subprocess
import sys

import pytest

from conftest import REPO, shared_data


def bench(*args, timeout=300):
    p = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_score_benchmark_matches_the_laser_loop():
    out = bench("benchmarks/score.py", "--n", 3000, "--repeats", 1)
    assert "same pairs and scores: True" in out and "like for like" in out


@pytest.mark.slow  # a benchmark script in a subprocess: ~7 s
def test_encode_benchmark_runs_on_bucc():
    shared_data("bucc")
    out = bench("benchmarks/encode.py", "--limit", 150, "--repeats", 1)
    assert "ratio (miner / raw)" in out
    cos = float(out.split("min cosine between the two:")[1].split()[0])
    assert cos > 0.9999  # the same model: only float rounding differs


@pytest.mark.slow  # a benchmark script in a subprocess: ~2.5 s
def test_knn_benchmark_small():
    out = bench("benchmarks/knn.py", "--queries", 500, "--database", 5000, "--dim", 64,
                "--rss-rows", 0, "--stage-rows", 2000)
    assert "ratio miner / faiss" in out and "100.00% of queries" in out
    assert "stage / kernel (throughput run)" in out


@pytest.mark.slow  # two small minings in a subprocess: ~15 s
def test_e2e_benchmark_small():
    out = bench("benchmarks/e2e.py", "--sizes", 3000, "--dim", 64)
    assert "ratio miner / LASER-style" in out
    assert float(out.split("pairs in common:")[1].split("%")[0]) > 99


@pytest.mark.slow  # IVF + exact mining and a recall check in subprocesses: ~40 s
def test_scale_benchmark_small():
    out = bench("benchmarks/scale.py", "--rows", 3000, "--sample", 500, "--flat-rows", 1000,
                "--shard-size", 1000, "--dim", 64, "--clusters", 16, "--max-memory", "1G")
    assert float(out.split("recall@4 of IVF vs exact on 500 queries:")[1].split()[0]) >= 0.95
    assert float(out.split("true translations mined:")[1].split()[0]) > 0.9
    assert "extrapolated to 3,000 x 3,000" in out
