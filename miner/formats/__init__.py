"""One module per stored format, each with its schema, writer and reader:

- ``sentences``: ``sentences/{lang}/part-NNNNN.parquet`` (prepare's output);
- ``embeddings``: ``embeddings/{lang}/part-NNNNN.parquet`` (embed's output);
- ``neighbours``: ``knn/{pair}/{fwd,bwd}/part-NNNNN.parquet`` (knn's output);
- ``scores``: ``scores/{pair}/part-NNNNN.parquet`` and ``bitext.parquet``.

Every reader goes through ``read_parquet`` / ``open_parquet`` here, so a missing,
truncated or foreign file gives the same one-line ``MinerError`` naming it.
"""

from __future__ import annotations

import pyarrow as pa

from miner.errors import MinerError
from miner.storage import as_path, parquet_file, read_table


def unreadable(path, error: Exception) -> MinerError:
    """The one error for a stored file that cannot be read."""
    if isinstance(error, FileNotFoundError) or not as_path(path).exists():
        return MinerError(f"{path}: no such file")
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return MinerError(f"{path}: not a readable Parquet file ({reason})")


def open_parquet(path):
    """``pyarrow.parquet.ParquetFile`` of ``path`` (local or URL), or the one error."""
    try:
        return parquet_file(path)
    except (OSError, pa.ArrowException) as e:
        raise unreadable(path, e) from None


def read_parquet(path, columns: list[str] | None = None, **kwargs) -> pa.Table:
    """``pyarrow.parquet.read_table`` of ``path`` with the one error; ``columns`` that
    the file lacks are an error naming them."""
    try:
        return read_table(path, columns=columns, **kwargs)
    except (OSError, pa.ArrowException) as e:
        if columns and isinstance(e, pa.ArrowInvalid) and "No match for" in str(e):
            raise MinerError(f"{path}: missing column(s) of its layout ({e})") from None
        raise unreadable(path, e) from None


def num_rows(path) -> int:
    """Rows of a Parquet file, from its footer."""
    return open_parquet(path).metadata.num_rows
