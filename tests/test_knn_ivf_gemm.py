"""IVF-Flat search as bf16 GEMMs list by list (``miner.knn.ivf_gemm``) against faiss and
exact search: the same neighbours where they are well separated, recall at least
faiss's, similarities that are exact dot products, results that do not depend on the
blocking, padding where the probed lists are short. Clustered float16 unit vectors,
as embeddings are stored."""

import numpy as np
import pytest

from miner.embed.encoders import l2_normalize as unit
from miner.knn import ivf_gemm
from miner.knn.exact import knn_faiss
from miner.knn.index import build_index, index_searcher, recall_at_k

D, N, K, LISTS = 64, 30_000, 4, 512


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(3)
    centers = unit(rng.standard_normal((300, D)).astype(np.float32))

    def draw(n):
        x = centers[rng.integers(0, len(centers), n)] + 0.08 * rng.standard_normal((n, D))
        return unit(x.astype(np.float32)).astype(np.float16)  # stored as float16

    y, q = draw(N), draw(3000)
    index = build_index("ivf", N, D, y[:20_000].astype(np.float32), nprobe=8, use_gpu=False)
    assert index.nlist == LISTS  # 4 sqrt(30k), rounded to a power of two
    index.add(y.astype(np.float32))
    return q, y, index


def faiss_search(index, q, nprobe):
    index.nprobe = nprobe
    sims, ids = index.search(q.astype(np.float32), K)
    return sims, ids


def test_neighbours_match_exact_search_when_every_list_is_probed(corpus):
    q, y, index = corpus
    lists = ivf_gemm.IvfLists(index, nprobe=LISTS)
    sims, ids = lists.search(q, K)
    exact_sims, exact_ids = knn_faiss(q.astype(np.float32), y.astype(np.float32), K)
    assert recall_at_k(ids, exact_ids) >= 0.999
    # similarities: the dot products of the float16 rows, computed exactly, as float32
    want = np.einsum("ij,ikj->ik", q.astype(np.float64), y[ids].astype(np.float64))
    assert np.array_equal(sims, want.astype(np.float32))
    assert (np.diff(sims, axis=1) <= 0).all()


@pytest.mark.parametrize("nprobe", [1, 8])
def test_recall_is_at_least_faiss_ivf_at_the_same_nprobe(corpus, nprobe):
    q, y, index = corpus
    exact = knn_faiss(q.astype(np.float32), y.astype(np.float32), K)[1]
    ours = ivf_gemm.IvfLists(index, nprobe=nprobe).search(q, K)[1]
    theirs = faiss_search(index, q, nprobe)[1]
    r_ours, r_faiss = recall_at_k(ours, exact), recall_at_k(theirs, exact)
    print(f"nprobe={nprobe}: recall@{K} GEMM {r_ours:.4f}, faiss {r_faiss:.4f}")
    assert r_ours >= r_faiss - 0.005
    assert np.mean(ours == theirs) > 0.97  # mostly the very same neighbours


def test_results_do_not_depend_on_the_blocking(corpus, monkeypatch):
    q, _, index = corpus
    lists = ivf_gemm.IvfLists(index, nprobe=8)
    sims, ids = lists.search(q, K)
    monkeypatch.setattr(ivf_gemm, "SUB_BLOCK", 700)  # other blocks, other GEMM neighbours
    order = np.random.default_rng(0).permutation(len(q))
    sims2, ids2 = lists.search(q[order], K)
    assert np.array_equal(ids2, ids[order]) and np.array_equal(sims2, sims[order])
    one = [lists.search(q[i:i + 1], K) for i in range(0, 50)]  # one query at a time
    assert np.array_equal(np.concatenate([o[1] for o in one]), ids[:50])


def test_short_probed_lists_give_padded_slots():
    rng = np.random.default_rng(1)
    y = unit(rng.standard_normal((64, 16)).astype(np.float32)).astype(np.float16)
    index = build_index("ivf", 64, 16, y.astype(np.float32), nprobe=1, use_gpu=False)
    index.add(y.astype(np.float32))
    sizes = np.array([index.invlists.list_size(i) for i in range(index.nlist)])
    sims, ids = index_searcher(index, 8)(y)
    short = sizes[np.array([index.quantizer.search(y[i:i + 1].astype(np.float32), 1)[1][0, 0]
                            for i in range(len(y))])] < 8
    assert short.any()
    assert ((ids == -1) == np.isneginf(sims)).all()
    assert (ids[short] == -1).any(axis=1).all() and (ids[~short] >= 0).all()
    assert (ids[:, 0] == np.arange(len(y))).mean() > 0.9  # each vector finds itself
