"""Neighbour shards: ``knn/{src}-{tgt}/{fwd,bwd}/part-NNNNN.parquet``, written by knn.

One per query shard (same name), row-aligned with the query's embedding and sentence
shard::

    id        uint64                          the query sentence id
    nbr_ids   fixed_size_list<uint64>[k']     neighbour sentence ids, best first
    nbr_sims  fixed_size_list<float32>[k']    their inner products (-inf: a slot an
                                              approximate index could not fill, id 0)
    mean_sim  float32                         mean of the valid nbr_sims (the margin
                                              denominator's share of this sentence)
    nbr_rows  fixed_size_list<int64>[k']      each neighbour's row among the ids the
                                              search ran over (-1: padded); optional

k' = min(k, rows on the other side). ``fwd`` holds the neighbours of source sentences
among the targets, ``bwd`` those of target sentences among the sources.

With ``nbr_rows``, the schema metadata ``miner.nbr_rows_of`` holds ``ids_digest`` of
the database ids (the other side's embedding shards end to end) that the rows index:
the score stage, whose other side's ids are the other direction's ``id`` columns end
to end, uses the rows when its digest of those ids is the same (then every row names
exactly the id in ``nbr_ids``, by construction), and skips reading ``nbr_ids`` and
looking 4 million random 64-bit ids up in a hash table at 1M queries and k=4 (most
of its mapping time). Shards written without rows are read as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.formats import open_parquet, read_parquet
from miner.io import atomic_path

# schema metadata key: the digest of the ids that ``nbr_rows`` index
ROWS_OF = b"miner.nbr_rows_of"


def ids_digest(ids: np.ndarray) -> str:
    """xxh3-128 of sentence ids (n,) as little-endian uint64, in order."""
    import xxhash

    return xxhash.xxh3_128_hexdigest(np.ascontiguousarray(ids, dtype="<u8").data)


def write_knn_shard(path: str | Path, ids: np.ndarray, nbr_ids: np.ndarray,
                    nbr_sims: np.ndarray, mean_sim: np.ndarray,
                    nbr_rows: np.ndarray | None = None, rows_of: str = "") -> None:
    """Write one neighbour shard atomically.

    ids (n,) uint64, nbr_ids (n, k) uint64, nbr_sims (n, k) float32, mean_sim (n,)
    float32; optionally nbr_rows (n, k) int64 (-1: padded), rows of the ids searched,
    with ``rows_of``, their ``ids_digest`` (needed with them: it goes into the metadata).
    """
    n, k = nbr_ids.shape
    rows, meta = {}, None
    if nbr_rows is not None:
        rows = {"nbr_rows": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(nbr_rows, np.int64).reshape(-1)), k)}
        if not rows_of:
            raise ValueError("nbr_rows need rows_of, the digest of the ids they index")
        meta = {ROWS_OF: rows_of.encode()}
    table = pa.table({
        "id": pa.array(np.asarray(ids, np.uint64)),
        "nbr_ids": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(nbr_ids, np.uint64).reshape(-1)), k),
        "nbr_sims": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(nbr_sims, np.float32).reshape(-1)), k),
        "mean_sim": pa.array(np.asarray(mean_sim, np.float32)),
        **rows,
    }, metadata=meta)
    with atomic_path(path) as tmp:
        # no dictionary (random 64-bit ids and float similarities never repeat enough)
        # and lz4: score reads every shard twice, and decoding is most of its I/O time
        pq.write_table(table, tmp, compression="lz4", use_dictionary=False)


def read_knn_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ids (n,) uint64, nbr_ids (n, k) uint64, nbr_sims (n, k) float32, mean_sim (n,) float32."""
    return read_knn_shard_rows(path)[:4]


def read_knn_shard_rows(path: str | Path, rows_of: str = ""
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray,
                                   np.ndarray | None]:
    """ids (n,), nbr_ids (n, k) or None, nbr_sims (n, k), mean_sim (n,), nbr_rows (n, k)
    or None: the stored rows when they index the ids of digest ``rows_of``
    (``ids_digest``; ``nbr_ids`` is then not read), else ``nbr_ids``."""
    meta = open_parquet(path).schema_arrow.metadata or {}
    use_rows = bool(rows_of) and meta.get(ROWS_OF, b"").decode() == rows_of
    t = read_parquet(path, columns=["id", "nbr_rows" if use_rows else "nbr_ids", "nbr_sims",
                                    "mean_sim"])
    n = t.num_rows

    def matrix(name):
        col = t.column(name).combine_chunks()
        return col.values.to_numpy(zero_copy_only=False).reshape(n, col.type.list_size)

    nbr = matrix("nbr_rows" if use_rows else "nbr_ids")
    return (t.column("id").to_numpy(), None if use_rows else nbr, matrix("nbr_sims"),
            t.column("mean_sim").to_numpy(), nbr if use_rows else None)


def read_means(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """ids (n,) uint64 and mean_sim (n,) float32 of one shard (score's global pass)."""
    t = read_parquet(path, columns=["id", "mean_sim"])
    return t.column("id").to_numpy(), t.column("mean_sim").to_numpy()
