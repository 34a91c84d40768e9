"""The CPU fast path: bf16 GEMM shortlist + certified exact rescore (knn_torch_bf16)."""

import numpy as np
import pytest

pytest.importorskip("torch")

from miner.embed.encoders import l2_normalize as unit  # noqa: E402
from miner.knn.cpu_bf16 import cpu_has_bf16, exact_sims, knn_torch_bf16  # noqa: E402
from miner.knn.exact import knn_numpy, knn_search  # noqa: E402


def clustered(rng, n, d, centers, noise=0.2):
    return unit(centers[rng.integers(0, len(centers), n)]
                + noise * rng.standard_normal((n, d)).astype(np.float32))


def reference(q, y, k):
    """Exact search under the float64 dot product rounded to float32, ties -> lower id."""
    s = (q.astype(np.float64) @ y.astype(np.float64).T).astype(np.float32)
    ids = np.broadcast_to(np.arange(len(y)), s.shape)
    order = np.lexsort((ids, -s), axis=-1)[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    d = 64
    centers = unit(rng.standard_normal((100, d)))
    y = clustered(rng, 12000, d, centers).astype(np.float16)  # embedding shards are float16
    q = clustered(rng, 1500, d, centers).astype(np.float16)
    return q, y


@pytest.mark.slow  # ~3.5 s each
@pytest.mark.parametrize("bf16", [True, False])
def test_same_neighbours_and_bitwise_sims_as_exact_search(data, bf16):
    q, y = data
    sims, ids = knn_torch_bf16(q, y, 8, bf16=bf16)
    ref_s, ref_i = reference(q, y, 8)
    same = (ids == ref_i).all(1).mean()
    print(f"bf16={bf16}: identical neighbour ids on {100 * same:.2f}% of queries")
    assert same >= 0.999
    np.testing.assert_array_equal(ids, ref_i)
    assert np.array_equal(sims.view(np.uint32), ref_s.view(np.uint32))
    # and against the fp32 BLAS reference: same ids on >= 99.9%, sims to an ulp or two
    np_s, np_i = knn_numpy(q.astype(np.float32), y.astype(np.float32), 8)
    assert (np_i == ids).all(1).mean() >= 0.999
    np.testing.assert_allclose(sims, np_s, atol=1e-6)


def test_result_does_not_depend_on_blocking(data):
    q, y = data
    a = knn_torch_bf16(q, y, 4, block=16384, query_block=2048)
    b = knn_torch_bf16(q, y, 4, block=1000, query_block=333, shortlist=5)
    c = knn_torch_bf16(q[::-1], y, 4, block=4096, query_block=64)
    for x, z in zip(a, b):
        assert np.array_equal(x, z)
    assert np.array_equal(a[1], c[1][::-1]) and np.array_equal(a[0], c[0][::-1])


def test_ties_go_to_the_lower_id():
    rng = np.random.default_rng(1)
    y = unit(rng.standard_normal((300, 16)))
    y[[40, 7, 250, 100]] = y[100]  # four identical rows
    q = np.vstack([y[100:101], unit(rng.standard_normal((5, 16)))])
    sims, ids = knn_torch_bf16(q, y, 3)
    assert ids[0].tolist() == [7, 40, 100]
    assert sims[0, 0] == sims[0, 1] == sims[0, 2]


def test_dense_duplicates_force_the_exact_redo_and_stay_exact():
    rng = np.random.default_rng(2)
    base = unit(rng.standard_normal((1, 32)))
    # 200 near-copies within bf16 noise of each other: no shortlist can certify them
    y = unit(np.repeat(base, 200, 0) + 1e-3 * rng.standard_normal((200, 32)).astype(np.float32))
    y = np.vstack([y, unit(rng.standard_normal((3000, 32)))])
    q = unit(base + 1e-3 * rng.standard_normal((20, 32)).astype(np.float32))
    stats = {}
    sims, ids = knn_torch_bf16(q, y, 4, bf16=True, stats=stats)
    assert stats.get("redone", 0) > 0
    ref_s, ref_i = reference(q, y, 4)
    np.testing.assert_array_equal(ids, ref_i)
    assert np.array_equal(sims, ref_s)


def test_negative_scores_take_the_plain_topk_path():
    rng = np.random.default_rng(3)
    y = unit(np.abs(rng.standard_normal((4096, 32))))
    q = -unit(np.abs(rng.standard_normal((10, 32))))  # every score is negative
    sims, ids = knn_torch_bf16(q, y, 4, block=2048)
    ref_s, ref_i = reference(q, y, 4)
    np.testing.assert_array_equal(ids, ref_i)
    assert np.array_equal(sims, ref_s)


def test_k_larger_than_database():
    rng = np.random.default_rng(4)
    y, q = unit(rng.standard_normal((3, 8))), unit(rng.standard_normal((5, 8)))
    sims, ids = knn_torch_bf16(q, y, 10)
    assert sims.shape == ids.shape == (5, 3) and sims.dtype == np.float32 and ids.dtype == np.int64
    ref_s, ref_i = reference(q, y, 3)
    np.testing.assert_array_equal(ids, ref_i)


def test_exact_sims_depend_on_the_pair_only():
    rng = np.random.default_rng(5)
    q, y = unit(rng.standard_normal((50, 48))), unit(rng.standard_normal((70, 48)))
    rows = rng.integers(0, 50, (50, 6))
    cols = rng.integers(0, 70, (50, 6))
    a = exact_sims(q, y, rows, cols)
    b = exact_sims(q, y, rows[:, ::-1].copy(), cols[:, ::-1].copy())[:, ::-1]
    assert np.array_equal(a, b)
    assert exact_sims(q, y, rows[:1, :1], np.array([[-1]]))[0, 0] == -np.inf


def test_torch_backend_on_cpu_is_the_bf16_path(data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU dispatch only")
    q, y = data
    a = knn_search(q[:100], y, 4, backend="torch")
    b = knn_torch_bf16(q[:100], y, 4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert isinstance(cpu_has_bf16(), bool)


def test_threshold_path_after_the_first_block_is_exact(data, monkeypatch):
    """Blocks after the first keep only groups above the running shortlist's worst."""
    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 GEMM: the threshold path is bf16-only")
    import miner.knn.cpu_bf16 as mod

    calls = []
    real = mod._above_threshold
    monkeypatch.setattr(mod, "_above_threshold", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, y = data
    sims, ids = knn_torch_bf16(q, y, 8, block=1024)
    assert len(calls) >= 10
    ref_s, ref_i = reference(q, y, 8)
    np.testing.assert_array_equal(ids, ref_i)
    assert np.array_equal(sims.view(np.uint32), ref_s.view(np.uint32))


def test_float16_rescore_is_the_exact_dot_product_in_any_order():
    """float16 rows with |q||y| < 32: float32 products and float64 sums are exact, so
    the fast path equals a correctly rounded sum (math.fsum) and the float64 path."""
    import math

    rng = np.random.default_rng(6)
    for scale in (1.0, 5.0):  # unit vectors, and norms up to 5 (|q||y| = 25 < 32)
        q = (scale * unit(rng.standard_normal((40, 96)))).astype(np.float16)
        y = (scale * unit(rng.standard_normal((60, 96)))).astype(np.float16)
        y[7] = q[3]  # a duplicate: similarity |q|^2
        rows = rng.integers(0, 40, (40, 5))
        cols = rng.integers(0, 60, (40, 5))
        rows[3, 0], cols[3, 0], cols[0, 1] = 3, 7, -1
        fast = exact_sims(q, y, rows, cols, norm_product=scale * scale * 1.01)
        slow = exact_sims(q, y, rows, cols)
        assert np.array_equal(fast.view(np.uint32), slow.view(np.uint32))
        q64, y64 = q.astype(np.float64), y.astype(np.float64)
        for (r, c), got in zip(zip(rows.ravel(), cols.ravel()), fast.ravel()):
            want = -np.inf if c < 0 else np.float32(math.fsum(q64[r] * y64[c]))
            assert got == want
        rev = exact_sims(q, y, rows[::-1].copy(), cols[::-1].copy(), norm_product=30.0)[::-1]
        assert np.array_equal(fast, rev)


def test_prepared_database_and_pruned_rescore_give_the_same_result(data):
    from miner.knn.cpu_bf16 import PreparedDatabase

    q, y = data
    stats = {}
    a = knn_torch_bf16(q, y, 4, stats=stats)
    prepared = PreparedDatabase(y)
    b = knn_torch_bf16(q[:700], prepared, 4)
    c = knn_torch_bf16(q[700:], prepared, 4)
    assert np.array_equal(a[1], np.concatenate([b[1], c[1]]))
    assert np.array_equal(a[0].view(np.uint32), np.concatenate([b[0], c[0]]).view(np.uint32))
    # only candidates that can still reach the top k are rescored, never fewer than k
    assert len(q) * 4 <= stats["rescored"] < len(q) * (2 * 4 + 16)
    ref_s, ref_i = reference(q, y, 4)
    np.testing.assert_array_equal(a[1], ref_i)
    assert np.array_equal(a[0].view(np.uint32), ref_s.view(np.uint32))


@pytest.mark.parametrize("bf16", [True, False])
def test_both_directions_from_one_gemm_equal_two_searches(data, bf16):
    """knn_torch_bf16_both shortlists each tile along rows (fwd) and columns (bwd):
    both results are bitwise those of two separate searches, whatever the blocks."""
    from miner.knn.cpu_bf16 import PreparedDatabase, knn_torch_bf16_both

    q, y = data
    q, y = q[:1200], y[:5000]
    y[[10, 4000]] = y[2500]  # duplicates: ties on both sides
    fwd, bwd = knn_torch_bf16(q, y, 4, bf16=bf16), knn_torch_bf16(y, q, 4, bf16=bf16)
    px, py = PreparedDatabase(q, bf16), PreparedDatabase(y, bf16)
    for block, query_block in ((16384, 4096), (1024, 512), (2048, 400)):
        done = []
        f, b = knn_torch_bf16_both(px, py, 4, block=block, query_block=query_block,
                                   on_block=done.append)
        assert sum(done) == len(q)
        for got, want in ((f, fwd), (b, bwd)):
            assert np.array_equal(got[1], want[1])
            assert np.array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
