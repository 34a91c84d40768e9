"""`mine score` against a per-candidate Python loop in the LASER style, same neighbours.

Builds n source and n target sentences with k stored neighbours each (random 64-bit
ids as prepare makes them, similarities with a realistic spread), then times in one
run, each ``--repeats`` times (first and best printed):

- miner: the vectorised margin + max retrieval (``miner.margin.retrieve``), and the
  whole ``mine score`` stage (neighbour Parquet in, scored candidates with texts and
  provenance out), after one tiny warm-up run (imports, thread pool);
- LASER style: ``score_candidates`` as in LASER's mine_bitexts.py (a Python loop over
  every candidate computing its margin), argmax per row, then the greedy max-retrieval
  loop with seen-sets; and then, as mine_bitexts.py does, the kept pairs printed with
  their texts to a TSV (texts already in memory: its reading is not counted).

Both give the same pairs and scores (checked). Prints the stage's speed-up over the
loop alone and over the loop with its output (like for like: both end with the
pairs' texts on disk); target >= 10x at 1M queries.

    python benchmarks/score.py [--n 1000000] [--k 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
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
    # sentence ids are 64-bit hashes of the texts (miner.sentences.sentence_hash):
    # random, distinct, not in row order
    ids = np.unique(np.random.default_rng(1).integers(1, 2 ** 63, size=n + m + 64,
                                                       dtype=np.uint64))
    ids = np.random.default_rng(2).permutation(ids)
    src_ids, tgt_ids = ids[:n], ids[n:n + m]
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

    from miner.formats.neighbours import ids_digest, write_knn_shard  # as `mine knn` does

    for direction, ids, rows, other, sims in (("fwd", src_ids, fwd_ids, tgt_ids, fwd_sims),
                                              ("bwd", tgt_ids, bwd_ids, src_ids, bwd_sims)):
        write_knn_shard(root / "knn" / "de-en" / direction / "part-00000.parquet", ids,
                        other[rows], sims, sims.mean(axis=1).astype(np.float32), rows,
                        ids_digest(other))


def laser_output(pairs, src_texts, tgt_texts, path) -> None:
    """LASER's last step: the kept pairs written as score, source, target lines."""
    with open(path, "w", encoding="utf-8") as fout:
        for src_ind, trg_ind, score in pairs:
            print(score, src_texts[src_ind], tgt_texts[trg_ind], sep="\t", file=fout)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """First and best wall time of ``repeats`` calls of ``fn``, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times[0], min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="Queries on each side.")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="Runs of each; first and best shown.")
    args = ap.parse_args()
    from miner.config import Config
    from miner.margin import retrieve
    from miner.score import run_score

    arrays = make_neighbours(args.n, args.n, args.k)
    _, t_core, cands = timed(lambda: retrieve(*arrays, margin="ratio", retrieval="max"),
                             args.repeats)
    src_texts = [f"de sentence {i}" for i in range(args.n)]  # as write_stage_inputs
    tgt_texts = [f"en sentence {i}" for i in range(args.n)]

    with tempfile.TemporaryDirectory() as tmp:
        write_stage_inputs(Path(tmp), *arrays)
        # a tiny run first: imports and one-time setup are not per-candidate work
        write_stage_inputs(Path(tmp) / "warm", *make_neighbours(1000, 1000, args.k))
        run_score(Config(shard_size=1_000_000), Path(tmp) / "warm", "de", "en")

        def stage():
            shutil.rmtree(Path(tmp) / "scores", ignore_errors=True)  # redo it whole
            return run_score(Config(shard_size=1_000_000), tmp, "de", "en")

        s_first, s_best, _ = timed(stage, args.repeats)
        l_first, l_best, ref = timed(lambda: laser_style(*arrays), args.repeats)
        out = Path(tmp) / "laser.tsv"
        o_first, o_best, _ = timed(lambda: laser_output(ref, src_texts, tgt_texts, out),
                                   args.repeats)

    same = (len(ref) == len(cands)
            and np.array_equal(np.array([r[0] for r in ref]), cands.src)
            and np.array_equal(np.array([r[1] for r in ref]), cands.tgt)
            and np.allclose(np.array([r[2] for r in ref]), cands.score, rtol=1e-6))
    print(f"queries: {args.n:,} per side, k={args.k}, candidates kept: {len(cands):,}; "
          f"seconds, first and best of {args.repeats}")
    print(f"LASER-style per-candidate loop + greedy max:  {l_first:7.2f} {l_best:7.2f}")
    print(f"  + writing the pairs' texts as LASER does:   {l_first + o_first:7.2f} "
          f"{l_best + o_best:7.2f}")
    print(f"miner margin + retrieval (arrays only):       {'':7} {t_core:7.2f}   "
          f"{l_best / t_core:5.1f}x the loop")
    print(f"miner `mine score` stage (Parquet in, scored pairs with texts and provenance "
          f"out): {s_first:.2f} {s_best:.2f}")
    print(f"  stage vs loop alone (best):             {l_best / s_best:5.1f}x  "
          f"(first runs: {l_first / s_first:.1f}x)")
    print(f"  stage vs loop + output, like for like:  {(l_best + o_best) / s_best:5.1f}x  "
          f"(first runs: {(l_first + o_first) / s_first:.1f}x)   target >= 10x")
    print(f"same pairs and scores: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
