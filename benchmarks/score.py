"""`mine score` against a per-candidate Python loop in the LASER style, same neighbours.

Builds n source and n target sentences with k stored neighbours each (random ids,
similarities with a realistic spread), then times in one run:

- miner: the vectorised margin + max retrieval (``miner.margin.retrieve``), and the
  whole ``mine score`` stage (neighbour Parquet in, scored candidates with provenance out);
- LASER style: ``score_candidates`` as in LASER's mine_bitexts.py (a Python loop over
  every candidate computing its margin), argmax per row, then the greedy max-retrieval
  loop with seen-sets.

Both give the same pairs and scores (checked). Prints times and the ratio
(target >= 10x at 1M queries).

    python benchmarks/score.py [--n 1000000] [--k 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make_neighbours(n: int, m: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    fwd_ids = rng.integers(0, m, size=(n, k))
    bwd_ids = rng.integers(0, n, size=(m, k))
    fwd_sims = np.sort(rng.uniform(0.2, 0.9, size=(n, k)).astype(np.float32), axis=1)[:, ::-1]
    bwd_sims = np.sort(rng.uniform(0.2, 0.9, size=(m, k)).astype(np.float32), axis=1)[:, ::-1]
    return (np.ascontiguousarray(fwd_sims), fwd_ids.astype(np.int64),
            np.ascontiguousarray(bwd_sims), bwd_ids.astype(np.int64))


def laser_style(fwd_sims, fwd_ids, bwd_sims, bwd_ids):
    """LASER mine_bitexts.py: per-candidate margin loop, then the greedy max pass."""
    # float64 throughout, as miner computes, so both give bit-identical scores
    fwd_mean = fwd_sims.mean(axis=1).astype(np.float64)
    bwd_mean = bwd_sims.mean(axis=1).astype(np.float64)
    fwd_sims, bwd_sims = fwd_sims.astype(np.float64), bwd_sims.astype(np.float64)
    margin = lambda a, b: a / b  # noqa: E731

    def score_candidates(sims, inds, mean_self, mean_other):
        scores = np.zeros(inds.shape)
        for i in range(scores.shape[0]):
            for j in range(scores.shape[1]):
                kk = inds[i, j]
                scores[i, j] = margin(sims[i, j], (mean_self[i] + mean_other[kk]) / 2)
        return scores

    fwd_scores = score_candidates(fwd_sims, fwd_ids, fwd_mean, bwd_mean)
    bwd_scores = score_candidates(bwd_sims, bwd_ids, bwd_mean, fwd_mean)
    n, m = len(fwd_ids), len(bwd_ids)
    fwd_best = fwd_ids[np.arange(n), fwd_scores.argmax(axis=1)]
    bwd_best = bwd_ids[np.arange(m), bwd_scores.argmax(axis=1)]
    indices = np.stack((np.concatenate((np.arange(n), bwd_best)),
                        np.concatenate((fwd_best, np.arange(m)))), axis=1)
    scores = np.concatenate((fwd_scores.max(axis=1), bwd_scores.max(axis=1)))
    seen_src, seen_trg = set(), set()
    out = []
    for i in np.argsort(-scores, kind="stable"):
        src_ind, trg_ind = indices[i]
        if src_ind not in seen_src and trg_ind not in seen_trg:
            seen_src.add(src_ind)
            seen_trg.add(trg_ind)
            out.append((src_ind, trg_ind, scores[i]))
    return out


def write_stage_inputs(root: Path, fwd_sims, fwd_ids, bwd_sims, bwd_ids) -> None:
    """Sentence shards (short texts) and neighbour files as `mine prepare`/`knn` write them."""
    n, k = fwd_ids.shape
    m = len(bwd_ids)
    src_ids = np.arange(1, n + 1, dtype=np.uint64)
    tgt_ids = np.arange(10 ** 9, 10 ** 9 + m, dtype=np.uint64)
    for lang, ids in (("de", src_ids), ("en", tgt_ids)):
        d = root / "sentences" / lang
        d.mkdir(parents=True)
        texts = pa.array([f"{lang} sentence {i}" for i in range(len(ids))])
        pq.write_table(pa.table({
            "id": pa.array(ids), "text": texts, "lang": pa.array([lang] * len(ids)),
            "lid_prob": pa.array(np.ones(len(ids), np.float32)),
            "source": pa.array(["bench"] * len(ids)), "doc_id": pa.array(["d"] * len(ids)),
            "title": pa.array(["t"] * len(ids)), "url": pa.array(["u"] * len(ids)),
            "revision": pa.array(["r"] * len(ids)),
            "position": pa.array(np.zeros(len(ids), np.int32))}), d / "part-00000.parquet")

    from miner.formats.neighbours import write_knn_shard  # as `mine knn` writes them

    for direction, ids, rows, other, sims in (("fwd", src_ids, fwd_ids, tgt_ids, fwd_sims),
                                              ("bwd", tgt_ids, bwd_ids, src_ids, bwd_sims)):
        write_knn_shard(root / "knn" / "de-en" / direction / "part-00000.parquet", ids,
                        other[rows], sims, sims.mean(axis=1).astype(np.float32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="Queries on each side.")
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    from miner.config import Config
    from miner.margin import retrieve
    from miner.score import run_score

    arrays = make_neighbours(args.n, args.n, args.k)
    t = time.perf_counter()
    cands = retrieve(*arrays, margin="ratio", retrieval="max")
    t_core = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        write_stage_inputs(Path(tmp), *arrays)
        t = time.perf_counter()
        run_score(Config(shard_size=1_000_000), tmp, "de", "en")
        t_stage = time.perf_counter() - t

    t = time.perf_counter()
    ref = laser_style(*arrays)
    t_loop = time.perf_counter() - t

    same = (len(ref) == len(cands)
            and np.array_equal(np.array([r[0] for r in ref]), cands.src)
            and np.array_equal(np.array([r[1] for r in ref]), cands.tgt)
            and np.allclose(np.array([r[2] for r in ref]), cands.score, rtol=1e-6))
    print(f"queries: {args.n:,} per side, k={args.k}, candidates kept: {len(cands):,}")
    print(f"LASER-style per-candidate loop:      {t_loop:8.2f} s")
    print(f"miner margin + retrieval (arrays):   {t_core:8.2f} s   {t_loop / t_core:6.1f}x faster")
    print(f"miner `mine score` stage (Parquet):  {t_stage:8.2f} s   {t_loop / t_stage:6.1f}x faster"
          "   (target >= 10x)")
    print(f"same pairs and scores: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
