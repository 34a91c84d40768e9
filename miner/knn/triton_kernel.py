"""Fused inner-product kNN in Triton: similarities and top-k in one pass.

Each program owns ``BLOCK_M`` query rows and scans a range of database rows in tiles
of ``BLOCK_N``. A tile's similarities come from ``tl.dot`` over ``BLOCK_D`` slices of
the embedding dimension, accumulated in fp32 registers; the tile is then merged into a
running top-k that lives in registers, and dropped. Only the top-k ``(sims, ids)``
per query ever reach global memory: the (n, m) score matrix is never written.

The merge is a thresholded selection: each row keeps its current k-th best score
("worst"); a tile whose scores all fall at or below every row's worst costs one
compare and two reductions. Otherwise the kernel extracts the tile's best entries one
at a time while any of them would still enter a list (at most k + 1 rounds, usually
one or two once the lists have filled); each replaces its row's worst entry. Ties go to the lower database id: a program
scans ids in ascending order, so an entry that only ties the worst never enters,
and among tied entries the highest id is evicted first.

``knn_triton`` is the host side: fp16 or fp32 inputs, queries split over all visible
GPUs, the database streamed in row chunks when it does not fit in GPU memory, and
partial lists (database splits, chunks) merged with a deterministic sort. Under
``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (the CI path).
See ``docs/knn_gpu.md`` for the design and the expected bounds.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from miner.errors import MinerError
from miner.knn.torch_knn import merge_topk_torch

# Tile sizes used when no autotuning happens (the interpreter, or an explicit ``tiles``).
INTERPRETER_TILES = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_D": 16}

# Autotune search spaces (BLOCK_M, BLOCK_N, BLOCK_D, num_warps, num_stages).
# Hopper (sm_90, H100/H200): 228 KB shared memory, wgmma wants BLOCK_M >= 64 and
# 4 or 8 warps; deep pipelines hide the HBM/L2 latency of the Y tiles.
HOPPER_CONFIGS = [
    (128, 128, 64, 8, 4),
    (128, 256, 64, 8, 3),
    (128, 128, 128, 8, 3),
    (64, 256, 64, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 5),
]
# Ampere (sm_80/86, A100/A10/3090): 164 KB (A100) or 100 KB shared memory, mma.sync.
AMPERE_CONFIGS = [
    (128, 128, 32, 4, 4),
    (128, 128, 64, 8, 3),
    (64, 128, 32, 4, 4),
    (128, 64, 32, 4, 4),
    (64, 64, 64, 4, 3),
]
# Anything else (Volta, Turing, Ada, Blackwell before it is tuned): safe middles.
GENERIC_CONFIGS = [
    (64, 64, 32, 4, 3),
    (128, 64, 32, 4, 3),
    (64, 128, 32, 4, 3),
]


def _knn_tile_body(q_ptr, y_ptr, sims_ptr, ids_ptr,
                   n, m, id_offset, cols_per_split,
                   stride_q, stride_y, stride_split, stride_row,
                   D: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
                   IEEE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: top-K of BLOCK_M queries over one split of the database rows.

    q: (n, D), y: (m, D) fp16 or fp32, row strides stride_q / stride_y.
    Writes sims (splits, n, K) float32 and ids (splits, n, K) int64 (global id =
    row + id_offset; padding -inf / -1 where the split has fewer than K rows).
    """
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n
    slot = tl.arange(0, K_PAD)
    # running top-K per row, unsorted; slots >= K hold +inf so they are never "worst"
    top_s = tl.full((BLOCK_M, K_PAD), float("-inf"), tl.float32)
    top_s = tl.where(slot[None, :] < K, top_s, float("inf"))
    top_i = tl.full((BLOCK_M, K_PAD), -1, tl.int64)
    worst = tl.full((BLOCK_M,), float("-inf"), tl.float32)

    start = pid_s * cols_per_split
    stop = tl.minimum(start + cols_per_split, m)
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_q
    for col0 in range(start, stop, BLOCK_N):
        cols = col0 + tl.arange(0, BLOCK_N)
        col_ok = cols < stop
        y_cols = y_ptr + cols.to(tl.int64)[None, :] * stride_y
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            d_ok = dd < D
            q = tl.load(q_rows + dd[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            yt = tl.load(y_cols + dd[:, None], mask=d_ok[:, None] & col_ok[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(q, yt, acc, input_precision="ieee")
            else:
                acc = tl.dot(q, yt, acc)
        s = tl.where(row_ok[:, None] & col_ok[None, :], acc, float("-inf"))

        # extract the tile's best entries while one would enter some row's list;
        # ids only grow during the scan, so an entry that only ties the worst loses
        best = tl.max(s, axis=1)
        while tl.max((best > worst).to(tl.int32), axis=0) > 0:
            best_col = tl.min(tl.where(s == best[:, None], cols[None, :], 2147483647), axis=1)
            take = best > worst
            # evict the worst slot: lowest sim, then highest id, then lowest slot
            at_worst = top_s == worst[:, None]
            worst_id = tl.max(tl.where(at_worst, top_i, -2), axis=1)
            evict = tl.min(tl.where(at_worst & (top_i == worst_id[:, None]), slot[None, :], K_PAD), axis=1)
            put = take[:, None] & (slot[None, :] == evict[:, None])
            top_s = tl.where(put, best[:, None], top_s)
            top_i = tl.where(put, best_col.to(tl.int64)[:, None] + id_offset, top_i)
            worst = tl.min(top_s, axis=1)
            s = tl.where(cols[None, :] == best_col[:, None], float("-inf"), s)
            best = tl.max(s, axis=1)

    out = pid_s.to(tl.int64) * stride_split + rows.to(tl.int64)[:, None] * stride_row + slot[None, :]
    out_ok = row_ok[:, None] & (slot[None, :] < K)
    tl.store(sims_ptr + out, top_s, mask=out_ok)
    tl.store(ids_ptr + out, top_i, mask=out_ok)


def _is_interpreter() -> bool:
    return bool(triton.knobs.runtime.interpret)


@functools.lru_cache(maxsize=None)
def _kernel(interpret: bool, arch: int | None):
    """The jitted kernel; autotuned for ``arch`` (compute capability major) on CUDA.

    Built on first use, not at import, because ``triton.jit`` decides between the
    interpreter and the compiler when it runs (``TRITON_INTERPRET``).
    """
    fn = triton.jit(_knn_tile_body)
    if interpret or arch is None:
        return fn
    space = HOPPER_CONFIGS if arch == 9 else AMPERE_CONFIGS if arch == 8 else GENERIC_CONFIGS
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd},
                             num_warps=w, num_stages=st) for bm, bn, bd, w, st in space]
    return triton.autotune(configs=configs, key=["D", "K_PAD", "IEEE"],
                           prune_configs_by={"early_config_prune": _prune})(fn)


def _prune(configs, named_args, **kwargs):
    """fp32 (IEEE) tiles take twice the shared memory: halve BLOCK_D for them."""
    ieee = kwargs.get("IEEE", named_args.get("IEEE", False))
    if not ieee:
        return configs
    out = []
    for c in configs:
        kw = dict(c.kwargs)
        kw["BLOCK_D"] = max(16, kw["BLOCK_D"] // 2)
        out.append(triton.Config(kw, num_warps=c.num_warps, num_stages=c.num_stages))
    return out


def _as_tensor(x, dtype: torch.dtype) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 2:
        raise MinerError(f"embeddings must be 2-D, got shape {tuple(t.shape)}")
    return t.to(dtype).contiguous()


def _devices() -> list[torch.device]:
    if _is_interpreter():
        return [torch.device("cpu")]
    if not torch.cuda.is_available():
        raise MinerError("the triton kNN backend needs a CUDA GPU "
                         "(use --knn-backend faiss or torch on this machine)")
    return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]


def _default_db_rows(device: torch.device, d: int, itemsize: int, n_dev_queries: int, k: int) -> int:
    """Database rows per streamed chunk: half the free memory of ``device``."""
    if device.type != "cuda":
        return 1 << 20
    free, _ = torch.cuda.mem_get_info(device)
    budget = free // 2 - n_dev_queries * (d * itemsize + 8 * 12 * k)
    return max(4096, int(budget // (d * itemsize)))


def _launch(q: torch.Tensor, y: torch.Tensor, k: int, id_offset: int, splits: int | None,
            tiles: dict | None, ieee: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel on one device: q (n, d), y (c, d) -> top-k (n, min(k, c)) of the chunk."""
    n, d = q.shape
    c = y.shape[0]
    k_pad = max(1, triton.next_power_of_2(k))
    interpret = _is_interpreter()
    arch = None if interpret or tiles else torch.cuda.get_device_capability(q.device)[0]
    fn = _kernel(interpret, arch)
    if tiles is None and arch is None:
        tiles = INTERPRETER_TILES
    if splits is None:
        # enough programs to fill the GPU (~4 per SM) when there are few query blocks
        sms = 1 if q.device.type != "cuda" else torch.cuda.get_device_properties(q.device).multi_processor_count
        bm = tiles["BLOCK_M"] if tiles else 128
        want = max(1, (4 * sms) // triton.cdiv(n, bm))
        splits = max(1, min(want, c // 2048 or 1))
    splits = max(1, min(splits, c))
    cols_per_split = triton.cdiv(triton.cdiv(c, splits), 256) * 256 if c > 256 * splits else triton.cdiv(c, splits)
    splits = triton.cdiv(c, cols_per_split)
    sims = torch.empty((splits, n, k), dtype=torch.float32, device=q.device)
    ids = torch.empty((splits, n, k), dtype=torch.int64, device=q.device)
    args = (q, y, sims, ids, n, c, id_offset, cols_per_split,
            q.stride(0), y.stride(0), sims.stride(0), sims.stride(1))
    meta = dict(D=d, K=k, K_PAD=k_pad, IEEE=ieee)
    if tiles is not None:  # fixed tiles: the plain jitted kernel, no autotuning
        grid = (triton.cdiv(n, tiles["BLOCK_M"]), splits)
        fn[grid](*args, **meta, **tiles)
    else:
        fn[lambda cfg: (triton.cdiv(n, cfg["BLOCK_M"]), splits)](*args, **meta)
    sims = sims.permute(1, 0, 2).reshape(n, splits * k)
    ids = ids.permute(1, 0, 2).reshape(n, splits * k)
    return merge_topk_torch(sims, ids, min(k, c))


def knn_triton(queries, database, k: int, *, dtype: str = "fp16", block_rows: int | None = None,
               splits: int | None = None, tiles: dict | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact inner-product top-k with the fused Triton kernel, on all visible GPUs.

    queries: (n, d), database: (m, d), numpy arrays or torch tensors, L2-normalised
    (any float dtype; cast to ``dtype`` = ``"fp16"`` or ``"fp32"`` for the dot products,
    which accumulate in fp32; fp32 uses IEEE products, not TF32).
    block_rows: database rows per streamed chunk (None: half the free GPU memory);
    the queries are split evenly over the GPUs and each chunk is searched by all of them.
    splits: database splits per chunk searched by separate programs (None: enough
    to fill the GPU when n is small). tiles: fixed ``BLOCK_M/BLOCK_N/BLOCK_D``
    (+ optional ``num_warps``/``num_stages``) instead of autotuning.

    Returns sims (n, k') float32, ids (n, k') int64, k' = min(k, m), each row sorted by
    sim descending then id ascending, and topk_mean (n,) float32, the mean of each
    row's k' sims (the denominator of the margin score).
    """
    if dtype not in ("fp16", "fp32"):
        raise MinerError(f"triton kNN dtype must be fp16 or fp32, got {dtype!r}")
    if k < 1:
        raise MinerError(f"k must be at least 1, got {k}")
    tdtype = torch.float16 if dtype == "fp16" else torch.float32
    q = _as_tensor(queries, tdtype)
    y = _as_tensor(database, tdtype)
    if q.shape[1] != y.shape[1]:
        raise MinerError(f"embedding shapes do not match: queries {tuple(q.shape)}, "
                         f"database {tuple(y.shape)}")
    n, d = q.shape
    m = y.shape[0]
    k_out = min(k, m)
    if n == 0 or m == 0:
        return (np.zeros((n, k_out), np.float32), np.zeros((n, k_out), np.int64),
                np.zeros((n,), np.float32))
    devices = _devices()
    parts = [p for p in torch.tensor_split(torch.arange(n), len(devices)) if len(p)]
    work = []
    for dev, part in zip(devices, parts):
        qd = q[part[0]:part[-1] + 1].to(dev, non_blocking=True)
        rows = block_rows or _default_db_rows(dev, d, q.element_size(), len(part), k)
        work.append([dev, qd, rows, None, None])
    chunk = min(w[2] for w in work)
    for start in range(0, m, chunk):
        y_chunk = y[start:start + chunk]
        for w in work:
            dev, qd = w[0], w[1]
            s, i = _launch(qd, y_chunk.to(dev, non_blocking=True), k, start, splits, tiles,
                           ieee=dtype == "fp32")
            if w[3] is not None:
                s, i = merge_topk_torch(torch.cat([w[3], s], 1), torch.cat([w[4], i], 1), k_out)
            w[3], w[4] = s, i
    sims = torch.cat([w[3].cpu() for w in work]).numpy().astype(np.float32, copy=False)
    ids = torch.cat([w[4].cpu() for w in work]).numpy().astype(np.int64, copy=False)
    return sims, ids, sims.mean(axis=1, dtype=np.float32)
