"""Benchmark the fused Triton kNN kernel against faiss-gpu flat search and torch matmul+topk.

On a CUDA machine (defaults: n = m = 1M, d = 768 and 1024, k = 4 and 16, fp16)::

    python benchmarks/knn_gpu.py
    python benchmarks/knn_gpu.py --n 262144 --m 1048576 --d 768 --k 16 --backends triton,faiss

prints one row per (backend, d, k): seconds, achieved TFLOP/s (2·n·m·d flops) and
the fraction of one GPU's fp16 dense tensor-core peak (knn_triton uses every visible
GPU: set ``CUDA_VISIBLE_DEVICES=0`` for per-GPU numbers). Seconds include the
(n, k) results' copy to the host for triton, not for faiss or torch. Without CUDA it sets
``TRITON_INTERPRET=1`` and runs small sizes through the interpreter, faiss-cpu and
torch on the CPU, only to prove the script works: those timings mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# fp16 dense tensor-core peak (TFLOP/s, no sparsity) by device-name fragment
FP16_PEAK = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,
    "A100": 312.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
}


def fp16_peak(name: str) -> float | None:
    """The fp16 dense peak for a CUDA device name, or None if unknown."""
    for fragment, peak in FP16_PEAK.items():
        if fragment in name:
            return peak
    return None


def random_unit(n: int, d: int, device, seed: int):
    """(n, d) random L2-normalised float16 rows on ``device``, made in blocks."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty((n, d), dtype=torch.float16, device=device)
    for s in range(0, n, 1 << 18):
        x = torch.randn((min(1 << 18, n - s), d), generator=gen, device=device)
        out[s:s + len(x)] = torch.nn.functional.normalize(x, dim=1).half()
    return out


def run_triton(q, y, k, dtype):
    from miner.knn.triton_kernel import knn_triton

    return knn_triton(q, y, k, dtype=dtype)[:2]


def run_faiss(q, y, k, dtype):
    """faiss IndexFlatIP: GPU (fp16 storage when dtype is fp16) or CPU."""
    import faiss
    import torch

    d = q.shape[1]
    if q.is_cuda:  # pragma: no cover - needs faiss-gpu and a GPU
        import faiss.contrib.torch_utils  # noqa: F401  (torch tensors in and out)

        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.useFloat16 = dtype == "fp16"
        cfg.device = q.device.index or 0
        index = faiss.GpuIndexFlatIP(res, d, cfg)
        index.add(y.float())
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = index.search(q.float(), k)
        torch.cuda.synchronize()
        return out, time.perf_counter() - t0
    index = faiss.IndexFlatIP(d)
    index.add(y.float().numpy())
    t0 = time.perf_counter()
    out = index.search(q.float().numpy(), k)
    return out, time.perf_counter() - t0


def run_torch(q, y, k, dtype, score_bytes: int = 8 << 30):
    """Blocked ``q @ y.T`` + ``torch.topk`` (speed baseline; ties not ordered)."""
    import torch

    q = q if dtype == "fp16" and q.is_cuda else q.float()
    y = y if dtype == "fp16" and y.is_cuda else y.float()
    block = max(1, score_bytes // (y.shape[0] * q.element_size()))
    sims, ids = [], []
    for s in range(0, q.shape[0], block):
        v, i = torch.topk(q[s:s + block] @ y.T, k, dim=1)
        sims.append(v)
        ids.append(i)
    return torch.cat(sims), torch.cat(ids)


def timed(fn, *args, cuda: bool):
    import torch

    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args)
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="queries (1M on CUDA, 64 otherwise)")
    p.add_argument("--m", type=int, default=None, help="database rows (1M on CUDA, 100 otherwise)")
    p.add_argument("--d", type=int, nargs="+", default=None, help="dimensions (768 1024; 64 without CUDA)")
    p.add_argument("--k", type=int, nargs="+", default=[4, 16])
    p.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"])
    p.add_argument("--backends", default="triton,faiss,torch")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (autotuning)")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the fp16 dense peak")
    args = p.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton
    n = args.n or (1 << 20 if cuda else 64)
    m = args.m or (1 << 20 if cuda else 100)
    dims = args.d or ([768, 1024] if cuda else [64])
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter; timings meaningless)"
    peak = args.peak_tflops or (fp16_peak(name) if cuda else None)
    print(f"# device: {name}; n={n} m={m} dtype={args.dtype}; fp16 dense peak: "
          f"{peak if peak else 'unknown'} TFLOP/s")
    print("| backend | d | k | seconds | TFLOP/s | % of fp16 peak | ids equal to triton's |")
    print("|---|---|---|---|---|---|---|")
    backends = args.backends.split(",")
    for d in dims:
        q = random_unit(n, d, device, seed=1)
        y = random_unit(m, d, device, seed=2)
        for k in args.k:
            ref_ids = None
            for backend in backends:
                if backend == "triton":
                    fn = run_triton
                elif backend == "faiss":
                    fn = run_faiss
                elif backend == "torch":
                    fn = run_torch
                else:
                    raise SystemExit(f"unknown backend {backend}")
                try:
                    for _ in range(args.warmup if cuda else 0):
                        fn(q, y, k, args.dtype)
                    out, secs = timed(fn, q, y, k, args.dtype, cuda=cuda)
                except Exception as e:  # report and go on: one missing backend is not fatal
                    print(f"| {backend} | {d} | {k} | failed: {type(e).__name__}: {str(e)[:80]} | | | |")
                    continue
                if backend == "faiss":
                    (_, ids), secs = out
                else:
                    ids = out[1]
                ids = ids.cpu().numpy() if hasattr(ids, "cpu") else np.asarray(ids)
                if ref_ids is None and backend == "triton":
                    ref_ids = ids
                agree = "" if ref_ids is None else f"{np.mean(ids == ref_ids):.4f}"
                tflops = 2.0 * n * m * d / secs / 1e12
                frac = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
                print(f"| {backend} | {d} | {k} | {secs:.3f} | {tflops:.3g} | {frac} | {agree} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
