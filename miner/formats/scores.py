"""Scored candidates: ``scores/{src}-{tgt}/part-NNNNN.parquet`` (score's output, every
retrieved candidate, best first) and ``bitext/{src}-{tgt}/bitext.parquet`` (the kept
pairs, the same columns with score and texts first).

    src_id, tgt_id            uint64   sentence ids (miner.formats.sentences)
    src_text, tgt_text        string
    score                     float64  the margin score
    direction                 string   fwd | bwd | both (which search found the pair)
    {src,tgt}_doc_id          string   provenance of each side
    {src,tgt}_url_or_title    string
    {src,tgt}_source          string
    {src,tgt}_lid_prob        float32
"""

from __future__ import annotations

from typing import Iterator, Optional

import pyarrow as pa

from miner.errors import MinerError
from miner.formats import open_parquet

SCORE_SCHEMA = pa.schema([
    ("src_id", pa.uint64()), ("tgt_id", pa.uint64()),
    ("src_text", pa.string()), ("tgt_text", pa.string()),
    ("score", pa.float64()), ("direction", pa.string()),
    ("src_doc_id", pa.string()), ("tgt_doc_id", pa.string()),
    ("src_url_or_title", pa.string()), ("tgt_url_or_title", pa.string()),
    ("src_source", pa.string()), ("tgt_source", pa.string()),
    ("src_lid_prob", pa.float32()), ("tgt_lid_prob", pa.float32()),
])

# bitext.parquet: score and texts first, then provenance
BITEXT_SCHEMA = pa.schema([SCORE_SCHEMA.field(n) for n in (
    "score", "src_text", "tgt_text", "direction", "src_id", "tgt_id", "src_doc_id",
    "tgt_doc_id", "src_url_or_title", "tgt_url_or_title", "src_source", "tgt_source",
    "src_lid_prob", "tgt_lid_prob")])

BATCH_ROWS = 65_536


def read_score_batches(parts: list, columns: Optional[list[str]] = None,
                       batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Record batches of scores parts, in order, checking the columns are there."""
    columns = columns or SCORE_SCHEMA.names
    for path in parts:
        f = open_parquet(path)
        missing = [c for c in columns if c not in f.schema_arrow.names]
        if missing:
            raise MinerError(f"{path}: missing column(s) {', '.join(missing)} of the scores layout")
        yield from f.iter_batches(batch_size=batch_rows, columns=columns)
