"""Embedding shards: ``embeddings/{lang}/part-NNNNN.parquet``, written by embed.

Each shard mirrors one sentence shard row for row: column ``id`` (uint64, the
sentence hash) and ``embedding`` (fixed-size list of float16 by default, float32 on
request). The Parquet key-value metadata names the encoder, the dimension and that
rows are L2-normalised, so shards of different encoders are never mixed silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.errors import MinerError
from miner.formats import open_parquet, read_parquet
from miner.io import atomic_path

META_KEY = b"miner.embedding"


@dataclass(frozen=True)
class EmbeddingMeta:
    encoder: str
    dim: int
    dtype: str = "float16"
    normalized: bool = True


def write_embedding_shard(path: str | Path, ids: np.ndarray, embeddings: np.ndarray,
                          meta: EmbeddingMeta) -> None:
    """Write ids (n,) uint64 and embeddings (n, dim) as one Parquet shard, atomically."""
    emb = np.ascontiguousarray(embeddings, dtype=np.dtype(meta.dtype))
    if emb.ndim != 2 or emb.shape[1] != meta.dim or len(ids) != len(emb):
        raise ValueError(f"shard shape mismatch: ids {len(ids)}, embeddings {emb.shape}, dim {meta.dim}")
    values = pa.array(emb.reshape(-1), type=pa.from_numpy_dtype(emb.dtype))
    column = pa.FixedSizeListArray.from_arrays(values, meta.dim)
    table = pa.table({"id": pa.array(np.asarray(ids, dtype=np.uint64)), "embedding": column})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta.__dict__).encode()})
    with atomic_path(path) as tmp:
        # no dictionary and lz4 for the vectors: a float16 column dictionary-encodes
        # (at most 65536 values) and decodes several times slower than plain pages,
        # and zstd saves a few percent on embeddings at 4x lz4's decoding time; kNN
        # reads every shard at least once per direction
        pq.write_table(table, tmp, use_dictionary=False,
                       compression={"id": "zstd", "embedding.list.element": "lz4"})


def read_embedding_meta(path: str | Path) -> EmbeddingMeta:
    """The encoder metadata of one shard."""
    md = open_parquet(path).schema_arrow.metadata or {}
    if META_KEY not in md:
        raise MinerError(f"{path}: not an embedding shard (no {META_KEY.decode()} metadata)")
    return EmbeddingMeta(**json.loads(md[META_KEY]))


def read_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """ids (n,) uint64 and embeddings (n, dim) in their storage dtype (float16 stays
    float16: the kNN search takes it as stored), one writable C-contiguous array
    filled straight from the Arrow buffers (one copy, no Python per row)."""
    table = read_parquet(path)
    col = table.column("embedding")
    dim = col.type.list_size
    dtype = col.type.value_type.to_pandas_dtype()
    emb = np.empty((table.num_rows, dim), dtype)
    fill = 0
    for chunk in col.chunks:
        if chunk.null_count:
            raise MinerError(f"{path}: null embeddings in column 'embedding'")
        values = chunk.flatten().to_numpy(zero_copy_only=False)  # honours slice offsets
        emb[fill:fill + len(chunk)] = values.reshape(len(chunk), dim)
        fill += len(chunk)
    return table.column("id").to_numpy(), emb


def read_embedding_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """ids (n,) uint64 and embeddings (n, dim) float32 of one shard."""
    ids, emb = read_embeddings(path)
    return ids, emb.astype(np.float32)


def read_ids(paths) -> np.ndarray:
    """The sentence ids of shards, concatenated in order (uint64)."""
    if not paths:
        return np.zeros(0, np.uint64)
    return np.concatenate([read_parquet(p, columns=["id"]).column("id").to_numpy()
                           for p in paths])


def check_consistent(paths: list[Path]) -> EmbeddingMeta:
    """The shared metadata of shards; mixing encoders or dimensions is an error."""
    if not paths:
        raise MinerError("no embedding shards found")
    first = read_embedding_meta(paths[0])
    for p in paths[1:]:
        meta = read_embedding_meta(p)
        if (meta.encoder, meta.dim) != (first.encoder, first.dim):
            raise MinerError(f"{p}: embeddings of {meta.encoder} (dim {meta.dim}) mixed with "
                             f"{first.encoder} (dim {first.dim}) in {paths[0].parent}")
    return first
