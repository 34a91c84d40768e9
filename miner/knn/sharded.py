"""Exact kNN when neither side fits in memory: query blocks x database partitions.

Like faiss ``contrib/exhaustive_search.knn_ground_truth``: each query block is
searched against every database partition in turn and the per-partition top-k are
merged exactly (``merge_topk``). Database ids are global row indices into the
concatenation of the partitions, so ties go to the lower row whatever the partition
sizes, and the result equals searching the whole database at once. Rows are mapped
to sentence ids (uint64 hashes) only by the stage that writes them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from miner.knn.exact import knn_search, merge_topk

SCRATCH_BYTES = 384 << 20  # GEMM blocks, shortlists, rescoring, Parquet buffers


def resolve_backend(backend: str) -> str:
    """``auto`` -> the backend ``knn_search`` would use (so block sizes can follow it)."""
    if backend != "auto":
        return backend
    from miner.knn.exact import auto_backend

    return auto_backend()


def bytes_per_db_row(d: int, backend: str) -> int:
    """Memory per resident database row: float16 rows plus the backend's own copy
    (bf16 for torch: 2 + 2 bytes per value; float32 + faiss's float32 copy: 2 + 4 + 4)."""
    if backend == "torch":
        from miner.knn.cpu_bf16 import cpu_has_bf16

        return d * (4 if cpu_has_bf16() else 6)  # float32 GEMM without bf16 hardware
    return d * (4 if backend == "triton" else 10)


def plan_blocks(max_memory: int, d: int, n_queries: int, n_db: int,
                backend: str) -> tuple[int, int]:
    """(database rows per partition, query rows per block) within ``max_memory`` bytes.

    Three fifths of what is left after a fixed scratch allowance hold a database
    partition, the rest a query block (float16 + backend copy + float32 outputs).
    """
    room = max(max_memory - SCRATCH_BYTES, 64 << 20)
    db_rows = max(1024, int(0.6 * room) // bytes_per_db_row(d, backend))
    q_rows = max(256, int(0.4 * room) // (d * 8 + 256))
    return min(db_rows, max(n_db, 1)), min(q_rows, max(n_queries, 1))


def mean_topk(sims: np.ndarray) -> np.ndarray:
    """Per-row mean of top-k similarities (n, k) -> (n,) float32 (margin denominators);
    summed in float64 in a fixed order, so it depends on the row alone."""
    if sims.shape[1] == 0:
        return np.zeros(len(sims), np.float32)
    return sims.astype(np.float64).mean(axis=1).astype(np.float32)


def knn_partitions(queries: np.ndarray, partitions: Iterable[np.ndarray], k: int,
                   backend: str = "auto", search: Callable | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of queries (n, d) over database partitions (m_i, d), in order.

    Returns sims (n, k') float32 and ids (n, k') int64, k' = min(k, sum m_i), ids
    global rows of the concatenated partitions; identical for any partitioning.
    search(q, part, k) -> (sims, ids) defaults to ``knn_search(..., backend)``.
    """
    search = search or (lambda q, y, kk: knn_search(q, y, kk, backend))
    best_s = np.zeros((len(queries), 0), np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    offset = 0
    for part in partitions:
        if len(part):
            s, i = search(queries, part, k)
            best_s, best_i = merge_topk(best_s, best_i, s, i + offset, k)
        offset += len(part)
    return best_s, best_i


def regroup(blocks: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of row blocks (m_i, d) into blocks of ``rows`` rows (last shorter)."""
    buf: list[np.ndarray] = []
    have = 0
    for b in blocks:
        while len(b):
            take = b[:rows - have]
            buf.append(take)
            have += len(take)
            b = b[len(take):]
            if have == rows:
                yield buf[0] if len(buf) == 1 else np.concatenate(buf)
                buf, have = [], 0
    if have:
        yield buf[0] if len(buf) == 1 else np.concatenate(buf)
