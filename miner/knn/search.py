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
from typing import Iterator

import numpy as np

from miner.formats.embeddings import read_embeddings, read_ids
from miner.formats.neighbours import write_knn_shard
from miner.knn.sharded import mean_topk
from miner.storage import as_path

log = logging.getLogger(__name__)


class Database:
    """The searched side: shards read into partitions of at most ``part_rows`` rows.

    When everything fits one partition it is read once and kept; otherwise each
    ``partitions()`` call reads the shards again (bounded memory, more I/O).
    """

    def __init__(self, paths: list[Path], rows: list[int], part_rows: int):
        self.paths, self.rows, self.part_rows = paths, rows, part_rows
        self.n = sum(rows)
        self._cached: list[np.ndarray] | None = None

    def ids(self) -> np.ndarray:
        return read_ids(self.paths)

    def partitions(self) -> Iterator[np.ndarray]:
        if self._cached is not None:
            yield from self._cached
            return
        parts = list(self._read())
        if len(parts) == 1:
            self._cached = parts
        yield from parts

    def _read(self) -> Iterator[np.ndarray]:
        """Partitions filled shard by shard into preallocated arrays (no double copy)."""
        buf, fill = None, 0
        for p in self.paths:
            _, emb = read_embeddings(p)
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
                 db_ids: np.ndarray, q_block: int, k: int) -> int:
    """Search one query shard and write its neighbour shard ``out/{q_path name}``;
    returns the rows written.

    ``search(block) -> (sims, rows)`` is called on consecutive blocks of ``q_block``
    query rows (float16 as stored, made writable); rows are global database rows,
    -1 for a slot an approximate index could not fill, which becomes id 0 and
    similarity -inf (``mean_sim`` then averages the valid slots). The single-process
    stage and the executor tasks (``miner.knn.distributed``) both write through here.
    """
    q_path = as_path(q_path)
    ids, emb = read_embeddings(q_path)
    emb = np.array(emb)  # writable (torch warns on read-only Arrow memory)
    sims_l, rows_l = [], []
    for s0 in range(0, len(emb), q_block):
        sims, rows = search(emb[s0:s0 + q_block])
        sims_l.append(sims)
        rows_l.append(rows)
    kk = min(k, len(db_ids))
    sims = np.concatenate(sims_l) if sims_l else np.zeros((0, kk), np.float32)
    rows = np.concatenate(rows_l) if rows_l else np.zeros((0, kk), np.int64)
    valid = rows >= 0  # approximate indexes may return fewer than k
    nbr = np.where(valid, db_ids[np.where(valid, rows, 0)], np.uint64(0)).astype(np.uint64)
    sims = np.where(valid, sims, -np.inf).astype(np.float32)
    mean = mean_topk(sims) if valid.all() else _masked_mean(sims, valid)
    write_knn_shard(as_path(out) / q_path.name, ids, nbr, sims, mean)
    log.info("knn %s: %s done (%d queries)", out, q_path.name, len(ids))
    return len(ids)


def _masked_mean(sims: np.ndarray, valid: np.ndarray) -> np.ndarray:
    total = np.where(valid, sims, 0).astype(np.float64).sum(1)
    return (total / np.maximum(valid.sum(1), 1)).astype(np.float32)
