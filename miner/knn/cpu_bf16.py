"""Exact kNN on the CPU with a bf16 GEMM shortlist and an exact rescore.

On CPUs with AVX512-BF16 or AMX, torch's bf16 matmul (oneDNN) runs at a few times
faiss-cpu's fp32 flat search. Scores from bf16 inputs are approximate, so:

1. bf16 GEMM of a query block against database column blocks; per query keep a
   shortlist of the ``s`` best approximate scores (``s`` a few more than k);
2. rescore, from the original vectors, the shortlisted candidates that can still
   be in the top k: the exact dot product rounded once to float32 (for float16 rows
   of moderate norm, float32 products and float64 sums are exact in any order, see
   ``EXACT_NORM_PRODUCT``; otherwise float64 in the pair's own order), so the
   similarity is a function of the pair alone, never of block sizes or summation
   order in a GEMM;
3. certify each query: every approximate score is within ``eps`` of the exact one
   (a rigorous bound from bf16 rounding, see ``score_error_bound``), so when the
   best score left out of the shortlist plus ``eps`` is below the exact k-th score,
   nothing left out can be in the top k. Queries that fail (dense clusters,
   duplicates) are redone against every database row whose approximate score
   reaches ``kth - eps``, rescored exactly.

The result is the exact top k under the rescored similarity, ties to the lower id:
identical whatever the blocking. Without bf16 hardware the same code runs the GEMM
in fp32 (with the much smaller fp32 bound). fp16 matmul is never used on the CPU:
it is very slow there. ``knn_torch_bf16_both`` searches both directions from one
GEMM per tile (the second direction's scores are the transpose of the first's).
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


# products of two float16 values are multiples of 2**-48 with at most 22 significant
# bits: exact in float32, and a float64 sum of them stays exact, in any order, while
# every partial sum is below 2**5 (53 bits of multiples of 2**-48). The partial sums
# are bounded by sum |q_i y_i| <= |q| |y| (Cauchy-Schwarz), so for float16 rows with
# |q| |y| < 32 (unit vectors: 1) any float64 summation returns the exact dot product.
EXACT_NORM_PRODUCT = 31.0


def exact_sims(queries: np.ndarray, database: np.ndarray, rows: np.ndarray,
               cols: np.ndarray, norm_product: float | None = None) -> np.ndarray:
    """Similarities of the pairs (rows[i], cols[i]) in float64, rounded to float32.

    queries (n, d), database (m, d) any float dtype; rows, cols int64 of one shape
    (any), entries of cols < 0 give -inf. The result depends on the pair only.

    norm_product: a bound on |q| |y| over the rows involved, when the caller knows
    one. With float16 inputs and a bound below ``EXACT_NORM_PRODUCT`` the pairs are
    computed in torch (float16 rows gathered, float32 products, float64 sums), which
    gives the exact dot product rounded once to float32: the same bits as the float64
    numpy path below, at a fraction of its memory traffic.
    """
    if (norm_product is not None and norm_product < EXACT_NORM_PRODUCT
            and queries.dtype == np.float16 and database.dtype == np.float16):
        return _exact_sims_f16(queries, database, rows, cols)
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


def _exact_sims_f16(queries: np.ndarray, database: np.ndarray, rows: np.ndarray,
                    cols: np.ndarray) -> np.ndarray:
    """``exact_sims`` for float16 rows with |q| |y| < 32 (exact, so order-free)."""
    r = np.ascontiguousarray(rows, np.int64).reshape(-1)
    c = np.ascontiguousarray(cols, np.int64).reshape(-1)
    out = np.full(len(r), -np.inf, np.float32)
    ok = np.flatnonzero(c >= 0)
    if len(ok) < len(c):
        out[ok] = _pair_sims(queries, r[ok], database, c[ok])
    else:
        out[:] = _pair_sims(queries, r, database, c)
    return out.reshape(rows.shape)


def _pair_sims(queries: np.ndarray, rows: np.ndarray, database: np.ndarray,
               cols: np.ndarray) -> np.ndarray:
    """Exact dot products of float16 (or float16-valued float32) query rows and float16
    database rows, rounded to float32: float32 products (exact), float64 sums (exact
    while |q| |y| < 32). numpy, one thread: chunks of a few MiB stay in cache."""
    out = np.empty(len(rows), np.float32)
    step = max(1, (1 << 19) // max(1, queries.shape[1]))

    def chunk(s0):
        prod = np.take(database, cols[s0:s0 + step], axis=0).astype(np.float32)
        prod *= np.take(queries, rows[s0:s0 + step], axis=0)
        out[s0:s0 + step] = prod.sum(1, dtype=np.float64)

    starts = range(0, len(rows), step)
    if len(starts) < 4:
        for s0 in starts:
            chunk(s0)
        return out
    from concurrent.futures import ThreadPoolExecutor

    from miner.executor import usable_cores

    # numpy releases the GIL in take, the casts, products and sums: chunks on the
    # cores side by side (each element is its own pair: same bits in any split)
    with ThreadPoolExecutor(usable_cores()) as pool:
        list(pool.map(chunk, starts))
    return out


def _group_max(scores, groups: int, transposed: bool):
    """(r, w) max over ``groups`` strided slabs of each row of the logical matrix
    (``scores``, or ``scores.T`` when ``transposed``), on int16 keys for bf16. For the
    transpose the slabs are contiguous row ranges of ``scores``: one elementwise max
    over them, then a transpose of the 1/groups-sized result (no transposed copy of
    the block)."""
    import torch

    # bf16 bits as int16 order like the floats for non-negative values, and every
    # negative float is below every non-negative one: max on int16 is much faster
    key = scores.view(torch.int16) if scores.dtype == torch.bfloat16 else scores
    if transposed:
        c, r = scores.shape
        return key.view(groups, c // groups, r).amax(0).T
    r, c = scores.shape
    return key.view(r, groups, c // groups).amax(1)


def _topk_approx(scores, s: int, groups: int = 16, transposed: bool = False):
    """Top-s columns per row of a (r, c) score tensor: (values float32, cols int64).
    ``transposed``: of ``scores.T`` (the other direction of the same block).

    For wide blocks, a max over ``groups`` strided slabs picks the s best slabs
    first (the top s entries lie in at most s slabs), so topk runs on 1/groups of
    the data. Values equal the plain ``torch.topk`` values.
    """
    import torch

    logical = scores.T if transposed else scores
    r, c = logical.shape
    if c % groups or c < 8 * groups * s:
        v, i = torch.topk(logical, s, dim=1)
        return v.float(), i
    w = c // groups
    gv, gi = torch.topk(_group_max(scores, groups, transposed), s, dim=1)
    if scores.dtype == torch.bfloat16 and bool((gv[:, -1] < 0).any()):
        v, i = torch.topk(logical, s, dim=1)  # negatives among the best: int order is wrong
        return v.float(), i
    cols = (gi[:, :, None] + torch.arange(groups)[None, None, :] * w).reshape(r, -1)
    v, j = torch.topk(torch.gather(logical, 1, cols).float(), s, dim=1)
    return v, torch.gather(cols, 1, j)


def _above_threshold(scores, thr, groups: int = 16, transposed: bool = False):
    """Entries of a (r, c) bf16 score block that may beat each row's threshold.

    thr: (r,) float32 holding bf16 values, all >= 0 (the running s-th best score of
    each row). Groups of ``groups`` strided columns whose int16-viewed maximum exceeds
    the threshold are expanded; every entry left out is <= its group's maximum <=
    thr, so it cannot enter a top-s list that already holds s entries >= thr. After
    the first blocks only a few groups per row pass, so this costs one int16 max
    over the block instead of a top-k. Returns (values (r, w) float32 padded with
    -inf, columns (r, w) int64) or None when nothing passes. ``transposed``: of
    ``scores.T``.
    """
    import torch

    logical = scores.T if transposed else scores
    r, c = logical.shape
    w = c // groups
    gmax = _group_max(scores, groups, transposed)  # (r, w): max of columns p, p+w, ...
    thr_key = thr.to(torch.bfloat16).view(torch.int16)
    # for thr >= 0, int16 order equals float order wherever it matters: a group
    # whose max is negative maps below any non-negative threshold
    rows, pos = (gmax > thr_key[:, None]).nonzero(as_tuple=True)
    if len(rows) == 0:
        return None
    counts = torch.bincount(rows, minlength=r)
    slot = torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[rows]
    cols = pos[:, None] + torch.arange(groups)[None, :] * w  # (nnz, groups)
    vals = logical[rows[:, None], cols].float()
    width = int(counts.max())
    out_v = torch.full((r, width, groups), float("-inf"))
    out_i = torch.zeros((r, width, groups), dtype=torch.int64)
    out_v[rows, slot] = vals
    out_i[rows, slot] = cols
    return out_v.view(r, -1), out_i.view(r, -1)


class PreparedDatabase:
    """A database made ready for ``knn_torch_bf16`` once, for many query blocks: the
    rows as given, their GEMM copy (bf16, or float32 without bf16 hardware) and the
    norms the certificate needs. Build it once per database partition and pass it
    instead of the array: the bf16 copy and the norms are then not redone per call.
    """

    def __init__(self, database: np.ndarray, bf16: bool | None = None):
        import torch

        if database.ndim != 2:
            raise MinerError(f"database embeddings must be 2-d, got shape {database.shape}")
        self.bf16 = cpu_has_bf16() if bf16 is None else bf16
        self.array = database
        self.tdtype = torch.bfloat16 if self.bf16 else torch.float32
        self.yt = _to_gemm(database, self.tdtype)
        norms, errs = input_error_norms(database, self.bf16)
        self.norms, self.errs = norms, errs  # its rows as queries too (both directions)
        self.norm_max = float(norms.max()) if len(norms) else 0.0
        self.err_max = float(errs.max()) if len(errs) else 0.0

    @property
    def shape(self):
        return self.array.shape

    def __len__(self) -> int:
        return len(self.array)


def _to_gemm(x: np.ndarray, tdtype):
    """x (n, d) as a contiguous torch tensor of the GEMM dtype, one copy (no float32
    intermediate of the whole array for float16 input)."""
    import warnings

    import torch

    out = torch.empty(x.shape, dtype=tdtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only array: only read here
        for s0 in range(0, len(x), 65536):
            out[s0:s0 + 65536] = torch.from_numpy(np.ascontiguousarray(x[s0:s0 + 65536]))
    return out


def knn_torch_bf16(queries: np.ndarray, database, k: int,
                   shortlist: int | None = None, block: int = 16384,
                   query_block: int = 4096, bf16: bool | None = None,
                   stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by inner product via a bf16 GEMM shortlist.

    queries: (n, d), database: (m, d), float16/float32 numpy arrays (float16 rows
    are exact in fp32, so keeping the database in float16 saves half the memory), or
    a ``PreparedDatabase`` of one (its bf16 setting wins).
    k: neighbours; shortlist: approximate candidates kept per query (default
    ``2k + 16``: rarely does a query need the full redo); block: database rows per
    GEMM; query_block: query rows per GEMM; bf16: force the bf16 (True) or fp32
    (False) GEMM, None = bf16 when the CPU has it; stats: if given, ``stats["redone"]`` counts the queries redone in full, ``stats["rescored"]`` the pairs rescored exactly.

    Returns sims (n, k') float32 and ids (n, k') int64, k' = min(k, m), sorted by
    similarity descending then id ascending; sims are float64 dot products of the
    original vectors rounded to float32.
    """
    import torch

    prepared = database if isinstance(database, PreparedDatabase) else None
    db_array = prepared.array if prepared is not None else database
    if queries.ndim != 2 or db_array.ndim != 2 or queries.shape[1] != db_array.shape[1]:
        raise MinerError(f"embedding shapes do not match: queries {queries.shape}, "
                         f"database {db_array.shape}")
    n, m = len(queries), len(db_array)
    k = min(k, m)
    if k <= 0 or n == 0:
        return np.zeros((n, max(k, 0)), np.float32), np.zeros((n, max(k, 0)), np.int64)
    if prepared is None:
        prepared = PreparedDatabase(db_array, bf16)
    side = _side_for(queries, prepared, k, shortlist, block)
    sims_out = np.empty((n, k), np.float32)
    ids_out = np.empty((n, k), np.int64)
    with torch.inference_mode():
        for q0 in range(0, n, query_block):
            qb = queries[q0:q0 + query_block]
            qt = _to_gemm(qb, prepared.tdtype)
            best = None
            for y0 in range(0, m, side.block):
                best = _select(qt @ prepared.yt[y0:y0 + side.block].T, best, side.s, y0,
                               prepared.bf16)
            sims_out[q0:q0 + len(qb)], ids_out[q0:q0 + len(qb)] = side.finish(q0, best, stats)
    return sims_out, ids_out


def _select(scores, best, s: int, offset: int, bf16: bool, transposed: bool = False):
    """Merge the approximate top-s of each row of a score block (columns = database
    rows ``offset``...) into the running shortlist ``best`` = (values, rows) or None.
    ``transposed``: of the rows of ``scores.T`` (the block seen from the other side)."""
    import torch

    width = scores.shape[0 if transposed else 1]
    if (best is not None and bf16 and width % 16 == 0
            and bool((best[0][:, -1] >= 0).all())):
        # a full shortlist already: only entries above its worst matter
        found = _above_threshold(scores, best[0][:, -1], transposed=transposed)
        if found is None:
            return best
        v, i = found
    else:
        v, i = _topk_approx(scores, min(s, width), transposed=transposed)
    i = i + offset
    if best is not None:
        v, j = torch.topk(torch.cat([best[0], v], 1), s, dim=1)
        i = torch.gather(torch.cat([best[1], i], 1), 1, j)
    return v, i


class _Side:
    """One direction's fixed inputs for turning shortlists into certified exact top k."""

    def __init__(self, queries, database, yt, c_row, u_out, k, s, fast, norm_product,
                 block, tdtype):
        self.queries, self.database, self.yt = queries, database, yt
        self.c_row, self.u_out, self.k, self.s = c_row, u_out, k, s
        self.fast, self.norm_product, self.block, self.tdtype = fast, norm_product, block, tdtype

    def finish(self, q0: int, best, stats):
        """Exact top k of query rows q0... from their shortlist ``best``: rescore,
        certify, and redo in full the rows the certificate does not cover."""
        queries, database, k, s, u_out = self.queries, self.database, self.k, self.s, self.u_out
        cand = best[1].numpy()
        approx = best[0].numpy().astype(np.float64)  # (r, s), best first
        qb = queries[q0:q0 + len(cand)]
        left_out = approx[:, -1]  # bound on excluded scores
        c = self.c_row[q0:q0 + len(cand)]
        sims = _rescore(queries, qb, database, q0, cand, approx, c, u_out, k, self.fast, stats)
        sims, ids = sort_topk(sims, cand)
        sims, ids = sims[:, :k], ids[:, :k]
        kth = sims[:, -1].astype(np.float64)
        fp32_margin = 4 * U_FP32 * np.abs(kth) + 1e-30
        # scores left out are <= left_out; their exact sims are then below this
        bound = left_out + u_out * np.abs(left_out) + c + fp32_margin
        redo = np.flatnonzero(~((s >= len(database)) | (bound < kth)))
        if len(redo):
            if stats is not None:
                stats["redone"] = stats.get("redone", 0) + len(redo)
            thr = kth - c - u_out * (np.abs(kth) + c) - fp32_margin
            for r0 in range(0, len(redo), 256):  # bounded (256, block) score blocks
                sub = redo[r0:r0 + 256]
                sims[sub], ids[sub] = _redo_rows(queries, database, self.yt, q0 + sub, thr[sub],
                                                 k, self.block, self.tdtype,
                                                 self.norm_product if self.fast else None)
        return sims, ids


def _side_for(queries: np.ndarray, prepared: "PreparedDatabase", k: int,
              shortlist: int | None, block: int, norms=None) -> _Side:
    """The ``_Side`` of queries searched in a prepared database; ``norms``: the
    queries' ``input_error_norms`` when known (a prepared side of the same setting)."""
    m, d = prepared.shape
    q_norm, q_err = norms if norms is not None else input_error_norms(queries, prepared.bf16)
    c_row = score_error_bound(q_norm, q_err, prepared.norm_max, prepared.err_max, d)
    u_out = U_BF16 * 1.01 if prepared.bf16 else 0.0
    norm_product = 1.01 * float((q_norm + q_err).max()) * (prepared.norm_max + prepared.err_max)
    fast = (norm_product < EXACT_NORM_PRODUCT and queries.dtype == np.float16
            and prepared.array.dtype == np.float16)
    k = min(k, m)
    s = max(min(m, shortlist or 2 * k + 16), k)
    return _Side(queries, prepared.array, prepared.yt, c_row, u_out, k, s, fast, norm_product,
                 max(block, s), prepared.tdtype)


def knn_torch_bf16_both(x: PreparedDatabase, y: PreparedDatabase, k: int,
                        shortlist: int | None = None, block: int = 16384,
                        query_block: int = 4096, stats: dict | None = None,
                        on_block=None):
    """Both directions at once: the k nearest rows of y for every row of x (``fwd``)
    and of x for every row of y (``bwd``), from one GEMM per (x block, y block) tile.

    The bwd scores are the transpose of the fwd ones, so each tile is computed once
    and shortlisted along its rows (fwd, finished per x block) and its columns (bwd,
    shortlists kept for every y row until the last x block). Rescoring and the
    certificate are those of ``knn_torch_bf16``, so each direction's result is
    identical to it. x, y: ``PreparedDatabase`` of one bf16 setting. ``on_block(rows)``
    is called after each x block. Returns ((sims, ids) fwd, (sims, ids) bwd).
    """
    import torch

    if x.bf16 != y.bf16 or x.shape[1] != y.shape[1]:
        raise MinerError(f"embedding shapes do not match: {x.shape}, {y.shape}")
    n, m = len(x), len(y)
    fwd = _side_for(x.array, y, k, shortlist, block, (x.norms, x.errs))
    bwd = _side_for(y.array, x, k, shortlist, block, (y.norms, y.errs))
    kf, kb = min(k, m), min(k, n)
    out_f = (np.empty((n, kf), np.float32), np.empty((n, kf), np.int64))
    out_b = (np.empty((m, kb), np.float32), np.empty((m, kb), np.int64))
    if n == 0 or m == 0 or k <= 0:
        return out_f, out_b
    bf16 = x.bf16
    col_best: list = [None] * (-(-m // fwd.block))  # bwd shortlists, per y block
    with torch.inference_mode():
        for q0 in range(0, n, query_block):
            qt = x.yt[q0:q0 + query_block]
            best = None
            for b, y0 in enumerate(range(0, m, fwd.block)):
                scores = qt @ y.yt[y0:y0 + fwd.block].T
                best = _select(scores, best, fwd.s, y0, bf16)
                col_best[b] = _select(scores, col_best[b], bwd.s, q0, bf16, transposed=True)
            rows = slice(q0, q0 + len(qt))
            out_f[0][rows], out_f[1][rows] = fwd.finish(q0, best, stats)
            if on_block is not None:
                on_block(len(qt))
        for b, y0 in enumerate(range(0, m, fwd.block)):
            rows = slice(y0, y0 + fwd.block)
            out_b[0][rows], out_b[1][rows] = bwd.finish(y0, col_best[b], stats)
    return out_f, out_b


def _rescore(queries, qb, database, q0, cand, approx, c, u_out, k, fast, stats):
    """Exact similarities of the shortlisted candidates that can still be in the top k
    (r, s) float32; -inf for the others.

    Every approximate score a is within ``c + u_out |a|`` of the exact one, so a
    candidate whose upper bound is below the lowest lower bound of the k best
    approximate ones has k candidates strictly above it (by more than the float32
    rounding of the stored similarity): it can never be in the top k, and it is not
    rescored. The shortlist is sorted by approximate score, so the candidates kept are
    a prefix of each row. Which candidates are rescored depends on the blocking only
    through the shortlist; the top k does not (the exact sims are functions of the pair).
    """
    r, s = cand.shape
    upper = approx + u_out * np.abs(approx) + c[:, None]
    lower = (approx[:, :k] - u_out * np.abs(approx[:, :k]) - c[:, None]).min(1)
    lower -= 4 * U_FP32 * np.abs(lower) + 1e-30  # ties after rounding to float32
    need = upper >= lower[:, None]  # a prefix of each row, at least k long
    need[:, :k] = True
    rows, cols = np.nonzero(need)
    if stats is not None:
        stats["rescored"] = stats.get("rescored", 0) + len(rows)
    sims = np.full((r, s), -np.inf, np.float32)
    if fast:
        q32 = np.asarray(qb, np.float32)  # one conversion per query block
        sims[rows, cols] = _pair_sims(q32, rows, database, cand[rows, cols])
    else:
        sims[rows, cols] = exact_sims(queries, database, q0 + rows, cand[rows, cols])
    return sims


def _redo_rows(queries, database, yt, rows, thresholds, k, block, tdtype, norm_product=None):
    """Exact top-k of the given query rows from every database row whose approximate
    score reaches the row's threshold (which no true top-k neighbour falls below)."""
    import torch

    qt = _to_gemm(queries[rows], tdtype)
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
    ps = exact_sims(queries, database, rows[pr], pc, norm_product)
    order = np.lexsort((pc, -ps, pr))
    pr, pc, ps = pr[order], pc[order], ps[order]
    starts = np.searchsorted(pr, np.arange(len(rows)))
    take = starts[:, None] + np.arange(k)[None, :]
    # every row has >= k candidates: its k shortlisted neighbours pass the threshold
    assert (np.diff(np.append(starts, len(pr))) >= k).all()
    return ps[take], pc[take]
