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


# -- the stage: one index file, searched in process or as executor tasks ----------------

from miner.executor import LocalExecutor  # noqa: E402


class PoolCluster(LocalExecutor):
    """A cluster stand-in: LocalExecutor's spawn process pool under a name that is not
    ``local``, so the stage takes its task path (pickled tasks, out of process)."""

    name = "pool"
    distributed = True


def _ivf_corpus(out, seed=0, d=16):
    from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard

    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((30, d)))
    meta = EmbeddingMeta("test-encoder", d)
    for lang, n, size in (("de", 1500, 600), ("en", 2500, 1000)):
        x = unit(centers[rng.integers(0, 30, n)] + 0.3 * rng.standard_normal((n, d)))
        ids = rng.integers(1, 2 ** 63, n, dtype=np.uint64)
        for i, s in enumerate(range(0, n, size)):
            write_embedding_shard(out / "embeddings" / lang / f"part-{i:05d}.parquet",
                                  ids[s:s + size], x[s:s + size].astype(np.float16), meta)


def _config(kind):
    from miner.config import Config

    cfg = Config()
    # nprobe 1 of 256 lists: some queries find fewer than k vectors (padded slots)
    cfg.update({"k": 4, "index": kind, "nprobe": 1, "max_memory": "1M"})
    return cfg


def _parts(out):
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted((out / "knn").rglob("*")) if p.is_file()}


@pytest.mark.slow  # IVF training and a spawned pool: 2-4 s each
@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_index_search_is_identical_in_process_and_as_tasks(tmp_path, monkeypatch, kind):
    import miner.knn.stage as stage
    from miner.knn.stage import read_knn, run_knn

    results = {}
    for name, executor in [("none", None), ("local1", LocalExecutor(1)),
                           ("local2", LocalExecutor(2)), ("tasks", PoolCluster(2))]:
        out = tmp_path / name
        _ivf_corpus(out)
        if name == "tasks":  # every shard is searched in the pool's processes, none here
            def not_here(*a, **kw):
                raise AssertionError("searched on the driver")

            monkeypatch.setattr(stage, "search_shard", not_here)
        counts = run_knn(_config(kind), out, "de", "en", executor)
        for d in ("fwd", "bwd"):
            assert counts[d]["index"] == kind and counts[d]["index_trained"] is True
            assert counts[d]["searched_shards"] == 3
            assert not (out / "knn" / "de-en" / d / ".index").exists()  # removed when done
        results[name] = _parts(out)
        assert len(results[name]) == 6
    assert results["tasks"] == results["none"] == results["local1"] == results["local2"]
    ids, nbr, sims, mean = read_knn(tmp_path / "tasks", "de", "en", "fwd")
    pad = np.isneginf(sims)
    assert pad.any() and (nbr[pad] == 0).all() and (nbr[~pad] != 0).all()
    full = ~pad.any(1)
    np.testing.assert_allclose(mean[full], sims[full].mean(1), rtol=1e-6)
    some = pad.any(1) & ~pad.all(1)
    np.testing.assert_allclose(mean[some], [s[np.isfinite(s)].mean() for s in sims[some]],
                               rtol=1e-6)


def test_an_interrupted_index_search_resumes_without_retraining(tmp_path, monkeypatch):
    import miner.knn.search as search  # search_shard looks write_knn_shard up there
    import miner.knn.stage as stage

    ref = tmp_path / "ref"
    _ivf_corpus(ref)
    stage.run_knn(_config("ivf"), ref, "de", "en")

    out = tmp_path / "run"
    _ivf_corpus(out)
    fwd, bwd = (out / "knn" / "de-en" / d for d in ("fwd", "bwd"))
    stale = bwd / ".index" / "0123456789abcdef.faiss"  # another database's index
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    real_write, calls = stage.write_knn_shard, []

    def crash_on_second(*a, **kw):
        calls.append(a[0])
        if len(calls) == 2:
            raise RuntimeError("driver killed")
        real_write(*a, **kw)

    monkeypatch.setattr(search, "write_knn_shard", crash_on_second)
    with pytest.raises(RuntimeError):
        stage.run_knn(_config("ivf"), out, "de", "en")
    monkeypatch.setattr(search, "write_knn_shard", real_write)
    kept = list((fwd / ".index").glob("*.faiss"))
    assert len(kept) == 1 and len(list(fwd.glob("part-*.parquet"))) == 1

    real_build, trained = stage._build_faiss_index, []

    def counting_build(*a, **kw):
        trained.append(a[1])
        return real_build(*a, **kw)

    monkeypatch.setattr(stage, "_build_faiss_index", counting_build)
    counts = stage.run_knn(_config("ivf"), out, "de", "en", PoolCluster(2))
    assert counts["fwd"]["index_trained"] is False and counts["fwd"]["searched_shards"] == 2
    assert counts["bwd"]["index_trained"] is True and counts["bwd"]["searched_shards"] == 3
    assert len(trained) == 1  # bwd only: fwd's index was read back from its file
    assert not stale.exists() and not (fwd / ".index").exists() and not (bwd / ".index").exists()
    assert _parts(out) == _parts(ref)

    again = stage.run_knn(_config("ivf"), out, "de", "en", PoolCluster(2))
    assert [again[d]["searched_shards"] for d in ("fwd", "bwd")] == [0, 0]
    assert len(trained) == 1 and _parts(out) == _parts(ref)
