"""Exact inner-product kNN: faiss flat search, a numpy reference, and the backend dispatch.

Top-k ordering and merging (``sort_topk``, ``merge_topk``) live in ``miner.knn.topk``
and are re-exported here.
"""

from __future__ import annotations

import numpy as np

from miner.config import KNN_BACKENDS
from miner.errors import MinerError
from miner.knn.topk import merge_topk, sort_topk  # noqa: F401 - re-exported (miner.knn, callers)


def _check(queries: np.ndarray, database: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    y = np.ascontiguousarray(database, dtype=np.float32)
    if q.ndim != 2 or y.ndim != 2 or q.shape[1] != y.shape[1]:
        raise MinerError(f"embedding shapes do not match: queries {q.shape}, database {y.shape}")
    return q, y


def knn_numpy(queries: np.ndarray, database: np.ndarray, k: int,
              block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Reference exact search in numpy fp32, blocked over queries.

    queries: (n, d), database: (m, d) -> sims (n, k') float32, ids (n, k') int64 with
    k' = min(k, m).
    """
    q, y = _check(queries, database)
    k = min(k, y.shape[0])
    sims_out = np.empty((q.shape[0], k), dtype=np.float32)
    ids_out = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], block):
        s = q[start:start + block] @ y.T
        ids = np.broadcast_to(np.arange(y.shape[0], dtype=np.int64), s.shape)
        # full sort: a reference, not a fast path; ties go to the lower id
        order = np.lexsort((ids, -s), axis=-1)[:, :k]
        sims_out[start:start + block] = np.take_along_axis(s, order, 1)
        ids_out[start:start + block] = order
    return sims_out, ids_out


def knn_faiss(queries: np.ndarray, database: np.ndarray, k: int,
              use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact search with a faiss IndexFlatIP (all GPUs when faiss-gpu sees any).

    queries: (n, d), database: (m, d) -> sims (n, k') float32, ids (n, k') int64,
    k' = min(k, m), rows sorted by similarity then id.
    """
    import faiss

    q, y = _check(queries, database)
    k = min(k, y.shape[0])
    index = faiss.IndexFlatIP(y.shape[1])
    if use_gpu is None:
        use_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if use_gpu:  # pragma: no cover - no GPU in CI
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(y)
    sims, ids = index.search(q, k)
    return sort_topk(sims, ids.astype(np.int64))


def knn_search(queries: np.ndarray, database: np.ndarray, k: int,
               backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each query row among the database rows.

    backend: ``auto`` | ``faiss`` | ``numpy`` | ``torch`` | ``triton``; ``auto`` is
    triton on a CUDA machine with triton installed, faiss on CUDA without it, and the
    exact CPU torch path on a machine without CUDA (see ``auto_backend``).
    Returns sims (n, k') float32 and ids (n, k') int64, k' = min(k, m).
    """
    if backend == "auto":
        backend = auto_backend()
    if backend == "faiss":
        return knn_faiss(queries, database, k)
    if backend == "numpy":
        return knn_numpy(queries, database, k)
    if backend == "triton":
        _require("triton", "the triton kNN backend")
        from miner.knn.triton_kernel import knn_triton

        sims, ids, _ = knn_triton(queries, database, k)
        return sims, ids
    if backend == "torch":
        _require("torch", "the torch kNN backend")
        import torch

        if not torch.cuda.is_available():  # CPU: bf16 GEMM shortlist + exact rescore
            from miner.knn.cpu_bf16 import knn_torch_bf16

            return knn_torch_bf16(queries, database, k)
        from miner.knn.torch_knn import knn_torch

        return knn_torch(queries, database, k)
    raise MinerError(f"unknown kNN backend {backend!r}: expected one of {', '.join(KNN_BACKENDS)}")


def auto_backend() -> str:
    """``triton`` on CUDA when triton is installed; on a CPU-only machine with torch,
    ``torch`` (``knn_torch_bf16``: bf16 GEMM + exact rescore); else faiss.

    Imports nothing that is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("torch") and importlib.util.find_spec("triton"):
        import torch

        if torch.cuda.is_available():
            return "triton"
    if importlib.util.find_spec("torch"):
        import torch

        if not torch.cuda.is_available():
            return "torch"  # CPU: exact via bf16 GEMM (fp32 GEMM without bf16 hardware)
    return "faiss"


def _require(module: str, what: str) -> None:
    """Fail with the install line when an optional package is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MinerError(f"{what} needs {module}: pip install 'miner[gpu]'")
