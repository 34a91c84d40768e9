"""The fused Triton kNN kernel, run on the CPU by the Triton interpreter.

``TRITON_INTERPRET=1`` must be set before triton is first imported: triton's own
``tl.max``/``tl.sum``/``tl.zeros`` are jitted at import, in the mode of that moment.
So this module sets it before importing triton. When another test module imported
triton first (compiled mode), the kernel tests here skip in-process and
``test_kernel_cases_in_a_fresh_interpreter`` reruns this file in a subprocess.
Sizes are small: the interpreter runs every tile op in numpy. Tiles of 16 make m, n,
d and the splits cross tile edges.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

if "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("torch")
triton = pytest.importorskip("triton")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from miner.errors import MinerError  # noqa: E402
from miner.knn.exact import auto_backend, knn_faiss, knn_numpy, knn_search  # noqa: E402

IN_PROCESS = isinstance(triton.language.standard.max, InterpretedFunction)
interpreted = pytest.mark.skipif(
    not IN_PROCESS, reason="triton was imported in compiled mode; see the subprocess test")

TOL = {"fp16": 1e-3, "fp32": 1e-5}
KS = [1, 4, 16, 32]


@pytest.fixture(autouse=True, scope="module")
def interpreter():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


def test_kernel_cases_in_a_fresh_interpreter():
    if IN_PROCESS:
        pytest.skip("the kernel cases run in this process")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def knn_triton(*args, **kwargs):
    from miner.knn.triton_kernel import knn_triton as fn

    return fn(*args, **kwargs)


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rounded(x, dtype):
    """What the kernel sees: inputs cast to fp16 (or kept fp32)."""
    return x.astype(np.float16).astype(np.float32) if dtype == "fp16" else x


def assert_same_topk(q, y, sims, ids, ref_sims, ref_ids, dtype):
    """Same ids except where the swapped neighbours tie exactly; sims within TOL."""
    assert sims.dtype == np.float32 and ids.dtype == np.int64
    assert sims.shape == ref_sims.shape and ids.shape == ref_ids.shape
    np.testing.assert_allclose(sims, ref_sims, atol=TOL[dtype], rtol=0)
    diff = ids != ref_ids
    if diff.any():  # a different id must be exactly as good as the reference's one
        rows = np.nonzero(diff)[0]
        exact = np.einsum("rd,rd->r", q[rows].astype(np.float64), y[ids[diff]].astype(np.float64))
        np.testing.assert_allclose(exact, ref_sims[diff], atol=1e-6, rtol=0)
    # and each row is sorted: sim descending, then id ascending
    assert np.all((sims[:, :-1] > sims[:, 1:]) | ((sims[:, :-1] == sims[:, 1:]) & (ids[:, :-1] < ids[:, 1:])))


def check(q, y, k, dtype, **kwargs):
    sims, ids, mean = knn_triton(q, y, k, dtype=dtype, **kwargs)
    qr, yr = rounded(q, dtype), rounded(y, dtype)
    ref_sims, ref_ids = knn_numpy(qr, yr, k)
    assert_same_topk(qr, yr, sims, ids, ref_sims, ref_ids, dtype)
    np.testing.assert_allclose(mean, ref_sims.mean(axis=1), atol=TOL[dtype], rtol=0)
    return sims, ids


@interpreted
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("k", KS)
def test_random_inputs_match_numpy_and_faiss(dtype, k):
    rng = np.random.default_rng(k)
    q, y = unit(rng, 19, 40), unit(rng, 75, 40)  # n, m, d all off the 16-tiles
    sims, ids = check(q, y, k, dtype)
    f_sims, f_ids = knn_faiss(rounded(q, dtype), rounded(y, dtype), k, use_gpu=False)
    assert_same_topk(rounded(q, dtype), rounded(y, dtype), sims, ids, f_sims, f_ids, dtype)


@interpreted
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("k", KS)
def test_duplicates_and_ties_go_to_the_lower_id(dtype, k):
    rng = np.random.default_rng(100 + k)
    base = unit(rng, 6, 32)
    y = base[rng.integers(0, 6, size=50)]  # every sim is tied with many others
    q = np.vstack([y[:3], unit(rng, 2, 32)])  # queries equal to database rows too
    sims, ids = check(q, y, k, dtype)
    # among equal vectors the kernel lists ids in ascending order
    for row_s, row_i in zip(sims, ids):
        for value in np.unique(row_s):
            group = row_i[row_s == value]
            assert np.all(np.diff(group) > 0)


@interpreted
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_all_database_rows_identical(dtype):
    rng = np.random.default_rng(7)
    y = np.repeat(unit(rng, 1, 16), 40, axis=0)
    q = unit(rng, 3, 16)
    _, ids = check(q, y, 16, dtype)
    assert (ids == np.arange(16)).all()


@interpreted
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("k", [4, 32])
def test_k_larger_than_database(dtype, k):
    rng = np.random.default_rng(3)
    q, y = unit(rng, 4, 24), unit(rng, 3, 24)
    sims, ids = check(q, y, k, dtype)
    assert sims.shape == (4, 3)
    assert sorted(ids[0]) == [0, 1, 2]


@interpreted
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("k", KS)
def test_single_query(dtype, k):
    rng = np.random.default_rng(11)
    check(unit(rng, 1, 48), unit(rng, 37, 48), k, dtype)


@interpreted
@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
def test_database_splits_and_streamed_chunks_give_the_same_answer(dtype):
    rng = np.random.default_rng(5)
    q, y = unit(rng, 10, 32), unit(rng, 90, 32)
    y[60:70] = y[3]  # ties that straddle chunk and split boundaries
    whole = knn_triton(q, y, 8, dtype=dtype, splits=1)
    split = knn_triton(q, y, 8, dtype=dtype, splits=4)
    streamed = knn_triton(q, y, 8, dtype=dtype, splits=2, block_rows=23)
    for other in (split, streamed):
        for a, b in zip(whole, other):
            np.testing.assert_array_equal(a, b)
    check(q, y, 8, dtype, splits=3, block_rows=40)


@interpreted
def test_larger_tiles_and_torch_inputs():
    import torch

    rng = np.random.default_rng(9)
    q, y = unit(rng, 40, 64), unit(rng, 70, 64)
    tiles = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_D": 32}
    sims, ids, _ = knn_triton(torch.from_numpy(q), torch.from_numpy(y), 4, dtype="fp32", tiles=tiles)
    ref_sims, ref_ids = knn_numpy(q, y, 4)
    assert_same_topk(q, y, sims, ids, ref_sims, ref_ids, "fp32")


@interpreted
def test_knn_search_triton_backend_and_errors():
    rng = np.random.default_rng(2)
    q, y = unit(rng, 5, 16), unit(rng, 20, 16)
    sims, ids = knn_search(q, y, 4, backend="triton")  # fp16 by default
    ref_sims, ref_ids = knn_numpy(rounded(q, "fp16"), rounded(y, "fp16"), 4)
    assert_same_topk(rounded(q, "fp16"), rounded(y, "fp16"), sims, ids, ref_sims, ref_ids, "fp16")
    with pytest.raises(MinerError, match="unknown kNN backend"):
        knn_search(q, y, 4, backend="gpu-magic")
    with pytest.raises(MinerError, match="fp16 or fp32"):
        knn_triton(q, y, 4, dtype="bf16")
    with pytest.raises(MinerError, match="do not match"):
        knn_triton(q, y[:, :8], 4)


def test_torch_backend_matches_numpy_with_ties():
    rng = np.random.default_rng(4)
    y = unit(rng, 200, 16)
    y[100:140] = y[7]
    q = np.vstack([y[7:8], unit(rng, 6, 16)])
    for k in KS:
        sims, ids = knn_search(q, y, k, backend="torch")
        ref_sims, ref_ids = knn_numpy(q, y, k)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(sims, ref_sims, atol=1e-5)


def test_auto_backend_is_torch_bf16_without_cuda():
    import torch

    if not torch.cuda.is_available():  # CPU: knn_torch_bf16 (see miner/knn/cpu_bf16.py)
        assert auto_backend() == "torch"


@pytest.mark.slow  # a benchmark script in a subprocess: ~2 s
def test_benchmark_script_runs_on_the_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("on CUDA the benchmark runs full sizes")
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "knn_gpu.py")
    run = subprocess.run([sys.executable, script, "--n", "16", "--m", "40", "--d", "32", "--k", "4"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "|---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["triton", "faiss", "torch"]
    assert all(r.split("|")[7].strip() == "1.0000" for r in rows[2:])


def test_autotune_configs_fit_shared_memory_and_fp32_halves_block_d():
    from miner.knn import triton_kernel as tk

    def smem(bm, bn, bd, stages, itemsize=2):
        return (bm + bn) * bd * itemsize * stages

    assert all(smem(bm, bn, bd, st) <= 227 * 1024 for bm, bn, bd, _, st in tk.HOPPER_CONFIGS)
    assert all(smem(bm, bn, bd, st) <= 99 * 1024 for bm, bn, bd, _, st in tk.AMPERE_CONFIGS)
    configs = [triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_D": 64}, num_warps=8, num_stages=4)]
    assert tk._prune(configs, {}, IEEE=False) is configs
    (c,) = tk._prune(configs, {}, IEEE=True)
    assert c.kwargs["BLOCK_D"] == 32 and c.num_warps == 8 and c.num_stages == 4


def test_knn_torch_twin_is_exact_with_ties_on_the_cpu():
    from miner.knn.torch_knn import knn_torch

    rng = np.random.default_rng(8)
    y = unit(rng, 150, 16)
    y[90:130] = y[7]  # ties across the k boundary and across database blocks
    q = np.vstack([y[7:8], unit(rng, 5, 16)])
    for k in KS:
        sims, ids = knn_torch(q, y, k, device="cpu", db_block=32)
        ref_sims, ref_ids = knn_numpy(q, y, k)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(sims, ref_sims, atol=1e-5)


@pytest.mark.slow  # compiles the kernel for two GPUs: ~3 s
def test_kernel_compiles_for_hopper_and_ampere_without_a_gpu():
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("triton's bundled ptxas is not installed")
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "knn_gpu_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, script, "--arch", "90", "80", "--first", "1", "--k", "16"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = [r.split("|") for r in run.stdout.splitlines() if r.startswith("| sm_")]
    assert [(r[1].strip(), r[6].strip(), r[7].strip()) for r in rows] == [
        ("sm_90", "wgmma", "True"), ("sm_80", "mma.sync", "True")]
