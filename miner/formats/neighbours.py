"""Neighbour shards: ``knn/{src}-{tgt}/{fwd,bwd}/part-NNNNN.parquet``, written by knn.

One per query shard (same name), row-aligned with the query's embedding and sentence
shard::

    id        uint64                          the query sentence id
    nbr_ids   fixed_size_list<uint64>[k']     neighbour sentence ids, best first
    nbr_sims  fixed_size_list<float32>[k']    their inner products (-inf: a slot an
                                              approximate index could not fill, id 0)
    mean_sim  float32                         mean of the valid nbr_sims (the margin
                                              denominator's share of this sentence)

k' = min(k, rows on the other side). ``fwd`` holds the neighbours of source sentences
among the targets, ``bwd`` those of target sentences among the sources.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.formats import read_parquet
from miner.io import atomic_path


def write_knn_shard(path: str | Path, ids: np.ndarray, nbr_ids: np.ndarray,
                    nbr_sims: np.ndarray, mean_sim: np.ndarray) -> None:
    """Write one neighbour shard atomically.

    ids (n,) uint64, nbr_ids (n, k) uint64, nbr_sims (n, k) float32, mean_sim (n,) float32.
    """
    n, k = nbr_ids.shape
    table = pa.table({
        "id": pa.array(np.asarray(ids, np.uint64)),
        "nbr_ids": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(nbr_ids, np.uint64).reshape(-1)), k),
        "nbr_sims": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(nbr_sims, np.float32).reshape(-1)), k),
        "mean_sim": pa.array(np.asarray(mean_sim, np.float32)),
    })
    with atomic_path(path) as tmp:
        # no dictionary (random 64-bit ids and float similarities never repeat enough)
        # and lz4: score reads every shard twice, and decoding is most of its I/O time
        pq.write_table(table, tmp, compression="lz4", use_dictionary=False)


def read_knn_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ids (n,) uint64, nbr_ids (n, k) uint64, nbr_sims (n, k) float32, mean_sim (n,) float32."""
    t = read_parquet(path)
    n = t.num_rows

    def matrix(name):
        col = t.column(name).combine_chunks()
        return col.values.to_numpy(zero_copy_only=False).reshape(n, col.type.list_size)

    return (t.column("id").to_numpy(), matrix("nbr_ids"), matrix("nbr_sims"),
            t.column("mean_sim").to_numpy())


def read_means(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """ids (n,) uint64 and mean_sim (n,) float32 of one shard (score's global pass)."""
    t = read_parquet(path, columns=["id", "mean_sim"])
    return t.column("id").to_numpy(), t.column("mean_sim").to_numpy()
