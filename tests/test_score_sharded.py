"""`mine score` per neighbour shard through an executor.

The parts must be byte-identical to the single-pass stage it replaced (kept below as
``reference_score``, a copy of the stage before the split) whatever the executor
(in-process, a spawned process pool, which proves the tasks pickle), the retrieval
mode and the shard sizes; and padded neighbour slots (an approximate index found
fewer than k neighbours) are never candidates. Real embeddings of the bundled
examples, several shards per side.
"""

import filecmp
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import EXAMPLES

from miner.config import Config
from miner.errors import MinerError
from miner.executor import LocalExecutor
from miner.knn.stage import knn_shards, read_knn, read_knn_shard, write_knn_shard
from miner.margin import (BOTH, BWD, DIRECTION_NAMES, FWD, RETRIEVALS, Candidates, apply_margin,
                          argsort_desc, greedy_one_to_one)
from miner.score import PROVENANCE, SCORE_SCHEMA, SHUFFLE_DIR, run_score, scores_dir

SRC, TGT = "de", "en"


# -- the stage before it ran per shard (commit 0d3e7da), the reference --------------------

def _old_retrieve(fwd_sims, fwd_ids, bwd_sims, bwd_ids, margin, retrieval, fwd_mean, bwd_mean):
    def best(sims, ids, mean_self, mean_other):
        denom = (mean_self[:, None].astype(np.float64) + mean_other[ids]) / 2
        scores = apply_margin(sims, denom, margin)
        col = scores.argmax(axis=1)
        rows = np.arange(scores.shape[0])
        return ids[rows, col].astype(np.int64), scores[rows, col]

    n, m = fwd_sims.shape[0], bwd_sims.shape[0]
    fwd_best, fwd_score = best(fwd_sims, fwd_ids, fwd_mean, bwd_mean)
    bwd_best, bwd_score = best(bwd_sims, bwd_ids, bwd_mean, fwd_mean)
    src_all, tgt_all = np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    fwd_both = bwd_best[fwd_best] == src_all
    bwd_both = fwd_best[bwd_best] == tgt_all
    fwd_dir = np.where(fwd_both, BOTH, FWD).astype(np.int8)
    bwd_dir = np.where(bwd_both, BOTH, BWD).astype(np.int8)
    if retrieval == "fwd":
        cands = Candidates(src_all, fwd_best, fwd_score, fwd_dir)
    elif retrieval == "bwd":
        cands = Candidates(bwd_best, tgt_all, bwd_score, bwd_dir)
    elif retrieval == "intersect":
        cands = Candidates(src_all, fwd_best, fwd_score, fwd_dir).take(fwd_both)
    else:
        pooled = Candidates(np.concatenate([src_all, bwd_best]), np.concatenate([fwd_best, tgt_all]),
                            np.concatenate([fwd_score, bwd_score]),
                            np.concatenate([fwd_dir, bwd_dir]))
        return pooled.take(greedy_one_to_one(pooled.src, pooled.tgt, pooled.score))
    return cands.take(argsort_desc(cands.score))


def _old_ids_to_rows(ids, query):
    import pandas as pd

    rows = pd.Index(ids).get_indexer(np.asarray(query).reshape(-1)).reshape(np.shape(query))
    if (rows < 0).any():
        raise MinerError("neighbour files name sentences that the other side's neighbour "
                         "files do not hold: rerun `mine knn`")
    return rows


def reference_score(cfg: Config, out_dir: Path, dest: Path) -> None:
    """The old ``run_score``: everything read and joined on the driver in one pass;
    writes the parts to ``dest``."""
    fwd = dict(zip(("ids", "nbr_ids", "nbr_sims", "mean"), read_knn(out_dir, SRC, TGT, "fwd")))
    bwd = dict(zip(("ids", "nbr_ids", "nbr_sims", "mean"), read_knn(out_dir, SRC, TGT, "bwd")))
    cands = _old_retrieve(fwd["nbr_sims"], _old_ids_to_rows(bwd["ids"], fwd["nbr_ids"]),
                          bwd["nbr_sims"], _old_ids_to_rows(fwd["ids"], bwd["nbr_ids"]),
                          cfg.score.margin, cfg.score.retrieval, fwd["mean"], bwd["mean"])

    def provenance(lang):
        parts = sorted((out_dir / "sentences" / lang).glob("part-*.parquet"))
        table = pa.concat_tables(pq.read_table(p, columns=["id", *PROVENANCE]) for p in parts)
        return table.column("id").to_numpy(), table

    src_ids, src_prov = provenance(SRC)
    tgt_ids, tgt_prov = provenance(TGT)
    src_rows = cands.src if np.array_equal(src_ids, fwd["ids"]) else \
        _old_ids_to_rows(src_ids, fwd["ids"][cands.src])
    tgt_rows = cands.tgt if np.array_equal(tgt_ids, bwd["ids"]) else \
        _old_ids_to_rows(tgt_ids, bwd["ids"][cands.tgt])
    s = src_prov.take(pa.array(src_rows))
    t = tgt_prov.take(pa.array(tgt_rows))
    directions = np.array([DIRECTION_NAMES[d] for d in (1, 2, 3)], dtype=object)
    table = pa.table({
        "src_id": pa.array(fwd["ids"][cands.src], pa.uint64()),
        "tgt_id": pa.array(bwd["ids"][cands.tgt], pa.uint64()),
        "src_text": s.column("text"), "tgt_text": t.column("text"),
        "score": pa.array(cands.score, pa.float64()),
        "direction": pa.array(directions[cands.direction.astype(np.int64) - 1].tolist(),
                              pa.string()),
        "src_doc_id": s.column("doc_id"), "tgt_doc_id": t.column("doc_id"),
        "src_url_or_title": s.column("url_or_title"), "tgt_url_or_title": t.column("url_or_title"),
        "src_source": s.column("source"), "tgt_source": t.column("source"),
        "src_lid_prob": s.column("lid_prob").cast(pa.float32()),
        "tgt_lid_prob": t.column("lid_prob").cast(pa.float32()),
    }, schema=SCORE_SCHEMA)
    dest.mkdir(parents=True)
    rows_per_part = max(1, cfg.shard_size)
    for i in range(max(1, -(-table.num_rows // rows_per_part))):
        pq.write_table(table.slice(i * rows_per_part, rows_per_part),
                       dest / f"part-{i:05d}.parquet", compression="zstd")


# -- a run directory: the examples prepared, embedded and searched, 20 sentences a shard --

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, muse):
    from miner.embed.stage import run_embed
    from miner.knn.stage import run_knn
    from miner.prepare import prepare

    out = tmp_path_factory.mktemp("score") / "run"
    cfg = Config(shard_size=20)
    prepare(cfg, [str(EXAMPLES / "articles" / f"{lang}.jsonl") for lang in (SRC, TGT)],
            [SRC, TGT], out)
    for lang in (SRC, TGT):
        run_embed(cfg, out, lang, muse)
    run_knn(cfg, out, SRC, TGT)
    for direction in ("fwd", "bwd"):
        assert len(knn_shards(out, SRC, TGT, direction)) >= 3
    return out


def config(retrieval="max", margin="ratio", shard_size=20) -> Config:
    cfg = Config(shard_size=shard_size)
    cfg.score.retrieval, cfg.score.margin = retrieval, margin
    return cfg


def assert_same_parts(ref: Path, out_dir: Path) -> None:
    got = scores_dir(out_dir, SRC, TGT)
    names = sorted(p.name for p in ref.iterdir())
    assert names == sorted(p.name for p in got.iterdir())  # no stale parts, no .shuffle/
    _, mismatch, errors = filecmp.cmpfiles(ref, got, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


@pytest.mark.parametrize("retrieval", RETRIEVALS)
def test_parts_equal_the_single_pass_stage_for_every_executor(run_dir, tmp_path, retrieval):
    for shard_size in (7, 1000):  # many output parts (the shuffle) and one (a single task)
        cfg = config(retrieval, "distance" if retrieval == "bwd" else "ratio", shard_size)
        ref = tmp_path / f"ref{shard_size}"
        reference_score(cfg, run_dir, ref)
        n_parts = len(list(ref.iterdir()))
        assert n_parts == 1 if shard_size == 1000 else n_parts > 3
        executors = [None, LocalExecutor(1)]
        if shard_size == 7 and retrieval == "max":
            # spawned processes: every task pickles (the tasks are the same for every
            # retrieval mode, which only the driver applies; a pool costs seconds)
            executors.append(LocalExecutor(2))
        for executor in executors:
            shutil.rmtree(scores_dir(run_dir, SRC, TGT), ignore_errors=True)
            counts = run_score(cfg, run_dir, SRC, TGT, executor)
            assert counts["candidates"] == sum(pq.read_metadata(p).num_rows
                                               for p in ref.iterdir())
            assert_same_parts(ref, run_dir)


def test_rerun_replaces_stale_parts_and_an_interrupted_shuffle(run_dir, tmp_path):
    ref = tmp_path / "ref"
    cfg = config(shard_size=9)
    reference_score(cfg, run_dir, ref)
    d = scores_dir(run_dir, SRC, TGT)
    run_score(config(shard_size=2), run_dir, SRC, TGT)  # many more parts
    (d / SHUFFLE_DIR).mkdir()
    (d / SHUFFLE_DIR / "src.part-00000.parquet").write_bytes(b"left by a killed run")
    run_score(cfg, run_dir, SRC, TGT)
    assert_same_parts(ref, run_dir)


def test_sentence_shards_in_another_order_are_mapped_by_id(run_dir, tmp_path):
    """Sentence shards that do not follow the neighbour files' order (here: the rows
    shuffled into three shards) are joined through the ids, as before."""
    out = tmp_path / "run"
    shutil.copytree(run_dir / "knn", out / "knn")
    for lang in (SRC, TGT):
        table = pa.concat_tables(pq.read_table(p) for p in
                                 sorted((run_dir / "sentences" / lang).glob("part-*.parquet")))
        table = table.take(pa.array(np.random.default_rng(1).permutation(table.num_rows)))
        (out / "sentences" / lang).mkdir(parents=True)
        for i, a in enumerate(range(0, table.num_rows, 30)):
            pq.write_table(table.slice(a, 30), out / "sentences" / lang / f"part-{i:05d}.parquet")
    cfg = config(shard_size=8)
    reference_score(cfg, out, tmp_path / "ref")
    run_score(cfg, out, SRC, TGT, LocalExecutor(1))
    assert_same_parts(tmp_path / "ref", out)


def _pad(run_dir: Path, out: Path, filler: bool) -> int:
    """Copy the run with the last neighbours of some queries turned into padded slots
    (id 0, similarity -inf, the mean over the valid ones, as the kNN stage writes
    them); with ``filler`` the slots keep a real id and get a similarity so low that
    they never win instead. Returns the number of padded slots."""
    shutil.copytree(run_dir / "sentences", out / "sentences")
    rng = np.random.default_rng(7)
    padded = 0
    for direction in ("fwd", "bwd"):
        for path in knn_shards(run_dir, SRC, TGT, direction):
            ids, nbr, sims, _ = read_knn_shard(path)
            keep = rng.integers(1, nbr.shape[1] + 1, len(ids))  # at least one neighbour
            pad = np.arange(nbr.shape[1])[None, :] >= keep[:, None]
            padded += int(pad.sum())
            mean = (np.where(pad, 0, sims).astype(np.float64).sum(1) / keep).astype(np.float32)
            sims = np.where(pad, np.float32(-1e30) if filler else -np.inf, sims).astype(np.float32)
            nbr = nbr if filler else np.where(pad, np.uint64(0), nbr).astype(np.uint64)
            dest = out / "knn" / f"{SRC}-{TGT}" / direction / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_knn_shard(dest, ids, nbr, sims, mean, {})
    return padded


@pytest.mark.parametrize("retrieval", ["max", "intersect"])
def test_padded_slots_are_never_candidates(run_dir, tmp_path, retrieval):
    """Padded slots give exactly the candidates of slots that can never win."""
    padded, filled = tmp_path / "padded", tmp_path / "filled"
    assert _pad(run_dir, padded, filler=False) == _pad(run_dir, filled, filler=True) > 20
    cfg = config(retrieval, shard_size=6)
    with pytest.raises(MinerError, match="rerun `mine knn`"):  # the bug: id 0 looked up
        reference_score(cfg, padded, tmp_path / "old")
    reference_score(cfg, filled, tmp_path / "ref")
    run_score(cfg, padded, SRC, TGT, LocalExecutor(1))
    assert_same_parts(tmp_path / "ref", padded)


def test_an_ivf_run_with_fewer_than_k_neighbours_scores(run_dir, tmp_path):
    """A real IVF search visiting one list of 32 finds fewer than k=4 neighbours for
    many queries; every candidate is a pair the search found."""
    from miner.knn.stage import run_knn

    out = tmp_path / "run"
    for name in ("sentences", "embeddings"):
        shutil.copytree(run_dir / name, out / name)
    cfg = config(shard_size=10)
    cfg.knn.index, cfg.knn.nprobe = "ivf", 1
    run_knn(cfg, out, SRC, TGT)
    fwd, bwd = read_knn(out, SRC, TGT, "fwd"), read_knn(out, SRC, TGT, "bwd")
    assert np.isneginf(fwd[2]).any() and np.isneginf(bwd[2]).any()
    assert (fwd[1][np.isneginf(fwd[2])] == 0).all()
    counts = run_score(cfg, out, SRC, TGT, LocalExecutor(1))
    got = pa.concat_tables(pq.read_table(p) for p in
                           sorted(scores_dir(out, SRC, TGT).glob("part-*.parquet")))
    assert got.num_rows == counts["candidates"] > 10
    found = {(int(q), int(n)) for q, row, sims in zip(fwd[0], fwd[1], fwd[2])
             for n, s in zip(row, sims) if s != -np.inf}
    found |= {(int(n), int(q)) for q, row, sims in zip(bwd[0], bwd[1], bwd[2])
              for n, s in zip(row, sims) if s != -np.inf}
    pairs = set(zip(got.column("src_id").to_pylist(), got.column("tgt_id").to_pylist()))
    assert pairs <= found
    assert np.isfinite(got.column("score").to_numpy()).all()


def test_unknown_neighbour_ids_are_still_an_error(run_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir / "sentences", out / "sentences")
    shutil.copytree(run_dir / "knn", out / "knn")
    path = knn_shards(out, SRC, TGT, "bwd")[1]
    ids, nbr, sims, mean = read_knn_shard(path)
    nbr = np.array(nbr)
    nbr[3, 1] = np.uint64(12345)  # a real similarity, an id no source has
    write_knn_shard(path, ids, nbr, sims, mean, {})
    with pytest.raises(MinerError, match="rerun `mine knn`"):
        run_score(config(), out, SRC, TGT)
