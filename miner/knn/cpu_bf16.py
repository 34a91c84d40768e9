"""Exact kNN on the CPU with a bf16 GEMM shortlist and an fp64 rescore.

On CPUs with AVX512-BF16 or AMX, torch's bf16 matmul (oneDNN) runs at a few times
faiss-cpu's fp32 flat search. Scores from bf16 inputs are approximate, so:

1. bf16 GEMM of a query block against database column blocks; per query keep a
   shortlist of the ``s`` best approximate scores (``s`` a few more than k);
2. rescore the shortlist from the original vectors (products and sums in float64,
   rounded once to float32: the similarity is a function of the pair alone, never
   of block sizes or summation order in a GEMM);
3. certify each query: every approximate score is within ``eps`` of the exact one
   (a rigorous bound from bf16 rounding, see ``score_error_bound``), so when the
   best score left out of the shortlist plus ``eps`` is below the exact k-th score,
   nothing left out can be in the top k. Queries that fail (dense clusters,
   duplicates) are redone against every database row whose approximate score
   reaches ``kth - eps``, rescored exactly.

The result is the exact top k under the rescored similarity, ties to the lower id:
identical whatever the blocking. Without bf16 hardware the same code runs the GEMM
in fp32 (with the much smaller fp32 bound). fp16 matmul is never used on the CPU:
it is very slow there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from miner.errors import MinerError
from miner.knn.topk import sort_topk

U_BF16 = 2.0 ** -8   # unit roundoff of bfloat16 (8 significant bits)
U_FP32 = 2.0 ** -24


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")
    except Exception:  # pragma: no cover - old torch
        return False


def input_error_norms(x: np.ndarray, bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row of x (n, d): norm of the GEMM input ``|x~|`` and of its rounding error
    ``|x - x~|`` (x~ = x rounded to bf16; zero error in fp32 mode), float64 (n,)."""
    import torch

    norms, errs = np.empty(len(x)), np.zeros(len(x))
    for start in range(0, len(x), 65536):  # chunks: no float32 copy of a whole database
        xt = torch.from_numpy(np.ascontiguousarray(x[start:start + 65536], dtype=np.float32))
        if not bf16:
            norms[start:start + len(xt)] = xt.double().norm(dim=1).numpy()
            continue
        xr = xt.bfloat16().float()
        # float32 norms: relative error ~d * 2**-24, covered by the 1.01 in the bound
        norms[start:start + len(xt)] = xr.norm(dim=1).double().numpy()
        errs[start:start + len(xt)] = (xt - xr).norm(dim=1).double().numpy()
    return norms, errs


def score_error_bound(q_norm, q_err, y_norm_max: float, y_err_max: float, d: int,
                      ) -> np.ndarray:
    """Bound on |a' - q.y| per query, a' the GEMM score before output rounding.

    With q = q~ + dq and y = y~ + dy (bf16 inputs q~, y~):
    q.y - q~.y~ = q~.dy + dq.y~ + dq.dy, bounded by Cauchy-Schwarz with the actual
    rounding-error norms (about 3x tighter than the elementwise bound), plus fp32
    accumulation of d products: gamma_d * |q~| |y~|. Arrays (n,) float64.
    """
    gamma = d * U_FP32 / (1 - d * U_FP32)
    inputs = q_norm * y_err_max + q_err * y_norm_max + q_err * y_err_max
    return 1.01 * (inputs + gamma * q_norm * y_norm_max) + 1e-30


def exact_sims(queries: np.ndarray, database: np.ndarray, rows: np.ndarray,
               cols: np.ndarray) -> np.ndarray:
    """Similarities of the pairs (rows[i], cols[i]) in float64, rounded to float32.

    queries (n, d), database (m, d) any float dtype; rows, cols int64 of one shape
    (any), entries of cols < 0 give -inf. The result depends on the pair only.
    """
    out = np.full(rows.shape, -np.inf, dtype=np.float32)
    r = rows.reshape(-1)
    c = cols.reshape(-1)
    flat = out.reshape(-1)
    step = max(1, (1 << 21) // max(1, queries.shape[1]))
    for start in range(0, len(r), step):
        rr, cc = r[start:start + step], c[start:start + step]
        ok = cc >= 0
        q = queries[rr[ok]].astype(np.float64)
        y = database[cc[ok]].astype(np.float64)
        np.multiply(q, y, out=q)
        part = np.full(len(rr), -np.inf, dtype=np.float32)
        part[ok] = q.sum(axis=1).astype(np.float32)
        flat[start:start + step] = part
    return out


def _topk_approx(scores, s: int, groups: int = 16):
    """Top-s columns per row of a (r, c) score tensor: (values float32, cols int64).

    For wide blocks, a max over ``groups`` strided slabs picks the s best slabs
    first (the top s entries lie in at most s slabs), so topk runs on 1/groups of
    the data. Values equal the plain ``torch.topk`` values.
    """
    import torch

    r, c = scores.shape
    if c % groups or c < 8 * groups * s:
        v, i = torch.topk(scores, s, dim=1)
        return v.float(), i
    w = c // groups
    # bf16 bits as int16 order like the floats for non-negative values, and every
    # negative float is below every non-negative one: max on int16 is much faster
    key = scores.view(torch.int16) if scores.dtype == torch.bfloat16 else scores
    gv, gi = torch.topk(key.view(r, groups, w).amax(1), s, dim=1)
    if scores.dtype == torch.bfloat16 and bool((gv[:, -1] < 0).any()):
        v, i = torch.topk(scores, s, dim=1)  # negatives among the best: int order is wrong
        return v.float(), i
    cols = (gi[:, :, None] + torch.arange(groups)[None, None, :] * w).reshape(r, -1)
    v, j = torch.topk(torch.gather(scores, 1, cols).float(), s, dim=1)
    return v, torch.gather(cols, 1, j)


def _above_threshold(scores, thr, groups: int = 16):
    """Entries of a (r, c) bf16 score block that may beat each row's threshold.

    thr: (r,) float32 holding bf16 values, all >= 0 (the running s-th best score of
    each row). Groups of ``groups`` strided columns whose int16-viewed maximum exceeds
    the threshold are expanded; every entry left out is <= its group's maximum <=
    thr, so it cannot enter a top-s list that already holds s entries >= thr. After
    the first blocks only a few groups per row pass, so this costs one int16 max
    over the block instead of a top-k. Returns (values (r, w) float32 padded with
    -inf, columns (r, w) int64) or None when nothing passes.
    """
    import torch

    r, c = scores.shape
    w = c // groups
    key = scores.view(torch.int16)
    gmax = key.view(r, groups, w).amax(1)  # (r, w): max of columns p, p+w, ...
    thr_key = thr.to(torch.bfloat16).view(torch.int16)
    # for thr >= 0, int16 order equals float order wherever it matters: a group
    # whose max is negative maps below any non-negative threshold
    rows, pos = (gmax > thr_key[:, None]).nonzero(as_tuple=True)
    if len(rows) == 0:
        return None
    counts = torch.bincount(rows, minlength=r)
    slot = torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[rows]
    cols = pos[:, None] + torch.arange(groups)[None, :] * w  # (nnz, groups)
    vals = scores[rows[:, None], cols].float()
    width = int(counts.max())
    out_v = torch.full((r, width, groups), float("-inf"))
    out_i = torch.zeros((r, width, groups), dtype=torch.int64)
    out_v[rows, slot] = vals
    out_i[rows, slot] = cols
    return out_v.view(r, -1), out_i.view(r, -1)


def knn_torch_bf16(queries: np.ndarray, database: np.ndarray, k: int,
                   shortlist: int | None = None, block: int = 16384,
                   query_block: int = 4096, bf16: bool | None = None,
                   stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by inner product via a bf16 GEMM shortlist.

    queries: (n, d), database: (m, d), float16/float32 numpy arrays (float16 rows
    are exact in fp32, so keeping the database in float16 saves half the memory).
    k: neighbours; shortlist: approximate candidates kept per query (default
    ``2k + 16``: rarely does a query need the full redo); block: database rows per
    GEMM; query_block: query rows per GEMM; bf16: force the bf16 (True) or fp32
    (False) GEMM, None = bf16 when the CPU has it; stats: if given, ``stats["redone"]`` counts the queries redone in full.

    Returns sims (n, k') float32 and ids (n, k') int64, k' = min(k, m), sorted by
    similarity descending then id ascending; sims are float64 dot products of the
    original vectors rounded to float32.
    """
    import torch

    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise MinerError(f"embedding shapes do not match: queries {queries.shape}, "
                         f"database {database.shape}")
    n, d = queries.shape
    m = database.shape[0]
    k = min(k, m)
    if k <= 0 or n == 0:
        return np.zeros((n, max(k, 0)), np.float32), np.zeros((n, max(k, 0)), np.int64)
    if bf16 is None:
        bf16 = cpu_has_bf16()
    tdtype = torch.bfloat16 if bf16 else torch.float32
    s = min(m, shortlist or 2 * k + 16)
    s = max(s, k)
    block = max(block, s)  # every block yields s candidates
    yt = torch.from_numpy(np.ascontiguousarray(database)).to(tdtype)
    q_norm, q_err = input_error_norms(queries, bf16)
    y_norm, y_err = input_error_norms(database, bf16)
    c_row = score_error_bound(q_norm, q_err, float(y_norm.max()), float(y_err.max()), d)
    u_out = U_BF16 * 1.01 if bf16 else 0.0  # bf16 GEMM output is rounded to bf16
    del y_norm, y_err

    sims_out = np.empty((n, k), np.float32)
    ids_out = np.empty((n, k), np.int64)
    with torch.inference_mode():
        for q0 in range(0, n, query_block):
            qb = queries[q0:q0 + query_block]
            qt = torch.from_numpy(np.ascontiguousarray(qb)).to(tdtype)
            best_v = best_i = None
            for y0 in range(0, m, block):
                scores = qt @ yt[y0:y0 + block].T
                if (best_v is not None and bf16 and scores.shape[1] % 16 == 0
                        and bool((best_v[:, -1] >= 0).all())):
                    # a full shortlist already: only entries above its worst matter
                    found = _above_threshold(scores, best_v[:, -1])
                    if found is None:
                        continue
                    v, i = found
                else:
                    v, i = _topk_approx(scores, min(s, scores.shape[1]))
                i = i + y0
                if best_v is not None:
                    v, j = torch.topk(torch.cat([best_v, v], 1), s, dim=1)
                    i = torch.gather(torch.cat([best_i, i], 1), 1, j)
                best_v, best_i = v, i
            cand = best_i.numpy()
            left_out = best_v[:, -1].numpy().astype(np.float64)  # bound on excluded scores
            rows = np.broadcast_to(np.arange(q0, q0 + len(qb))[:, None], cand.shape)
            sims = exact_sims(queries, database, rows, cand)
            sims, ids = sort_topk(sims, cand)
            sims, ids = sims[:, :k], ids[:, :k]
            kth = sims[:, -1].astype(np.float64)
            c = c_row[q0:q0 + len(qb)]
            fp32_margin = 4 * U_FP32 * np.abs(kth) + 1e-30
            # scores left out are <= left_out; their exact sims are then below this
            bound = left_out + u_out * np.abs(left_out) + c + fp32_margin
            redo = np.flatnonzero(~((s >= m) | (bound < kth)))
            if len(redo):
                if stats is not None:
                    stats["redone"] = stats.get("redone", 0) + len(redo)
                thr = kth - c - u_out * (np.abs(kth) + c) - fp32_margin
                for r0 in range(0, len(redo), 256):  # bounded (256, block) score blocks
                    sub = redo[r0:r0 + 256]
                    sims[sub], ids[sub] = _redo_rows(queries, database, yt, q0 + sub, thr[sub],
                                                     k, block, tdtype)
            sims_out[q0:q0 + len(qb)] = sims
            ids_out[q0:q0 + len(qb)] = ids
    return sims_out, ids_out


def _redo_rows(queries, database, yt, rows, thresholds, k, block, tdtype):
    """Exact top-k of the given query rows from every database row whose approximate
    score reaches the row's threshold (which no true top-k neighbour falls below)."""
    import torch

    qt = torch.from_numpy(np.ascontiguousarray(queries[rows])).to(tdtype)
    thr32 = thresholds.astype(np.float32)
    thr32 = np.where(thr32 > thresholds, np.nextafter(thr32, np.float32(-np.inf)), thr32)
    thr = torch.from_numpy(thr32)  # rounded down: never above the float64 threshold
    pr, pc = [], []
    for y0 in range(0, database.shape[0], block):
        scores = (qt @ yt[y0:y0 + block].T).float()
        r, c = torch.nonzero(scores >= thr[:, None], as_tuple=True)
        pr.append(r.numpy())
        pc.append(c.numpy() + y0)
    pr = np.concatenate(pr)
    pc = np.concatenate(pc).astype(np.int64)
    ps = exact_sims(queries, database, rows[pr], pc)
    order = np.lexsort((pc, -ps, pr))
    pr, pc, ps = pr[order], pc[order], ps[order]
    starts = np.searchsorted(pr, np.arange(len(rows)))
    take = starts[:, None] + np.arange(k)[None, :]
    # every row has >= k candidates: its k shortlisted neighbours pass the threshold
    assert (np.diff(np.append(starts, len(pr))) >= k).all()
    return ps[take], pc[take]
