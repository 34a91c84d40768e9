"""Scored candidates: ``scores/{src}-{tgt}/part-NNNNN.parquet`` (score's output, every
retrieved candidate, best first) and ``bitext/{src}-{tgt}/bitext.parquet`` (the kept
pairs, the same columns with score and texts first).

    src_id, tgt_id            uint64   sentence ids (miner.formats.sentences)
    src_text, tgt_text        string
    score                     float64  the margin score
    direction                 string   fwd | bwd | both (which search found the pair)
    {src,tgt}_doc_id          string   provenance of each side, from the sentence
    {src,tgt}_title           string   shards (miner.formats.sentences): document id,
    {src,tgt}_url             string   title, URL, revision (null where the input has
    {src,tgt}_revision        string   none), the sentence's position in its document,
    {src,tgt}_position        int32    the input's file name (or URL) and the LID
    {src,tgt}_source          string   probability
    {src,tgt}_lid_prob        float32

``bitext.parquet`` (``bitext_schema``) adds ``translation``, a struct of the two texts
keyed by language code (``{"de": ..., "en": ...}``, fields in code order: the Hugging
Face ``Translation`` feature), and schema metadata: under ``miner`` the JSON of how the
pairs were mined (languages, encoder, margin, threshold, miner version), under
``huggingface`` the ``datasets`` features, so ``translation`` loads as ``Translation``.
"""

from __future__ import annotations

import json
from typing import Iterator, Optional

import pyarrow as pa

from miner.errors import MinerError
from miner.formats import open_parquet

SCORE_SCHEMA = pa.schema([
    ("src_id", pa.uint64()), ("tgt_id", pa.uint64()),
    ("src_text", pa.string()), ("tgt_text", pa.string()),
    ("score", pa.float64()), ("direction", pa.string()),
    ("src_doc_id", pa.string()), ("tgt_doc_id", pa.string()),
    ("src_title", pa.string()), ("tgt_title", pa.string()),
    ("src_url", pa.string()), ("tgt_url", pa.string()),
    ("src_revision", pa.string()), ("tgt_revision", pa.string()),
    ("src_position", pa.int32()), ("tgt_position", pa.int32()),
    ("src_source", pa.string()), ("tgt_source", pa.string()),
    ("src_lid_prob", pa.float32()), ("tgt_lid_prob", pa.float32()),
])

# bitext.parquet: score and texts first, then provenance
BITEXT_SCHEMA = pa.schema([SCORE_SCHEMA.field(n) for n in (
    "score", "src_text", "tgt_text", "direction", "src_id", "tgt_id", "src_doc_id",
    "tgt_doc_id", "src_title", "tgt_title", "src_url", "tgt_url", "src_revision",
    "tgt_revision", "src_position", "tgt_position", "src_source", "tgt_source",
    "src_lid_prob", "tgt_lid_prob")])

TRANSLATION = "translation"  # the language-keyed column of bitext.parquet


def bitext_schema(src: str, tgt: str, metadata: Optional[dict] = None) -> pa.Schema:
    """The schema of ``bitext/{src}-{tgt}/bitext.parquet``: ``BITEXT_SCHEMA``, then
    ``translation`` (``struct<{lang}: string>`` of both languages in code order, the
    order of ``datasets.Translation``), with ``metadata`` as JSON under ``miner`` and
    the ``datasets`` features under ``huggingface`` (left out when a column has a type
    without a plain ``datasets.Value``; ``datasets`` then infers them all)."""
    langs = sorted((src, tgt))
    schema = BITEXT_SCHEMA.append(
        pa.field(TRANSLATION, pa.struct([(lang, pa.string()) for lang in langs])))
    meta = {}
    if metadata is not None:
        meta[b"miner"] = json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode()
    features = {f.name: {"dtype": _hf_dtype(f.type), "_type": "Value"} for f in BITEXT_SCHEMA}
    if all(v["dtype"] for v in features.values()):
        features[TRANSLATION] = {"languages": langs, "_type": "Translation"}
        meta[b"huggingface"] = json.dumps({"info": {"features": features}}).encode()
    return schema.with_metadata(meta) if meta else schema


def bitext_metadata(schema: pa.Schema) -> dict:
    """The ``miner`` metadata of a ``bitext.parquet`` schema ({} when absent)."""
    raw = (schema.metadata or {}).get(b"miner")
    return json.loads(raw) if raw else {}


def _hf_dtype(t: pa.DataType) -> Optional[str]:
    """The ``datasets.Value`` dtype of an Arrow type, None when it has none."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) \
            or pa.types.is_integer(t):
        return "large_string" if pa.types.is_large_string(t) else str(t)
    if pa.types.is_floating(t):
        return f"float{t.bit_width}"
    return None


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
