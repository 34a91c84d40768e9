"""The exact (flat) kNN of one direction as executor tasks, for ``--executor ray``.

Two steps over the query shards Q_i and the database partitions P_j (``part_rows``
rows of the concatenated database shards, as ``Database`` cuts them):

1. ``search_partition``: one task per (Q_i, P_j). It reads Q_i and only the database
   shards overlapping P_j, searches in the same query blocks as the single-process
   stage, and writes (sims, global rows, sentence ids), each (n_i, k'), to
   ``{out}/.partial/{Q_i}.{j}.npz`` on the shared filesystem (atomically; an existing
   partial of the same fingerprint is reused on a rerun).
2. ``merge_shard``: one task per Q_i: the top-k of the union of its partials, ordered
   by similarity then global row as ``merge_topk`` orders them, so the result is the
   one searching partitions in turn gives, bit for bit; writes the neighbour shard
   with its fingerprint and removes the partials.

Workers exchange nothing but file names: every array goes through ``out``.

The approximate indexes (``--index ivf|ivfpq``) need no merge: the driver trains and
fills the index once and writes it to ``{out}/.index/{hash}.faiss``; then
``search_index_shard`` is one task per query shard, which maps the index file
read-only, searches and writes the neighbour shard through the same
``miner.knn.search.search_shard`` as the single-process stage.

This module imports ``miner.knn.search`` (shared with the stage), never
``miner.knn.stage``, which imports this one (lazily) for a cluster executor.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from miner.io import atomic_path
from miner.storage import AnyPath, as_path, read_table
from miner.formats.embeddings import read_embeddings, read_ids
from miner.formats.neighbours import ids_digest, write_knn_shard
from miner.knn.search import search_shard
from miner.rundir import KNN_PARTIAL
from miner.knn.sharded import knn_partitions, mean_topk


@dataclass(frozen=True)
class DirectionPlan:
    """What every task of one direction needs (small, pickled to the workers)."""

    out: str                    # DIR/knn/{pair}/{direction}
    db_paths: tuple[str, ...]   # database embedding shards, in order
    db_rows: tuple[int, ...]
    part_rows: int              # rows per database partition
    q_block: int                # query rows per search block
    k: int
    backend: str

    def partitions(self) -> list[tuple[int, int]]:
        """(start, stop) global rows of each database partition."""
        n = sum(self.db_rows)
        return [(s, min(s + self.part_rows, n)) for s in range(0, n, self.part_rows)] or [(0, 0)]


def _partial_path(plan: DirectionPlan, q_name: str, j: int, fingerprint: dict) -> AnyPath:
    key = hashlib.sha256(json.dumps([fingerprint, plan.part_rows, plan.q_block], sort_keys=True)
                         .encode()).hexdigest()[:12]
    return as_path(plan.out) / KNN_PARTIAL / f"{q_name}.{j:05d}.{key}.npz"


def _read_rows(plan: DirectionPlan, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Database rows [start, stop) in storage dtype, and their sentence ids."""
    embs, ids, offset = [], [], 0
    for path, n in zip(plan.db_paths, plan.db_rows):
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            i, e = read_embeddings(as_path(path))
            embs.append(e[lo - offset:hi - offset])
            ids.append(i[lo - offset:hi - offset])
        offset += n
    if not embs:
        return np.zeros((0, 1), np.float16), np.zeros(0, np.uint64)
    return np.concatenate(embs), np.concatenate(ids)


def search_partition(item: tuple[str, int, dict], plan: DirectionPlan) -> str:
    """Task 1: top-k of query shard ``item[0]`` in database partition ``item[1]``;
    returns the partial's path."""
    q_path, j, fingerprint = item
    dest = _partial_path(plan, as_path(q_path).name, j, fingerprint)
    if dest.exists():
        return str(dest)
    start, stop = plan.partitions()[j]
    part, part_ids = _read_rows(plan, start, stop)
    _, emb = read_embeddings(as_path(q_path))
    kk = min(plan.k, sum(plan.db_rows))
    sims_l, rows_l = [], []
    for s0 in range(0, len(emb), plan.q_block):
        s, r = knn_partitions(emb[s0:s0 + plan.q_block], [part], plan.k, plan.backend)
        sims_l.append(s)
        rows_l.append(r)
    width = min(kk, len(part))
    sims = np.concatenate(sims_l) if sims_l else np.zeros((0, width), np.float32)
    rows = np.concatenate(rows_l) if rows_l else np.zeros((0, width), np.int64)
    ids = part_ids[np.maximum(rows, 0)] if len(part_ids) else np.zeros(rows.shape, np.uint64)
    buf = io.BytesIO()
    np.savez(buf, sims=sims.astype(np.float32), rows=(rows + start).astype(np.int64),
             ids=ids.astype(np.uint64))
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buf.getvalue())
    return str(dest)


def merge_shard(item: tuple[str, dict, list[str]], plan: DirectionPlan, rows_of: str) -> int:
    """Task 2: merge the partials of one query shard into its neighbour shard; returns
    the rows written. ``rows_of``: ``ids_digest`` of the database ids (global rows)."""
    q_path, fingerprint, partials = item
    parts = [np.load(io.BytesIO(as_path(p).read_bytes())) for p in partials]
    sims = np.concatenate([p["sims"] for p in parts], axis=1)
    rows = np.concatenate([p["rows"] for p in parts], axis=1)
    ids = np.concatenate([p["ids"] for p in parts], axis=1)
    # merge_topk's order: similarity descending, then the lower global row
    order = np.lexsort((rows, -sims), axis=-1)[:, :min(plan.k, sum(plan.db_rows))]
    sims = np.take_along_axis(sims, order, 1).astype(np.float32)
    nbr = np.take_along_axis(ids, order, 1).astype(np.uint64)
    nbr_rows = np.take_along_axis(rows, order, 1).astype(np.int64)
    q_ids = read_table(q_path, columns=["id"]).column("id").to_numpy()
    write_knn_shard(as_path(plan.out) / as_path(q_path).name, q_ids, nbr, sims, mean_topk(sims),
                    nbr_rows, rows_of)
    for p in partials:
        as_path(p).unlink(missing_ok=True)
    return len(q_ids)


def run_direction(executor, plan: DirectionPlan, todo: list[tuple[Path, dict]],
                  num_gpus: float = 0) -> list[int]:
    """Search and merge the query shards ``todo`` ((path, fingerprint) pairs) on
    ``executor``; returns the queries searched per shard."""
    if not todo:
        return []
    n_parts = len(plan.partitions())
    items = [(str(q), j, fp) for q, fp in todo for j in range(n_parts)]
    # partials of an interrupted run with other settings or shards would never be used
    wanted = {_partial_path(plan, as_path(q).name, j, fp).name for q, j, fp in items}
    for stale in (as_path(plan.out) / KNN_PARTIAL).glob("*.npz"):
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)
    paths = executor.map(partial(search_partition, plan=plan), items,
                         desc=f"knn {as_path(plan.out).name} search", num_gpus=num_gpus)
    merges = [(str(q), fp, paths[i * n_parts:(i + 1) * n_parts]) for i, (q, fp) in enumerate(todo)]
    # the digest of the database ids, once for every merge task (stored with the rows)
    rows_of = ids_digest(read_ids([as_path(p) for p in plan.db_paths]))
    rows = executor.map(partial(merge_shard, plan=plan, rows_of=rows_of), merges,
                        desc=f"knn {as_path(plan.out).name} merge")
    partial_dir = as_path(plan.out) / KNN_PARTIAL
    if partial_dir.exists() and not any(partial_dir.iterdir()):
        partial_dir.rmdir()
    return rows


# -- approximate indexes (IVF / IVF-PQ) ------------------------------------------------

@dataclass(frozen=True)
class IndexPlan:
    """What every search task of one approximate-index direction needs."""

    out: str                    # DIR/knn/{pair}/{direction}
    index_path: str             # the trained, filled CPU index (``write_index``)
    db_paths: tuple[str, ...]   # database embedding shards, in order (row -> sentence id)
    q_block: int                # query rows per search block
    k: int
    nprobe: int
    kind: str = "ivf"           # ivf | ivfpq (how a GPU clone is laid out)
    threads: int = 1            # faiss OpenMP threads per task (= the task's num_cpus)
    gpu: bool = False           # clone the index onto the task's GPU (faiss-gpu)


def search_index_shard(item: tuple[str, dict], plan: IndexPlan) -> int:
    """One task: search query shard ``item[0]`` in the index file and write its
    neighbour shard with fingerprint ``item[1]``; returns the rows written."""
    import faiss

    from miner.knn.index import gpus_available, index_searcher, read_index, to_gpus

    q_path, fingerprint = item
    faiss.omp_set_num_threads(max(1, plan.threads))
    # memory-mapped inverted lists: tasks on one node share the page cache, no copy
    index = read_index(plan.index_path, plan.nprobe, mmap=True)
    if plan.gpu and gpus_available():  # pragma: no cover - no GPU in CI
        index = to_gpus(index, plan.kind, index.ntotal, index.d, plan.nprobe)
    db_ids = read_ids([as_path(p) for p in plan.db_paths])

    from miner.knn.stage import search_threads

    with search_threads(max(1, plan.threads)):  # torch's GEMMs too: the task's cores only
        search = index_searcher(index, plan.k)
        return search_shard(q_path, fingerprint, plan.out, search, db_ids, plan.q_block, plan.k)


def run_index_direction(executor, plan: IndexPlan, todo: list[tuple[Path, dict]],
                        num_cpus: float = 1, num_gpus: float = 0) -> list[int]:
    """Search the query shards ``todo`` ((path, fingerprint) pairs) in ``plan.index_path``,
    one ``executor`` task each; returns the queries searched per shard."""
    if not todo:
        return []
    rows = executor.map(partial(search_index_shard, plan=plan),
                        [(str(q), fp) for q, fp in todo],
                        desc=f"knn {as_path(plan.out).name} search", num_cpus=num_cpus,
                        num_gpus=num_gpus)
    return rows
