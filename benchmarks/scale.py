"""A million sentences a side: knn (IVF) + score + bitext, timed, with recall and RSS.

    python benchmarks/scale.py                                   # 1M x 1M, d=512 (quiet machine)
    python benchmarks/scale.py --rows 100000 --sample 10000 --flat-rows 50000   # quick

Writes ``--rows`` clustered unit vectors per side (float16 embedding shards of
``--shard-size`` rows, d=512) with synthetic sentence shards: the targets are noisy
copies of the sources in shuffled order, so every source has a true translation.
Then, in a subprocess whose peak RSS is sampled, ``run_knn`` with ``--index ivf``
(default nprobe), ``run_score`` (ratio margin, max retrieval) and ``write_bitext``
(filters off, threshold 0): the time of each and in total (target: <= 20 minutes at
1M x 1M). Recall@4 of the IVF forward neighbours against exact search
(``knn_torch_bf16``) on ``--sample`` random sources (target >= 0.95), and the share
of true translations mined. Finally exact (``--index flat``) ``mine knn`` on the
first ``--flat-rows`` rows per side, timed and extrapolated to ``--rows`` (the work
grows with the square), printed beside the IVF time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SRC, TGT = "de", "en"
TGT_BASE = 10 ** 12  # target sentence ids: TGT_BASE + row of the source it copies


def write_corpus(root: Path, rows: int, d: int, shard: int, clusters: int, seed: int = 0):
    """Embedding and sentence shards of both sides; returns the permutation: target
    row j is a noisy copy of source row perm[j]."""
    import pyarrow.parquet as pq

    from e2e import sentence_table
    from miner.embed.encoders import l2_normalize as unit
    from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard

    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((clusters, d)).astype(np.float32))
    # sources: cluster centre + noise, generated in chunks (no 1M x d float32 array)
    src = np.empty((rows, d), np.float16)
    for s in range(0, rows, 65536):
        n = min(65536, rows - s)
        # noise of norm ~0.5 around a centre: clusters of cosine ~0.9 to their centre
        x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, d), np.float32) / np.sqrt(d)
        src[s:s + n] = unit(x)
    perm = rng.permutation(rows)
    meta = EmbeddingMeta("bench-clustered", d)
    for lang in (SRC, TGT):
        for i, s in enumerate(range(0, rows, shard)):
            e = min(rows, s + shard)
            if lang == SRC:
                emb, ids = src[s:e], np.arange(1 + s, 1 + e, dtype=np.uint64)
            else:
                base = src[perm[s:e]].astype(np.float32)
                emb = unit(base + 0.15 * rng.standard_normal(base.shape, np.float32) / np.sqrt(d))
                ids = (TGT_BASE + perm[s:e]).astype(np.uint64)
            write_embedding_shard(root / "embeddings" / lang / f"part-{i:05d}.parquet", ids,
                                  emb, meta)
            texts = [f"{lang} sentence {int(v) % TGT_BASE}" for v in ids]
            sdir = root / "sentences" / lang
            sdir.mkdir(parents=True, exist_ok=True)
            pq.write_table(sentence_table(lang, ids, texts), sdir / f"part-{i:05d}.parquet")
    return perm


MINE = """
import json, sys, time
from miner.config import Config
from miner.knn.stage import run_knn
from miner.outputs import write_bitext
from miner.score import run_score
root, index, max_memory = sys.argv[1], sys.argv[2], sys.argv[3]
stages = sys.argv[4].split(",")
cfg = Config(out=root, pairs=["de-en"])
cfg.knn.index, cfg.knn.max_memory = index, max_memory
cfg.score.threshold = 0.0
for f in ("length_ratio", "lid_agreement", "drop_copies", "number_mismatch", "drop_junk",
          "drop_boilerplate", "script_agreement", "pair_dedup"):
    setattr(cfg.filters, f, False)
times = {}
for name, fn in (("knn", run_knn), ("score", run_score), ("bitext", write_bitext)):
    if name in stages:
        t = time.perf_counter()
        fn(cfg, root, "de", "en")
        times[name] = time.perf_counter() - t
print("TIMES " + json.dumps(times))
"""


def mine(root: Path, index: str, max_memory: str, stages: str) -> tuple[dict, int]:
    import json

    from knn import run_sampled  # benchmarks/knn.py: subprocess + peak RSS

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code, out, peak = run_sampled([sys.executable, "-c", MINE, str(root), index, max_memory,
                                   stages], env)
    if code != 0:
        print(out)
        raise SystemExit(f"mining failed with exit code {code}")
    line = next(x for x in out.splitlines() if x.startswith("TIMES "))
    return json.loads(line[6:]), peak


def recall(root: Path, sample: int, k: int = 4, seed: int = 1) -> float:
    """Recall@k of the stored fwd neighbours on ``sample`` random sources against the
    exact top k (bf16 shortlist + exact rescore, the flat path)."""
    from miner.formats.embeddings import read_embeddings
    from miner.knn.cpu_bf16 import PreparedDatabase, knn_torch_bf16
    from miner.knn.stage import read_knn
    from miner.rundir import RunDir

    run = RunDir(root)
    src = np.concatenate([read_embeddings(p)[1] for p in RunDir.shards(run.embeddings(SRC))])
    tgt_parts = [read_embeddings(p) for p in RunDir.shards(run.embeddings(TGT))]
    tgt_ids = np.concatenate([p[0] for p in tgt_parts])
    tgt = np.concatenate([p[1] for p in tgt_parts])
    del tgt_parts
    rows = np.sort(np.random.default_rng(seed).choice(len(src), min(sample, len(src)), replace=False))
    _, exact = knn_torch_bf16(src[rows], PreparedDatabase(tgt), k)
    _, nbr_ids, _, _ = read_knn(root, SRC, TGT, "fwd")
    found = nbr_ids[rows]
    want = tgt_ids[exact]
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, want))
    return hits / want.size


def true_pairs_mined(root: Path) -> float:
    import pyarrow.parquet as pq

    from miner.outputs import bitext_dir

    t = pq.read_table(bitext_dir(root, SRC, TGT) / "bitext.parquet", columns=["src_id", "tgt_id"])
    src = t.column("src_id").to_numpy().astype(np.int64) - 1
    tgt = t.column("tgt_id").to_numpy().astype(np.int64) - TGT_BASE
    return float((src == tgt).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="sentences per side")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--clusters", type=int, default=4096)
    ap.add_argument("--sample", type=int, default=50_000, help="queries for recall@4")
    ap.add_argument("--flat-rows", type=int, default=200_000,
                    help="rows per side of the exact run extrapolated to --rows (0: skip)")
    ap.add_argument("--max-memory", default="16G")
    ap.add_argument("--keep", help="work in this folder and keep it")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="scale-"))
    try:
        print(f"scale: {a.rows:,} x {a.rows:,}, d={a.dim}, {a.clusters} clusters, shards of "
              f"{a.shard_size:,}; load {os.getloadavg()}", flush=True)
        t = time.perf_counter()
        write_corpus(root / "ivf", a.rows, a.dim, a.shard_size, a.clusters)
        print(f"  corpus written in {time.perf_counter() - t:.0f} s", flush=True)
        times, peak = mine(root / "ivf", "ivf", a.max_memory, "knn,score,bitext")
        total = sum(times.values())
        print(f"  IVF mining: knn {times['knn']:.1f} s, score {times['score']:.1f} s, bitext "
              f"{times['bitext']:.1f} s, total {total:.0f} s = {total / 60:.1f} min "
              f"(target <= 20 min at 1M); peak RSS {peak / 2 ** 30:.2f} GiB", flush=True)
        print(f"  true translations mined: {true_pairs_mined(root / 'ivf') / a.rows:.4f} "
              "of the sources", flush=True)
        t = time.perf_counter()
        r = recall(root / "ivf", a.sample)
        print(f"  recall@4 of IVF vs exact on {min(a.sample, a.rows):,} queries: {r:.4f} "
              f"(target >= 0.95; exact search of the sample took {time.perf_counter() - t:.0f} s)",
              flush=True)
        if a.flat_rows:
            n = min(a.flat_rows, a.rows)
            flat = root / "flat"
            for sub in ("embeddings", "sentences"):
                for lang in (SRC, TGT):
                    (flat / sub / lang).mkdir(parents=True)
                    for p in sorted((root / "ivf" / sub / lang).glob("part-*.parquet"))[
                            :max(1, n // a.shard_size)]:
                        os.link(p, flat / sub / lang / p.name)
            from miner.formats import num_rows

            n = sum(num_rows(p) for p in (flat / "embeddings" / SRC).glob("*.parquet"))
            ft, fpeak = mine(flat, "flat", a.max_memory, "knn")
            scale = (a.rows / n) ** 2
            print(f"  exact (flat) mine knn at {n:,} x {n:,}: {ft['knn']:.0f} s, peak RSS "
                  f"{fpeak / 2 ** 30:.2f} GiB; extrapolated to {a.rows:,} x {a.rows:,}: "
                  f"{ft['knn'] * scale:.0f} s = {ft['knn'] * scale / 60:.1f} min (IVF knn: "
                  f"{times['knn'] / 60:.1f} min)", flush=True)
        print(f"  load {os.getloadavg()}")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
