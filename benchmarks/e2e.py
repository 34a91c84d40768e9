"""Whole mining from embeddings: miner (``mine knn`` + ``mine score`` + ``mine bitext``)
against LASER-style mining, on the same random vectors, in one run.

    python benchmarks/e2e.py                      # 50k and 200k a side, d=512, k=4
    python benchmarks/e2e.py --sizes 20000        # quick

For each size, random unit vectors (d=512) are written once as miner float16
embedding shards plus sentence shards (short synthetic texts), and the same vectors
(float16 values widened to float32) as ``.npy`` files plus one text file per side,
as LASER's ``mine_bitexts.py`` reads them. Then, timed (setup excluded):

- miner: ``run_knn`` (exact, ``--index flat``, default backend), ``run_score`` (ratio
  margin, max retrieval) and ``write_bitext`` (filters off, threshold 0): embedding
  Parquet in, ``bitext.tsv.gz`` / ``train.*`` / ``bitext.parquet`` out;
- LASER style: load the vectors, ``faiss.normalize_L2``, faiss ``IndexFlatIP`` both
  ways (``knnCPU`` of mine_bitexts.py), ``score_candidates`` as a per-candidate
  Python loop, argmax per row, the greedy max-retrieval loop with seen-sets, and the
  ``score<TAB>src<TAB>tgt`` lines written out, as mine_bitexts.py does.

Both run once on a tiny corpus first, untimed (imports and first calls are setup).
Prints both times, miner / LASER-style (target <= 0.4) and how many mined pairs the
two share (faiss's fp32 GEMM and miner's exact similarities can differ in the last
bit, which reorders near-ties). The machine is shared: compare the ratio of one run.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SRC, TGT = "de", "en"


def unit_rows(rng, n, d, chunk=65536):
    out = np.empty((n, d), np.float16)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + len(x)] = x
    return out


def texts(lang: str, n: int) -> list[str]:
    return [f"{lang} sentence number {i}" for i in range(n)]


def sentence_table(lang: str, ids: np.ndarray, lines: list[str]) -> pa.Table:
    """A sentence shard as prepare writes it (``miner.formats.sentences.SCHEMA``):
    the given ids and texts, one document per sentence, neutral provenance."""
    from miner.formats.sentences import SCHEMA

    n = len(ids)
    given = {"id": pa.array(ids, pa.uint64()), "text": pa.array(lines),
             "lang": pa.array([lang] * n), "doc_id": pa.array([str(int(i)) for i in ids]),
             "lid_prob": pa.array(np.ones(n, np.float32))}
    cols = {}
    for field in SCHEMA:
        if field.name in given:
            cols[field.name] = given[field.name].cast(field.type)
        elif pa.types.is_string(field.type):
            cols[field.name] = pa.array(["bench"] * n, field.type)
        else:
            cols[field.name] = pa.array(np.zeros(n), pa.float64()).cast(field.type)
    return pa.table(cols, schema=SCHEMA)


def write_inputs(root: Path, n: int, d: int, shard: int, seed: int) -> dict:
    """Miner shards under root/run, LASER files under root/laser; returns the vectors."""
    from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard

    rng = np.random.default_rng(seed)
    meta = EmbeddingMeta("bench-random", d)
    laser = root / "laser"
    laser.mkdir(parents=True)
    vectors = {}
    for lang, base in ((SRC, 1), (TGT, 10 ** 12)):
        x = unit_rows(rng, n, d)
        vectors[lang] = x
        ids = np.arange(base, base + n, dtype=np.uint64)
        lines = texts(lang, n)
        for i, s in enumerate(range(0, n, shard)):
            e = min(n, s + shard)
            write_embedding_shard(root / "run" / "embeddings" / lang / f"part-{i:05d}.parquet",
                                  ids[s:e], x[s:e], meta)
            sdir = root / "run" / "sentences" / lang
            sdir.mkdir(parents=True, exist_ok=True)
            pq.write_table(sentence_table(lang, ids[s:e], lines[s:e]),
                           sdir / f"part-{i:05d}.parquet")
        np.save(laser / f"{lang}.npy", x.astype(np.float32))
        (laser / f"{lang}.txt").write_text("\n".join(lines) + "\n")
    return vectors


def run_miner(root: Path, k: int) -> dict:
    from miner.config import Config
    from miner.knn.stage import run_knn
    from miner.outputs import write_bitext
    from miner.score import run_score

    cfg = Config(out=str(root / "run"), pairs=[f"{SRC}-{TGT}"])
    cfg.knn.k = k
    cfg.knn.index = "flat"
    cfg.score.margin, cfg.score.retrieval, cfg.score.threshold = "ratio", "max", 0.0
    for f in ("length_ratio", "lid_agreement", "drop_copies", "number_mismatch", "drop_junk",
              "drop_boilerplate", "script_agreement", "pair_dedup"):
        setattr(cfg.filters, f, False)
    times = {}
    t = time.perf_counter()
    run_knn(cfg, root / "run", SRC, TGT)
    times["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    run_score(cfg, root / "run", SRC, TGT)
    times["score"] = time.perf_counter() - t
    t = time.perf_counter()
    counts = write_bitext(cfg, root / "run", SRC, TGT)
    times["bitext"] = time.perf_counter() - t
    times["pairs"] = counts["kept"]
    return times


def run_laser(root: Path, k: int) -> tuple[dict, set]:
    """mine_bitexts.py's CPU path, ratio margin, max retrieval, threshold 0."""
    import faiss

    from score import laser_style  # benchmarks/score.py: the same margin loop + max pass

    laser = root / "laser"
    times = {}
    t = time.perf_counter()
    x = np.load(laser / f"{SRC}.npy")
    y = np.load(laser / f"{TGT}.npy")
    faiss.normalize_L2(x)
    faiss.normalize_L2(y)
    src_sents = (laser / f"{SRC}.txt").read_text().splitlines()
    trg_sents = (laser / f"{TGT}.txt").read_text().splitlines()
    times["load"] = time.perf_counter() - t

    def knn_cpu(a, b):
        idx = faiss.IndexFlatIP(b.shape[1])
        idx.add(b)
        return idx.search(a, k)

    t = time.perf_counter()
    x2y_sim, x2y_ind = knn_cpu(x, y)
    y2x_sim, y2x_ind = knn_cpu(y, x)
    times["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    pairs = laser_style(x2y_sim, x2y_ind.astype(np.int64), y2x_sim, y2x_ind.astype(np.int64))
    times["score"] = time.perf_counter() - t
    t = time.perf_counter()
    out = root / "laser" / "mined.tsv.gz"
    with gzip.open(out, "wt", encoding="utf-8") as fout:
        for s, g, score in pairs:
            if score > 0:
                print(score, src_sents[s], trg_sents[g], sep="\t", file=fout)
    times["write"] = time.perf_counter() - t
    times["pairs"] = len(pairs)
    return times, {(int(s), int(g)) for s, g, _ in pairs}


def miner_pairs(root: Path) -> set:
    from miner.outputs import bitext_dir

    t = pq.read_table(bitext_dir(root / "run", SRC, TGT) / "bitext.parquet")
    names = t.column_names
    src_col = next(c for c in names if c in ("src_id", "id_src", f"{SRC}_id"))
    tgt_col = next(c for c in names if c in ("tgt_id", "id_tgt", f"{TGT}_id"))
    src = t.column(src_col).to_numpy().astype(np.int64) - 1
    tgt = t.column(tgt_col).to_numpy().astype(np.int64) - 10 ** 12
    return set(zip(src.tolist(), tgt.tolist()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000],
                    help="sentences per side")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--keep", action="store_true", help="keep the temp folders")
    args = ap.parse_args()
    import torch

    print(f"e2e: d={args.dim}, k={args.k}, ratio margin, max retrieval, filters off, "
          f"threshold 0; torch threads {torch.get_num_threads()}, load {os.getloadavg()}",
          flush=True)
    # both sides once on a tiny corpus first, untimed: imports, torch's and faiss's
    # first calls are setup, not mining (the LASER side's faiss import is not timed)
    warm = Path(tempfile.mkdtemp(prefix="e2e-warm-"))
    try:
        write_inputs(warm, 2000, args.dim, args.shard_size, seed=1)
        run_miner(warm, args.k)
        run_laser(warm, args.k)
    finally:
        shutil.rmtree(warm, ignore_errors=True)
    ok = True
    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"e2e-{n}-"))
        try:
            write_inputs(root, n, args.dim, args.shard_size, seed=n)
            m = run_miner(root, args.k)
            lz, lpairs = run_laser(root, args.k)
            t_m = m["knn"] + m["score"] + m["bitext"]
            t_l = lz["load"] + lz["knn"] + lz["score"] + lz["write"]
            common = len(miner_pairs(root) & lpairs) / max(1, len(lpairs))
            flops = 2 * 2.0 * n * n * args.dim
            print(f"[{n:,} x {n:,}]")
            print(f"  miner      : {t_m:8.2f} s  (knn {m['knn']:.2f} s = "
                  f"{flops / m['knn'] / 1e9:.0f} GFLOP/s, score {m['score']:.2f} s, "
                  f"bitext {m['bitext']:.2f} s; {m['pairs']:,} pairs)")
            print(f"  LASER-style: {t_l:8.2f} s  (load {lz['load']:.2f} s, faiss knn "
                  f"{lz['knn']:.2f} s = {flops / lz['knn'] / 1e9:.0f} GFLOP/s, margin loop "
                  f"{lz['score']:.2f} s, write {lz['write']:.2f} s; {lz['pairs']:,} pairs)")
            print(f"  ratio miner / LASER-style: {t_m / t_l:.3f}  (target <= 0.4); "
                  f"pairs in common: {100 * common:.2f}%  load {os.getloadavg()}", flush=True)
            ok &= common > 0.99
        finally:
            if args.keep:
                print(f"  kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
