"""Searching one query shard and writing its neighbour shard: the pieces that the
single-process ``knn`` stage (``miner.knn.stage``) and the executor tasks
(``miner.knn.distributed``) share.

Both import from here, and this module imports neither, so ``miner.knn.distributed``
never imports ``miner.knn.stage`` (the stage imports ``miner.knn.distributed`` lazily,
only for a cluster executor). ``miner.knn.stage`` re-exports these names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from miner.formats.embeddings import read_embeddings, read_ids
from miner.formats.neighbours import ids_digest, write_knn_shard
from miner.knn.sharded import mean_topk
from miner.storage import as_path

log = logging.getLogger(__name__)


def load_embeddings(path) -> np.ndarray:
    """The embeddings of one shard as stored (writable, C-contiguous)."""
    return read_embeddings(as_path(path))[1]


class Database:
    """The searched side: shards read into partitions of at most ``part_rows`` rows.

    When everything fits one partition it is read once and kept; otherwise each
    ``partitions()`` call reads the shards again (bounded memory, more I/O).
    ``load(path) -> (n, d) array`` reads one shard (the stage passes one that keeps
    shards decoded across directions when they fit). With ``prepare`` (the CPU bf16
    path) partitions come as ``PreparedDatabase`` objects (their bf16 copy and norms
    made once per partition, not once per query shard).
    """

    def __init__(self, paths: list[Path], rows: list[int], part_rows: int,
                 load: Callable = load_embeddings, prepare: bool = False):
        self.paths, self.rows, self.part_rows = paths, rows, part_rows
        self.n = sum(rows)
        self.load, self.prepare = load, prepare
        self._cached: list | None = None

    def ids(self) -> np.ndarray:
        return read_ids(self.paths)

    def partitions(self) -> Iterator:
        if self._cached is not None:
            yield from self._cached
            return
        parts = [self._prepared(p) for p in self._read()] if self.n <= self.part_rows else None
        if parts is not None:
            self._cached = parts
            yield from parts
            return
        for part in self._read():
            yield self._prepared(part)

    def _prepared(self, part: np.ndarray):
        if not self.prepare:
            return part
        from miner.knn.cpu_bf16 import PreparedDatabase

        return PreparedDatabase(part)

    def _read(self) -> Iterator[np.ndarray]:
        """Partitions filled shard by shard into preallocated arrays (no double copy;
        a single shard that is a whole partition is used as loaded)."""
        if len(self.paths) == 1 and self.n <= self.part_rows:
            yield self.load(self.paths[0])
            return
        buf, fill = None, 0
        for p in self.paths:
            emb = self.load(p)
            while len(emb):
                if buf is None:
                    size = min(self.part_rows, self.n)
                    buf, fill = np.empty((size, emb.shape[1]), emb.dtype), 0
                take = min(len(emb), len(buf) - fill)
                buf[fill:fill + take] = emb[:take]
                fill += take
                emb = emb[take:]
                if fill == len(buf):
                    yield buf
                    buf = None
            del emb
        if buf is not None and fill:
            yield buf[:fill]


# -- one query shard -------------------------------------------------------------

def search_shard(q_path: str | Path, fingerprint: dict, out: str | Path, search,
                 db_ids: np.ndarray, q_block: int, k: int,
                 load: Callable = load_embeddings, progress=None) -> int:
    """Search one query shard and write its neighbour shard ``out/{q_path name}``;
    returns the rows written.

    ``search(block) -> (sims, rows)`` is called on consecutive blocks of ``q_block``
    query rows (float16 as stored, made writable); rows are global database rows,
    -1 for a slot an approximate index could not fill, which becomes id 0 and
    similarity -inf (``mean_sim`` then averages the valid slots). The single-process
    stage and the executor tasks (``miner.knn.distributed``) both write through here.
    ``load(path)`` reads the query embeddings (writable); ``progress`` (a
    ``miner.progress.Progress``) advances by the queries of each block.
    """
    q_path = as_path(q_path)
    emb = load(q_path)
    ids = read_ids([q_path])
    sims_l, rows_l = [], []
    for s0 in range(0, len(emb), q_block):
        sims, rows = search(emb[s0:s0 + q_block])
        sims_l.append(sims)
        rows_l.append(rows)
        if progress is not None:
            progress.update(len(sims))
    kk = min(k, len(db_ids))
    sims = np.concatenate(sims_l) if sims_l else np.zeros((0, kk), np.float32)
    rows = np.concatenate(rows_l) if rows_l else np.zeros((0, kk), np.int64)
    valid = rows >= 0  # approximate indexes may return fewer than k
    nbr = np.where(valid, db_ids[np.where(valid, rows, 0)], np.uint64(0)).astype(np.uint64)
    sims = np.where(valid, sims, -np.inf).astype(np.float32)
    mean = mean_topk(sims) if valid.all() else _masked_mean(sims, valid)
    write_knn_shard(as_path(out) / q_path.name, ids, nbr, sims, mean,
                    np.where(valid, rows, -1), ids_digest(db_ids))
    log.info("knn %s: %s done (%d queries)", out, q_path.name, len(ids))
    return len(ids)


def _masked_mean(sims: np.ndarray, valid: np.ndarray) -> np.ndarray:
    total = np.where(valid, sims, 0).astype(np.float64).sum(1)
    return (total / np.maximum(valid.sum(1), 1)).astype(np.float32)
