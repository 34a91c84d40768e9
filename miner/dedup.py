"""Exact first-occurrence dedup of uint64 ids in memory bounded by a byte budget.

Prepare's finishing pass keeps, per language, the first row of each ``sentence_hash``
in input order. The ids arrive as a stream of batches (one per staged row group);
``FirstOccurrences`` takes them all (``add``), then says which rows to keep, in the
same order (``take``)::

    with FirstOccurrences(budget=parse_memory("8G"), spill_parent=run_dir) as dedup:
        for ids in id_batches:
            dedup.add(ids)
        dedup.finish()
        for batch in row_batches:  # the same rows again, batched as you like
            keep = dedup.take(len(batch))

While the ids fit in the budget (``ROW_BYTES`` per row) nothing touches disk: one
``np.unique`` over all of them. Beyond it, the buffered ids are cut into chunks of
what fits, each chunk deduplicated on its own (a later copy inside a chunk is never a
first occurrence) and spilled as (id, sequence number) records into ``2**FANOUT_BITS``
partition files by the top bits of the id (sentence ids are xxh64 hashes: uniform
bits). A partition is then resolved on its own (``first_records``): the records of one
id appear in it in input order, so its first record is its first occurrence. A
partition still over the budget is split again on the next bits. The kept sequence
numbers go to bucket files by position (``bucket_rows`` rows each), and ``take``
turns one bucket at a time into a mask. Memory: about the budget, whatever the number
of ids; disk: 16 bytes per distinct id of a chunk, plus 8 per kept row.

Deterministic: the result depends on the ids and their order only, not on the budget.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

# what one buffered id costs at the peak: the buffered id and its concatenated copy, then
# in np.unique(return_index=True) the sort permutation, the sorted copy, the merge
# sort's buffer, the flags and the indices (a spilled record: 16 bytes instead of 8)
ROW_BYTES = 56
MIN_ROWS = 1024  # below this many rows a step costs more in calls than in memory
FANOUT_BITS = 6  # 64 partitions per split
RECORD = np.dtype([("id", "<u8"), ("seq", "<u8")])


def first_indices(ids: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value of ``ids``, ascending."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(ids, return_index=True)  # a stable sort: the first of equal ids
    first.sort()
    return first


def keep_mask(ids: np.ndarray) -> np.ndarray:
    """True where a value of ``ids`` occurs for the first time (in memory)."""
    mask = np.zeros(len(ids), dtype=bool)
    mask[first_indices(ids)] = True
    return mask


def first_records(records: np.ndarray) -> np.ndarray:
    """The ``seq`` of each distinct ``id`` of ``records`` (``RECORD``) whose records
    of one id come in ascending ``seq`` order: the first one's, ascending."""
    if len(records) == 0:
        return np.zeros(0, dtype=np.uint64)
    _, first = np.unique(records["id"], return_index=True)
    return np.sort(records["seq"][first])


def partition_bounds(sorted_ids: np.ndarray, shift: int) -> np.ndarray:
    """Where each of the ``2**FANOUT_BITS`` partitions (``id >> shift`` modulo the
    fan-out) starts and ends in ``sorted_ids``, ascending ids whose bits above
    ``shift + FANOUT_BITS`` are all equal: ``2**FANOUT_BITS + 1`` offsets."""
    keys = partition_keys(sorted_ids, shift)
    return np.searchsorted(keys, np.arange((1 << FANOUT_BITS) + 1), side="left")


def partition_keys(ids: np.ndarray, shift: int) -> np.ndarray:
    """The partition of each id: its ``FANOUT_BITS`` bits from bit ``shift`` up."""
    return ((ids >> np.uint64(shift)) & np.uint64((1 << FANOUT_BITS) - 1)).astype(np.int64)


def spill_records(records: np.ndarray, shift: int, files: list[BinaryIO]) -> None:
    """Append ``records`` to ``files[partition]``, keeping their order within each
    partition (the seq order of one id's records)."""
    keys = partition_keys(records["id"], shift)
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(len(files) + 1))
    for p, f in enumerate(files):
        if bounds[p + 1] > bounds[p]:
            records[order[bounds[p]:bounds[p + 1]]].tofile(f)


class FirstOccurrences:
    """Which rows of a stream of uint64 ids are the first of their id; see the module.

    ``budget``: bytes; ``spill_parent``: the folder a temporary folder is made in when
    the ids do not fit (None: the system's temporary folder). ``total`` and ``kept``
    count the rows once ``finish`` has run.
    """

    def __init__(self, budget: int, spill_parent: Optional[Path] = None):
        self.budget_rows = max(int(budget) // ROW_BYTES, MIN_ROWS)
        self.bucket_rows = self.budget_rows
        self.spill_parent = spill_parent
        self.total = 0
        self.kept = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._buffer_start = 0  # the sequence number of the buffer's first id
        self._dir: Optional[Path] = None
        self._partitions: list[BinaryIO] = []
        # the keep mask of the current bucket (all rows when nothing spilled) and the
        # position in it of the next row take gives
        self._mask = np.zeros(0, dtype=bool)
        self._bucket = -1
        self._pos = 0
        self._finished = False

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    # -- first pass: the ids ------------------------------------------------------

    def add(self, ids: np.ndarray) -> None:
        """The next ids, in input order."""
        assert not self._finished, "add after finish"
        ids = np.asarray(ids, dtype=np.uint64)
        self._buffer.append(ids)
        self._buffered += len(ids)
        self.total += len(ids)
        if self._buffered > self.budget_rows:
            self._spill_buffer()

    def _spill_buffer(self) -> None:
        """Dedup the buffered ids chunk by chunk and append the records of each chunk's
        first occurrences to the level-0 partition files."""
        if self._dir is None:
            parent = self.spill_parent
            if parent is not None:
                Path(parent).mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix=".dedup-", dir=parent))
            self._partitions = [open(self._dir / f"p{p:02x}", "wb")
                                for p in range(1 << FANOUT_BITS)]
        ids = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer, self._buffered = [], 0
        shift = 64 - FANOUT_BITS
        for start in range(0, len(ids), self.budget_rows):
            chunk = ids[start:start + self.budget_rows]
            sorted_ids, first = np.unique(chunk, return_index=True)
            records = np.empty(len(first), dtype=RECORD)
            records["id"] = sorted_ids
            records["seq"] = first.astype(np.uint64) + np.uint64(self._buffer_start + start)
            bounds = partition_bounds(sorted_ids, shift)
            for p, f in enumerate(self._partitions):
                if bounds[p + 1] > bounds[p]:
                    records[bounds[p]:bounds[p + 1]].tofile(f)
        self._buffer_start += len(ids)

    def finish(self) -> None:
        """All ids given: find the first occurrences (on disk if they did not fit)."""
        assert not self._finished, "finish twice"
        self._finished = True
        if self._dir is None:  # everything fits: one np.unique, no disk
            if not self._buffer:  # no ids at all (a language without sentences)
                ids = np.zeros(0, np.uint64)
            else:
                ids = (np.concatenate(self._buffer) if len(self._buffer) != 1
                       else self._buffer[0]).astype(np.uint64, copy=False)
            self._buffer = []
            self._mask = keep_mask(ids)
            self.kept = int(self._mask.sum())
            self._bucket = 0
            return
        if self._buffered:
            self._spill_buffer()
        for f in self._partitions:
            f.close()
        self._partitions = []
        for p in range(1 << FANOUT_BITS):
            self._resolve(self._dir / f"p{p:02x}", 64 - FANOUT_BITS)

    def _resolve(self, path: Path, shift: int) -> None:
        """The first occurrences of one partition file (bits from ``shift`` up equal):
        to the buckets, or split on the next bits if it does not fit."""
        n = path.stat().st_size // RECORD.itemsize
        if n > self.budget_rows and shift > 0:
            sub = max(shift - FANOUT_BITS, 0)
            children = [path.with_name(f"{path.name}{p:02x}") for p in range(1 << FANOUT_BITS)]
            outs = [open(c, "wb") for c in children]
            try:
                with open(path, "rb") as f:
                    while True:
                        records = np.fromfile(f, dtype=RECORD, count=self.budget_rows)
                        if not len(records):
                            break
                        spill_records(records, sub, outs)
            finally:
                for out in outs:
                    out.close()
            path.unlink()
            for child in children:
                self._resolve(child, sub)
            return
        # fits (or a single id: all bits used, at most one record per spilled chunk)
        seqs = first_records(np.fromfile(path, dtype=RECORD))
        path.unlink()
        self.kept += len(seqs)
        buckets = seqs // np.uint64(self.bucket_rows)
        bounds = np.flatnonzero(np.diff(buckets)) + 1
        for part in np.split(seqs, bounds):
            if len(part):
                with open(self._dir / f"k{int(part[0]) // self.bucket_rows:012d}", "ab") as f:
                    part.tofile(f)

    # -- second pass: the masks ---------------------------------------------------

    def take(self, n: int) -> np.ndarray:
        """The keep mask of the next ``n`` rows (after ``finish``)."""
        assert self._finished, "take before finish"
        parts = []
        while n > 0:
            if self._pos >= len(self._mask):
                self._next_bucket()
            k = min(n, len(self._mask) - self._pos)
            parts.append(self._mask[self._pos:self._pos + k])
            self._pos += k
            n -= k
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)

    def _next_bucket(self) -> None:
        if self._dir is None:
            raise IndexError("take past the last id")
        self._bucket += 1
        start = self._bucket * self.bucket_rows
        if start >= self.total:
            raise IndexError("take past the last id")
        width = min(self.bucket_rows, self.total - start)
        path = self._dir / f"k{self._bucket:012d}"
        self._mask = np.zeros(width, dtype=bool)
        if path.exists():
            self._mask[(np.fromfile(path, dtype=np.uint64) - np.uint64(start)).astype(np.int64)] = True
            path.unlink()
        self._pos = 0

    # -- cleanup --------------------------------------------------------------------

    def close(self) -> None:
        """Remove the spill folder (if any)."""
        for f in self._partitions:
            f.close()
        self._partitions = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "FirstOccurrences":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

