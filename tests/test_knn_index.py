"""Approximate faiss indexes: recall@k against exact search on 200k clustered vectors."""

import numpy as np
import pytest

from miner.embed.encoders import l2_normalize as unit  # noqa: E402
from miner.errors import MinerError
from miner.knn.exact import knn_faiss
from miner.knn.index import (build_index, choose_index, factory_string, index_search, n_lists,
                             recall_at_k, train_sample)

D, N, K = 64, 200_000, 4


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    centers = unit(rng.standard_normal((2000, D)))

    def draw(n):
        return unit(centers[rng.integers(0, 2000, n)]
                    + 0.06 * rng.standard_normal((n, D)).astype(np.float32))

    y, q = draw(N), draw(1000)
    return q, y, knn_faiss(q, y, K)[1]


@pytest.mark.parametrize("kind,floor", [("ivf", 0.95), ("ivfpq", 0.3)])
def test_recall_at_default_nprobe(clustered, kind, floor):
    from miner.config import KnnConfig

    q, y, exact = clustered
    # a smaller training sample than the stage's (64 per list) keeps the test fast
    train = y[train_sample(N, 20_000, seed=0)]
    index = build_index(kind, N, D, train, KnnConfig().nprobe)
    index.add(y)
    sims, ids = index_search(index, q, K)
    r = recall_at_k(ids, exact)
    print(f"{factory_string(kind, N, D)} nprobe={KnnConfig().nprobe}: recall@{K} = {r:.4f}")
    assert r >= floor
    assert sims.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (len(q), K)


def test_auto_chooses_by_size():
    assert choose_index("auto", 999_999) == "flat"
    assert choose_index("auto", 2_000_000) == "ivf"
    assert choose_index("auto", 50_000_000) == "ivfpq"
    assert choose_index("ivf", 10) == "ivf"
    with pytest.raises(MinerError):
        choose_index("hnsw", 10)
    assert factory_string("ivfpq", 50_000_000, 512) == "OPQ128,IVF32768,PQ128x4fsr"
    assert n_lists(100) == 32 and n_lists(10 ** 10) == 65536


def test_training_sample_is_deterministic():
    a, b = train_sample(10_000, 500, seed=3), train_sample(10_000, 500, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 500 and (np.diff(a) > 0).all()
    assert len(train_sample(10, 500)) == 10
