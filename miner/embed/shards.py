"""Embedding shards: ``DIR/embeddings/{lang}/part-NNNNN.parquet``.

Each shard mirrors one sentence shard row for row: column ``id`` (uint64, the
sentence hash) and ``embedding`` (fixed-size list of float16 by default, float32 on
request). The Parquet key-value metadata names the encoder, the dimension and that
rows are L2-normalised, so shards of different encoders are never mixed silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.errors import MinerError
from miner.io import atomic_path
from miner.storage import AnyPath, as_path, parquet_file, read_table

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
        pq.write_table(table, tmp, compression="zstd")


def read_embedding_meta(path: str | Path) -> EmbeddingMeta:
    """The encoder metadata of one shard."""
    try:
        md = parquet_file(path).schema_arrow.metadata or {}
    except (OSError, pa.ArrowInvalid) as e:
        raise MinerError(f"{path}: not a readable Parquet file ({e})") from None
    if META_KEY not in md:
        raise MinerError(f"{path}: not an embedding shard (no {META_KEY.decode()} metadata)")
    return EmbeddingMeta(**json.loads(md[META_KEY]))


def read_embedding_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """ids (n,) uint64 and embeddings (n, dim) float32 of one shard."""
    try:
        table = read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise MinerError(f"{path}: not a readable Parquet file ({e})") from None
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=False)
    emb = flat.reshape(-1, dim).astype(np.float32)
    return table.column("id").to_numpy(), emb


def embedding_shards(directory: str | Path) -> list[AnyPath]:
    """The shards of one language's embedding directory, in order."""
    return sorted(as_path(directory).glob("part-*.parquet"))


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


def iter_embeddings(directory: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 embeddings) for each shard of a directory, in order."""
    paths = embedding_shards(directory)
    check_consistent(paths)
    for p in paths:
        yield read_embedding_shard(p)
