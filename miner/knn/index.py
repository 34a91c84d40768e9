"""Approximate faiss indexes for databases too large for exact search.

``--index`` is ``flat`` (exact, no faiss index: see ``miner.knn.sharded``), ``ivf``
(IVF-Flat), ``ivfpq`` (OPQ rotation + IVF + PQ codes) or ``auto``, which chooses by
database size as stopes does: exact below about a million vectors, IVF-Flat below
about ten million, OPQ+IVF+PQ above (stopes' large-scale default is
``OPQ64,IVF65536,PQ64``; ours uses 4-bit fast-scan codes of the same size, d/4
sub-quantizers, which train in seconds rather than minutes). Training uses a deterministic sample (fixed seed).
Inner product everywhere: embeddings are L2-normalised.
"""

from __future__ import annotations

import math

import numpy as np

from miner.config import INDEX_KINDS
from miner.errors import MinerError

AUTO_FLAT_MAX = 1_000_000
AUTO_IVF_MAX = 10_000_000
TRAIN_PER_LIST = 64  # training vectors per inverted list (faiss warns below 39)


def choose_index(kind: str, n: int) -> str:
    """``flat`` | ``ivf`` | ``ivfpq`` for a database of n vectors (resolves ``auto``)."""
    if kind not in INDEX_KINDS:
        raise MinerError(f"unknown index {kind!r}: expected one of {', '.join(INDEX_KINDS)}")
    if kind != "auto":
        return kind
    if n < AUTO_FLAT_MAX:
        return "flat"
    return "ivf" if n < AUTO_IVF_MAX else "ivfpq"


def n_lists(n: int) -> int:
    """Inverted lists for n vectors: about 4 sqrt(n), a power of two, 16 .. 65536."""
    return int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))


def factory_string(kind: str, n: int, d: int) -> str:
    """The faiss ``index_factory`` string for ``ivf`` or ``ivfpq`` over n vectors of dim d."""
    nlist = n_lists(n)
    if kind == "ivf":
        return f"IVF{nlist},Flat"
    if kind == "ivfpq":
        # 4-bit fast-scan PQ on residuals: d/4 sub-quantizers (64 bytes per vector at
        # d=512, like stopes' 8-bit PQ64) train in seconds and search with SIMD
        m = min(128, d // 4) if d >= 128 else max(1, d // 2)
        while d % m:
            m -= 1
        # the OPQ rotation pays off on real embedding sizes; it is slow to train
        return f"OPQ{m},IVF{nlist},PQ{m}x4fsr" if d >= 128 else f"IVF{nlist},PQ{m}x4fsr"
    raise MinerError(f"no faiss index for {kind!r}")


def train_sample(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices (int64) of a deterministic sample of ``size`` rows out of n."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False)).astype(np.int64)


def train_size(kind: str, n: int) -> int:
    """How many vectors to train on: enough for the lists (and PQ codebooks)."""
    need = TRAIN_PER_LIST * n_lists(n)
    if kind == "ivfpq":
        need = max(need, 256 * 64)
    return min(n, need)


def build_index(kind: str, n: int, d: int, train: np.ndarray, nprobe: int,
                use_gpu: bool | None = None):
    """An empty trained faiss index (inner product) for n vectors of dim d.

    train: (t, d) float32 training sample (see ``train_sample``); nprobe: lists
    visited per query. With faiss-gpu and visible GPUs (``use_gpu=None``) the index
    is cloned onto all of them (see ``to_gpus``); ``use_gpu=False`` keeps it on the
    CPU (what ``write_index`` needs). Add vectors with ``index.add`` and search with
    ``index.search``.
    """
    import faiss

    faiss.omp_set_num_threads(faiss.omp_get_max_threads())
    index = faiss.index_factory(d, factory_string(kind, n, d), faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    faiss.extract_index_ivf(index).nprobe = nprobe
    if use_gpu is None:
        use_gpu = gpus_available()
    if use_gpu:  # pragma: no cover - no GPU in CI
        index = to_gpus(index, kind, n, d, nprobe)
    return index


def gpus_available() -> bool:
    """Whether this process's faiss is faiss-gpu and sees a GPU."""
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def to_gpus(index, kind: str, n: int, d: int, nprobe: int):  # pragma: no cover - no GPU in CI
    """A CPU IVF index cloned onto every visible GPU: replicated when small, sharded
    when its data would not fit one GPU."""
    import faiss

    co = faiss.GpuMultipleClonerOptions()
    bytes_per_vec = 4 * d if kind == "ivf" else 64
    co.shard = n * bytes_per_vec > 4 << 30
    co.useFloat16 = True
    index = faiss.index_cpu_to_all_gpus(index, co)
    faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return index


def write_index(index, path) -> None:
    """Write a CPU faiss index to ``path`` atomically (a reader never sees half a file)."""
    import faiss

    from miner.io import atomic_path

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path, nprobe: int | None = None, mmap: bool = True):
    """Read an index written by ``write_index``. ``mmap``: map the inverted lists
    read-only instead of copying them (processes on one node then share the page
    cache); ``nprobe``: lists visited per query (None: as stored)."""
    import faiss

    from miner.storage import RemotePath, as_path

    if isinstance(as_path(path), RemotePath):
        # faiss reads local files only: keep a node-local copy, named by the index's
        # content hash (``index_file``), so each node downloads it once
        import shutil
        import tempfile
        from pathlib import Path

        from miner.io import atomic_path

        local = Path(tempfile.gettempdir()) / "miner-index-cache" / as_path(path).name
        if not local.exists():
            with atomic_path(local) as tmp, as_path(path).open("rb") as src, \
                    open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        path = local
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(path), flags)
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    return index


def index_searcher(index, k: int):
    """``search(queries) -> (sims (n, k') float32, ids (n, k') int64)`` over a faiss
    index, sorted by sim then id, -1 padding where a query's probed lists hold fewer
    than k vectors. A CPU IVF-Flat index is searched as bf16 GEMMs list by list
    (``miner.knn.ivf_gemm``: its lists are prepared here, once); IVF-PQ and GPU
    indexes by faiss."""
    import importlib.util

    import faiss

    # torch is an extra (miner[st]); without it faiss searches (as ``auto_backend``)
    if (isinstance(faiss.downcast_index(index), faiss.IndexIVFFlat)
            and importlib.util.find_spec("torch") is not None):
        from miner.knn.ivf_gemm import IvfLists

        lists = IvfLists(index)
        return lambda queries: lists.search(queries, k)

    def search(queries):
        from miner.knn.topk import sort_topk

        kk = min(k, index.ntotal)
        sims, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), kk)
        return sort_topk(sims, ids.astype(np.int64))
    return search


def index_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index_searcher(index, k)(queries)``: one search (a searcher of its own)."""
    return index_searcher(index, k)(queries)


def recall_at_k(ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-k ids (n, k) found among ids (n, k)."""
    hits = [len(np.intersect1d(a, b)) for a, b in zip(ids, exact_ids)]
    return float(np.sum(hits) / exact_ids.size)
