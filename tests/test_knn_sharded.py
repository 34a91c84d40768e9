"""Sharded exact kNN through the real stage: shard-size invariance, resume, CLI."""

import os

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from miner.embed.encoders import l2_normalize as unit  # noqa: E402
from miner.cli import main  # noqa: E402
from miner.config import Config  # noqa: E402
from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard  # noqa: E402
from miner.knn.sharded import knn_partitions, regroup  # noqa: E402
from miner.knn.stage import knn_shards, read_knn, run_knn  # noqa: E402

D = 32


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    centers = unit(rng.standard_normal((40, D)))

    def side(n):
        x = unit(centers[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, D)))
        ids = rng.integers(1, 2 ** 63, n, dtype=np.uint64) * np.uint64(2)
        return ids, x.astype(np.float16)

    src, tgt = side(1500), side(2100)
    tgt[1][[5, 900, 2000]] = tgt[1][1500]  # duplicate targets: ties across shards
    return {"de": src, "en": tgt}


def write_shards(out, corpus, shard_size):
    meta = EmbeddingMeta("test-encoder", D)
    for lang, (ids, emb) in corpus.items():
        for i, s in enumerate(range(0, len(ids), shard_size)):
            write_embedding_shard(out / "embeddings" / lang / f"part-{i:05d}.parquet",
                                  ids[s:s + shard_size], emb[s:s + shard_size], meta)


def config(**knn):
    cfg = Config()
    cfg.update({"k": 4, "index": "flat", "knn_backend": "torch", **knn})
    return cfg


def test_neighbours_are_identical_whatever_the_shard_size(tmp_path, corpus):
    results = {}
    for size, memory in [(1_000_000, "8G"), (997, "8G"), (100, "8G"), (100, "1M")]:
        out = tmp_path / f"s{size}-{memory}"
        write_shards(out, corpus, size)
        run_knn(config(max_memory=memory), out, "de", "en")  # "1M": db in 1024-row partitions
        results[(size, memory)] = {d: read_knn(out, "de", "en", d) for d in ("fwd", "bwd")}
        assert len(knn_shards(out, "de", "en", "fwd")) == -(-1500 // size)
    first = results[(1_000_000, "8G")]
    for key, res in results.items():
        for d in ("fwd", "bwd"):
            for a, b in zip(first[d], res[d]):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert a.tobytes() == b.tobytes(), (key, d)  # bitwise, sims included
    ids, nbr, sims, mean = first["fwd"]
    assert nbr.shape == sims.shape == (1500, 4) and nbr.dtype == np.uint64
    assert np.array_equal(ids, corpus["de"][0])
    # exact: the neighbours are those of a float64 brute-force search, ties -> lower row
    q, y = corpus["de"][1].astype(np.float64), corpus["en"][1].astype(np.float64)
    s = (q @ y.T).astype(np.float32)
    order = np.lexsort((np.broadcast_to(np.arange(len(y)), s.shape), -s), axis=-1)[:, :4]
    np.testing.assert_array_equal(nbr, corpus["en"][0][order])
    assert np.array_equal(sims, np.take_along_axis(s, order, 1))
    np.testing.assert_allclose(mean, sims.mean(1), rtol=1e-6)
    _, bnbr, _, _ = first["bwd"]
    assert bnbr.shape == (2100, 4) and np.isin(bnbr, corpus["de"][0]).all()


def test_rerun_skips_finished_parts_and_redoes_stale_ones(tmp_path, corpus):
    write_shards(tmp_path, corpus, 500)
    c1 = run_knn(config(), tmp_path, "de", "en")
    assert c1["fwd"]["searched_shards"] == 3 and c1["bwd"]["searched_shards"] == 5
    part = knn_shards(tmp_path, "de", "en", "fwd")[0]
    mtime = os.stat(part).st_mtime_ns
    c2 = run_knn(config(max_memory="2G"), tmp_path, "de", "en")  # memory does not change results
    assert c2["fwd"]["skipped_shards"] == 3 and c2["bwd"]["skipped_shards"] == 5
    assert os.stat(part).st_mtime_ns == mtime
    c3 = run_knn(config(k=3), tmp_path, "de", "en")  # another k: every part is stale
    assert c3["fwd"]["searched_shards"] == 3
    assert read_knn(tmp_path, "de", "en", "fwd")[1].shape == (1500, 3)
    # a re-sharded input: the old parts go, the new ones are searched
    for p in (tmp_path / "embeddings").rglob("*.parquet"):
        p.unlink()
    write_shards(tmp_path, corpus, 1000)
    c4 = run_knn(config(k=3), tmp_path, "de", "en")
    assert c4["fwd"]["searched_shards"] == 2
    assert len(knn_shards(tmp_path, "de", "en", "fwd")) == 2
    from miner.manifest import read_manifest

    rec = read_manifest(tmp_path)["stages"]["knn/de-en"]
    assert rec["finished"] and rec["counts"]["fwd"]["queries"] == 1500 and "seconds" in rec


def test_partitions_merge_exactly():
    rng = np.random.default_rng(1)
    y = unit(rng.standard_normal((500, 16)))
    y[[3, 400]] = y[250]
    q = np.vstack([y[250:251], unit(rng.standard_normal((20, 16)))])
    whole = knn_partitions(q, [y], 5, backend="torch")
    for rows in (1, 7, 249, 250, 499):
        parts = list(regroup(iter([y[:100], y[100:]]), rows))
        assert sum(map(len, parts)) == 500
        split = knn_partitions(q, parts, 5, backend="torch")
        assert np.array_equal(whole[0], split[0]) and np.array_equal(whole[1], split[1])
    assert whole[1][0, :3].tolist() == [3, 250, 400]


def test_mine_knn_command(tmp_path, corpus):
    write_shards(tmp_path, corpus, 1000)
    r = CliRunner().invoke(main, ["knn", str(tmp_path), "--pair", "de-en", "-k", "2",
                                  "--knn-backend", "torch", "--max-memory", "1G"])
    assert r.exit_code == 0, r.output
    assert "fwd: 1500 queries x 2100" in r.output
    assert read_knn(tmp_path, "de", "en", "bwd")[1].shape == (2100, 2)
    r = CliRunner().invoke(main, ["knn", str(tmp_path), "--pair", "de-fr"])
    assert r.exit_code == 2 and "no embedding shards" in r.output


def test_each_shard_is_decoded_once_for_both_directions(tmp_path, corpus, monkeypatch):
    """With both sides within the memory budget, the query shards of fwd are the
    database of bwd: every shard is decoded once per run (and at most once per
    direction when they do not fit), with the same results either way."""
    import miner.knn.stage as stage

    write_shards(tmp_path / "a", corpus, 500)
    write_shards(tmp_path / "b", corpus, 500)
    reads = []
    real = stage.load_embeddings
    monkeypatch.setattr(stage, "load_embeddings", lambda p: reads.append(p.name) or real(p))
    run_knn(config(), tmp_path / "a", "de", "en")
    assert sorted(reads) == sorted([f"part-{i:05d}.parquet" for i in range(3)]
                                   + [f"part-{i:05d}.parquet" for i in range(5)])
    reads.clear()
    monkeypatch.setattr(stage, "KEEP_DECODED_SHARE", 0)  # nothing fits: read when needed
    run_knn(config(), tmp_path / "b", "de", "en")
    assert len(reads) == 2 * (3 + 5)
    for d in ("fwd", "bwd"):
        for x, y in zip(read_knn(tmp_path / "a", "de", "en", d), read_knn(tmp_path / "b", "de", "en", d)):
            assert x.tobytes() == y.tobytes()


def test_embedding_shards_read_back_writable_and_without_dictionary_pages(tmp_path, corpus):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from miner.formats.embeddings import read_embeddings

    ids, emb = corpus["de"]
    write_shards(tmp_path, {"de": (ids, emb)}, 10_000)
    path = tmp_path / "embeddings" / "de" / "part-00000.parquet"
    got_ids, got = read_embeddings(path)
    assert got.dtype == np.float16 and got.flags.writeable and got.flags.c_contiguous
    assert np.array_equal(got, emb) and np.array_equal(got_ids, ids)
    col = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert "DICTIONARY" not in " ".join(col.encodings) and col.compression == "LZ4"
    # several row groups and a sliced chunk: rows stay in order
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table.slice(0, 700), table.slice(700)]).slice(3),
                   tmp_path / "sliced.parquet", row_group_size=256)
    _, part = read_embeddings(tmp_path / "sliced.parquet")
    assert np.array_equal(part, emb[3:])


def test_one_gemm_for_both_directions_equals_the_per_direction_search(tmp_path, corpus):
    """A fresh run searches both directions from one GEMM per tile; a rerun that
    only misses some parts searches per direction: the parts are the same bytes."""
    write_shards(tmp_path, corpus, 700)
    run_knn(config(), tmp_path, "de", "en")
    before = {d: [p.read_bytes() for p in knn_shards(tmp_path, "de", "en", d)] for d in ("fwd", "bwd")}
    knn_shards(tmp_path, "de", "en", "bwd")[1].unlink()
    knn_shards(tmp_path, "de", "en", "fwd")[0].unlink()
    counts = run_knn(config(), tmp_path, "de", "en")
    assert counts["fwd"]["searched_shards"] == 1 and counts["bwd"]["searched_shards"] == 1
    after = {d: [p.read_bytes() for p in knn_shards(tmp_path, "de", "en", d)] for d in ("fwd", "bwd")}
    assert after == before


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_threads_do_not_change_the_neighbours(tmp_path, corpus, backend):
    """--knn-threads 1 and 2 write the same bytes; the setting is not in the
    fingerprint (a rerun with other threads is current) and is put back after."""
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    results = {}
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        write_shards(out, corpus, 700)
        run_knn(config(knn_backend=backend, knn_threads=threads), out, "de", "en")
        results[threads] = [p.read_bytes() for d in ("fwd", "bwd")
                            for p in knn_shards(out, "de", "en", d)]
    assert results[1] == results[2]
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    shards = [p for d in ("fwd", "bwd") for p in knn_shards(tmp_path / "t1", "de", "en", d)]
    stamps = [p.stat().st_mtime_ns for p in shards]
    run_knn(config(knn_backend=backend, knn_threads=2), tmp_path / "t1", "de", "en")
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # current: nothing redone
