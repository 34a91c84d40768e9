"""Exact inner-product kNN with torch matmul + topk, on any torch device.

The unfused twin of the Triton kernel (and the "torch matmul+topk" baseline of
``benchmarks/knn_gpu.py``): it materialises a (query block, database chunk) score
matrix per step, which the fused kernel never does.
"""

from __future__ import annotations

import numpy as np
import torch

from miner.errors import MinerError


def merge_topk_torch(sims: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of (n, c) candidate lists: sim descending, then id ascending.

    sims float32 (n, c), ids int64 (n, c) with -1 for padding (which goes last).
    Returns (n, min(k, c)) sims and ids on the same device. Two stable sorts: by id,
    then by sim, so equal sims keep ascending ids.
    """
    key_ids = torch.where(ids < 0, torch.iinfo(torch.int64).max, ids)
    key_sims = torch.where(ids < 0, float("-inf"), sims)
    o1 = torch.sort(key_ids, dim=1, stable=True).indices
    s1 = torch.gather(key_sims, 1, o1)
    o2 = torch.sort(s1, dim=1, descending=True, stable=True).indices[:, :k]
    order = torch.gather(o1, 1, o2)
    return torch.gather(sims, 1, order), torch.gather(ids, 1, order)


def topk_exact_ties(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of each row of ``scores`` (r, c), ties at the k-th value -> lower column.

    ``torch.topk`` picks arbitrarily among equal values at the boundary; rows where
    that can matter are redone by ranking (above the k-th value, then -column).
    Returns values float32 (r, k) and columns int64 (r, k), sorted like ``sort_topk``.
    """
    vals, cols = torch.topk(scores, k, dim=1)
    kth = vals[:, -1:]
    tied = (scores >= kth).sum(1) > k
    if bool(tied.any()):
        sub = scores[tied]
        col = torch.arange(sub.shape[1], device=sub.device, dtype=torch.float64)
        rank = torch.where(sub > kth[tied], float("inf"),
                           torch.where(sub == kth[tied], -col, float("-inf")))
        c2 = torch.topk(rank, k, dim=1).indices
        cols = cols.clone()
        cols[tied] = c2
        vals = vals.clone()
        vals[tied] = torch.gather(sub, 1, c2)
    return merge_topk_torch(vals.float(), cols, k)


def knn_torch(queries, database, k: int, *, device: str | torch.device | None = None,
              dtype: str = "fp32", query_block: int = 8192, db_block: int = 1 << 18
              ) -> tuple[np.ndarray, np.ndarray]:
    """Exact search by blocked ``matmul`` + ``topk`` (fp32 accumulation).

    queries: (n, d), database: (m, d), numpy or torch; device: None = CUDA if
    available else CPU; dtype "fp16" (CUDA only) or "fp32".
    Returns sims (n, k') float32, ids (n, k') int64, k' = min(k, m), sorted by sim
    descending then id ascending.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    tdtype = {"fp16": torch.float16, "fp32": torch.float32}[dtype]
    q = queries if isinstance(queries, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(queries))
    y = database if isinstance(database, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(database))
    if q.ndim != 2 or y.ndim != 2 or q.shape[1] != y.shape[1]:
        raise MinerError(f"embedding shapes do not match: queries {tuple(q.shape)}, "
                         f"database {tuple(y.shape)}")
    n, m = q.shape[0], y.shape[0]
    k = min(k, m)
    sims_out = np.empty((n, k), np.float32)
    ids_out = np.empty((n, k), np.int64)
    y = y.to(device, tdtype)
    for qs in range(0, n, query_block):
        qb = q[qs:qs + query_block].to(device, tdtype)
        best_s = best_i = None
        for ys in range(0, m, db_block):
            scores = (qb @ y[ys:ys + db_block].T).float()
            s, i = topk_exact_ties(scores, min(k, scores.shape[1]))
            i = i + ys
            if best_s is not None:
                s, i = merge_topk_torch(torch.cat([best_s, s], 1), torch.cat([best_i, i], 1), k)
            best_s, best_i = s, i
        sims_out[qs:qs + len(qb)] = best_s.cpu().numpy()
        ids_out[qs:qs + len(qb)] = best_i.cpu().numpy()
    return sims_out, ids_out
