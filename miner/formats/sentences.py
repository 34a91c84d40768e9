"""Sentence shards: ``sentences/{lang}/part-NNNNN.parquet``, written by prepare.

One row per distinct sentence of a language, in input order::

    id            uint64   xxhash64 of the normalised text (miner.sentences.sentence_hash)
    text          string
    lang          string   normalised language code
    lid_prob      float32  fastText probability of ``lang`` (null with --no-lid)
    source        string   the input's file name (its URL for a remote input), never a
                           local directory path
    doc_id        string   document id in the input (line or row number, page id,
                           WARC-Record-ID, a JSONL/Parquet id field, BUCC id...)
    title         string   document title (Wikipedia page title, JSONL/Parquet ``title``);
                           null when the input has none
    url           string   document address (Wikipedia page URL, WARC-Target-URI,
                           JSONL/Parquet ``url``); null when the input has none
    revision      string   version of the document (Wikipedia revision id, WARC-Record-ID);
                           null when the input has none
    position      int32    sentence number in its document (0-based, before filtering);
                           the 1-based line number for ``--format sentences``

Prepare's per-input staging files have the same schema.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from miner.formats import read_parquet
from miner.io import atomic_path
from miner.rundir import RunDir
from miner.storage import AnyPath, as_path

SCHEMA = pa.schema([
    ("id", pa.uint64()), ("text", pa.string()), ("lang", pa.string()),
    ("lid_prob", pa.float32()), ("source", pa.string()), ("doc_id", pa.string()),
    ("title", pa.string()), ("url", pa.string()), ("revision", pa.string()),
    ("position", pa.int32()),
])
FLUSH_ROWS = 10_000


def read_sentences(path, columns: list[str] | None = None) -> pa.Table:
    """The rows (or ``columns``) of one sentence shard."""
    return read_parquet(path, columns=columns)


class RowWriter:
    """Rows appended one at a time, streamed to one Parquet file in row groups of
    ``FLUSH_ROWS``; the file appears (atomically) on ``close``, never on ``abort``."""

    def __init__(self, path: AnyPath):
        self.path = path
        self.rows: dict[str, list] = {name: [] for name in SCHEMA.names}
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self.writer = pq.ParquetWriter(self._tmp, SCHEMA, compression="zstd")
        self.closed = False

    def add(self, **values) -> None:
        """One row by column name; a column not given is null."""
        for name in SCHEMA.names:
            self.rows[name].append(values.get(name))
        if len(self.rows["id"]) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows["id"]:
            self.writer.write_table(pa.table(self.rows, schema=SCHEMA))
            self.rows = {name: [] for name in SCHEMA.names}

    def close(self) -> AnyPath:
        self.flush()
        self.writer.close()
        self._ctx.__exit__(None, None, None)
        self.closed = True
        return self.path

    def abort(self) -> None:
        if not self.closed:
            self.writer.close()
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self.closed = True


class ShardWriter:
    """Record batches in, ``part-NNNNN.parquet`` files of exactly ``shard_size`` rows
    out (the last one shorter), each written atomically; stale higher parts are
    removed on ``close``."""

    def __init__(self, directory: AnyPath, shard_size: int):
        self.dir = as_path(directory)
        self.shard_size = shard_size
        self.pending: list[pa.RecordBatch] = []
        self.n_pending = 0
        self.files: list[str] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.n_pending += batch.num_rows
        while self.n_pending >= self.shard_size:
            table = pa.Table.from_batches(self.pending, schema=SCHEMA)
            self._write(table.slice(0, self.shard_size))
            rest = table.slice(self.shard_size)
            self.pending = rest.combine_chunks().to_batches() if rest.num_rows else []
            self.n_pending = rest.num_rows

    def _write(self, table: pa.Table) -> None:
        path = RunDir.shard(self.dir, len(self.files))
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd", row_group_size=min(self.shard_size, 100_000))
        self.files.append(str(path))

    def close(self) -> list[str]:
        if self.n_pending or not self.files:
            self._write(pa.Table.from_batches(self.pending, schema=SCHEMA))
        self.dir.mkdir(parents=True, exist_ok=True)
        keep = {as_path(f).name for f in self.files}
        for old in RunDir.shards(self.dir):
            if old.name not in keep:
                old.unlink()
        return self.files
