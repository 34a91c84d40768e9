"""CPU exact kNN throughput (faiss IndexFlatIP vs miner's bf16 path) and the peak RSS
of ``mine knn`` under ``--max-memory``.

    python benchmarks/knn.py                          # 50k x 500k, d=512; RSS on 500k x 500k
    python benchmarks/knn.py --queries 5000 --database 50000 --rss-rows 50000   # quick

Part 1b (``--stage-rows``, default 50k) runs ``mine knn`` (both directions, flat,
in process, Parquet in and out) on n x n random unit vectors and prints its GFLOP/s
beside the kernel's: the kernel on the same arrays, and part 1's number.

Part 1 times both searches on the same random unit vectors in one run (the machine
is shared and noisy: compare the ratio, not absolute numbers) and checks that the
neighbour ids agree. GFLOP/s counts the 2*n*m*d flops of the similarity GEMM.

Part 2 writes float16 embedding shards for two languages into a temp dir, runs
``mine knn DIR --pair xx-yy --max-memory M`` in a subprocess, samples its RSS
(psutil if installed, else /proc) and prints the peak against the budget. The
"overhead" line is the RSS of a process that only imports what the stage imports
(python, torch, faiss, pyarrow): the part of the peak that no budget controls.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def unit_rows(rng, n, d, dtype=np.float32, chunk=65536):
    out = np.empty((n, d), dtype)
    for s in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - s), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + len(x)] = x
    return out


def throughput(n, m, d, k, threads):
    import faiss
    import torch

    from miner.knn.cpu_bf16 import cpu_has_bf16, knn_torch_bf16

    if threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(0)
    y = unit_rows(rng, m, d, np.float16)  # as stored in embedding shards
    q = unit_rows(rng, n, d, np.float16)
    y32, q32 = y.astype(np.float32), q.astype(np.float32)
    flops = 2.0 * n * m * d
    print(f"[throughput] {n} queries x {m} database, d={d}, k={k}, "
          f"threads torch={torch.get_num_threads()} faiss={faiss.omp_get_max_threads()}, "
          f"cpu bf16: {cpu_has_bf16()}", flush=True)

    index = faiss.IndexFlatIP(d)
    index.add(y32)
    t = time.perf_counter()
    _, f_ids = index.search(q32, k)
    t_faiss = time.perf_counter() - t
    print(f"  faiss-cpu IndexFlatIP : {t_faiss:8.2f} s  {flops / t_faiss / 1e9:7.1f} GFLOP/s",
          flush=True)

    stats: dict = {}
    t = time.perf_counter()
    _, m_ids = knn_torch_bf16(q, y, k, stats=stats)
    t_ours = time.perf_counter() - t
    print(f"  miner knn_torch_bf16  : {t_ours:8.2f} s  {flops / t_ours / 1e9:7.1f} GFLOP/s "
          f"(bf16 GEMM + exact rescore; {stats.get('redone', 0)} queries redone in full)")
    print(f"  ratio miner / faiss   : {t_faiss / t_ours:.2f}x")
    same = (np.sort(f_ids, 1) == np.sort(m_ids, 1)).all(1).mean()
    print(f"  same neighbour sets as faiss on {100 * same:.2f}% of queries "
          f"(the rest: fp32 GEMM ties/rounding in faiss)", flush=True)
    return flops / t_ours / 1e9


def stage(rows, d, k, shard_size, kernel_gflops):
    """``mine knn`` (both directions, in process) against the kernel on its own."""
    import shutil

    from miner.config import Config
    from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard
    from miner.knn.cpu_bf16 import knn_torch_bf16
    from miner.knn.stage import run_knn

    tmp = Path(tempfile.mkdtemp(prefix="knn-stage-"))
    rng = np.random.default_rng(2)
    sides = {lang: unit_rows(rng, rows, d, np.float16) for lang in ("xx", "yy")}
    for lang, x in sides.items():
        for i, s in enumerate(range(0, rows, shard_size)):
            n = min(shard_size, rows - s)
            write_embedding_shard(tmp / "embeddings" / lang / f"part-{i:05d}.parquet",
                                  rng.integers(1, 2 ** 63, n, dtype=np.uint64), x[s:s + n],
                                  EmbeddingMeta("bench-random", d))
    flops = 2 * 2.0 * rows * rows * d  # both directions
    t = time.perf_counter()
    knn_torch_bf16(sides["xx"], sides["yy"], k)
    knn_torch_bf16(sides["yy"], sides["xx"], k)
    t_kernel = time.perf_counter() - t
    cfg = Config()
    cfg.knn.k = k
    t = time.perf_counter()
    run_knn(cfg, tmp, "xx", "yy")
    t_stage = time.perf_counter() - t
    shutil.rmtree(tmp)
    g_kernel, g_stage = flops / t_kernel / 1e9, flops / t_stage / 1e9
    print(f"[stage] mine knn {rows} x {rows}, d={d}, k={k}, both directions, shards of "
          f"{shard_size}:")
    print(f"  kernel on the same arrays: {t_kernel:8.2f} s  {g_kernel:7.1f} GFLOP/s")
    print(f"  mine knn (Parquet in/out): {t_stage:8.2f} s  {g_stage:7.1f} GFLOP/s")
    print(f"  stage / kernel (same data)     : {100 * g_stage / g_kernel:5.1f}%")
    if kernel_gflops:
        print(f"  stage / kernel (throughput run): {100 * g_stage / kernel_gflops:5.1f}%"
              "   (target >= 80%)")
    print(f"  load average: {os.getloadavg()}", flush=True)


def _rss_of(pid):
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    return 0


def run_sampled(cmd, env, seconds=0):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], _rss_of(proc.pid))
            except (OSError, ProcessLookupError):
                break
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        out, _ = proc.communicate(timeout=seconds or None)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate()
        return 0, out + f"(stopped after {seconds} s, as asked)", peak[0]
    th.join()
    return proc.returncode, out, peak[0]


def memory(rows, d, k, max_memory, shard_size, backend, keep, seconds):
    from miner.config import parse_memory
    from miner.formats.embeddings import EmbeddingMeta, write_embedding_shard

    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="knn-bench-"))
    rng = np.random.default_rng(1)
    meta = EmbeddingMeta("bench-random", d)
    for lang in ("xx", "yy"):
        for i, s in enumerate(range(0, rows, shard_size)):
            n = min(shard_size, rows - s)
            write_embedding_shard(tmp / "embeddings" / lang / f"part-{i:05d}.parquet",
                                  rng.integers(1, 2 ** 63, n, dtype=np.uint64),
                                  unit_rows(rng, n, d, np.float16), meta)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code, _, base = run_sampled([sys.executable, "-c", "import time, torch, faiss, pyarrow.parquet, "
                                 "miner.knn.stage, miner.cli; time.sleep(1)"], env)
    cmd = [sys.executable, "-m", "miner", "knn", str(tmp), "--pair", "xx-yy", "-k", str(k),
           "--max-memory", max_memory, "--knn-backend", backend]
    print(f"[memory] mine knn on {rows} x {rows}, d={d} float16 shards of {shard_size}: "
          f"{' '.join(cmd[3:])}", flush=True)
    t = time.perf_counter()
    code, out, peak = run_sampled(cmd, env, seconds)
    secs = time.perf_counter() - t
    if code != 0:
        print(out)
        raise SystemExit(f"mine knn failed with exit code {code}")
    budget = parse_memory(max_memory)
    print(out.strip())
    print(f"  wall time             : {secs:.1f} s")
    print(f"  peak RSS              : {peak / 2 ** 30:6.2f} GiB")
    print(f"  --max-memory          : {budget / 2 ** 30:6.2f} GiB")
    print(f"  import overhead (RSS) : {base / 2 ** 30:6.2f} GiB")
    print(f"  peak - overhead       : {(peak - base) / 2 ** 30:6.2f} GiB "
          f"({'within' if peak - base <= budget else 'OVER'} the budget)")
    if not keep:
        import shutil

        shutil.rmtree(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--database", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="0: library defaults")
    ap.add_argument("--rss-rows", type=int, default=500_000,
                    help="rows per language for the memory run (0: skip it)")
    ap.add_argument("--max-memory", default="2G")
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--keep", help="write the memory run's shards here and keep them")
    ap.add_argument("--rss-seconds", type=int, default=0,
                    help="stop the memory run after this long (0: run to the end); the "
                         "database and the first query block are resident within a minute")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--stage-rows", type=int, default=50_000,
                    help="rows per language for the stage-vs-kernel run (0: skip it)")
    a = ap.parse_args()
    kernel = 0.0
    if not a.skip_throughput:
        kernel = throughput(a.queries, a.database, a.dim, a.k, a.threads)
    if a.stage_rows:
        stage(a.stage_rows, a.dim, a.k, a.shard_size, kernel)
    if a.rss_rows:
        memory(a.rss_rows, a.dim, a.k, a.max_memory, a.shard_size, a.backend, a.keep,
               a.rss_seconds)


if __name__ == "__main__":
    main()
