"""The ``prepare`` stage: inputs -> deduplicated, language-identified sentence shards.

Two steps, so that the heavy one can run anywhere (a local process pool, or one Ray
task per input file with ``--executor ray``: ``miner.executor``) and the result stays
byte-identical whatever the number of workers:

1. ``prepare_file(path, cfg, langs, stage_dir)``, one unit of work per input file and
   pure apart from writing ``stage_dir``: read, split, normalise, filter by length and
   language; write the surviving sentences per language to ``stage_dir`` and a
   ``done.json`` marker last. A rerun skips inputs whose marker exists (the directory
   name hashes the file's path, size, mtime and the settings).
2. ``write_shards(...)``, a global pass in input order: exact dedup within each
   language across all inputs by ``sentence_hash``, then
   ``DIR/sentences/{lang}/part-00000.parquet`` ... with ``shard_size`` rows each.

Layout::

    DIR/sentences/{lang}/part-NNNNN.parquet   id text lang lid_prob source doc_id
                                              url_or_title position
    DIR/.prepare/{input}-{key}/{lang}.parquet per-input staging (kept for resume)
    DIR/manifest.json                         counts per language and reason
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from tqdm import tqdm

from miner.config import Config, parse_memory
from miner.errors import MinerError
from miner.executor import Executor, LocalExecutor
from miner.io import atomic_path, write_json
from miner.lid import cached_identifier, normalize_lang
from miner.manifest import merge_counts, update_stage
from miner.readers import check_file, open_reader
from miner.sentences import length_reason, normalize_text, sentence_hash, split_sentences
from miner.storage import AnyPath, as_path, parquet_file

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("id", pa.uint64()), ("text", pa.string()), ("lang", pa.string()),
    ("lid_prob", pa.float32()), ("source", pa.string()), ("doc_id", pa.string()),
    ("url_or_title", pa.string()), ("position", pa.int32()),
])
REASONS = ("documents", "sentences", "too_short", "too_long", "wrong_language",
           "duplicate", "kept")
FLUSH_ROWS = 10_000
DOC_LID_CHARS = 2000


def prepare(cfg: Config, inputs: list[str], langs: list[str], out_dir: str | Path,
            executor: Optional[Executor] = None) -> dict:
    """Run the stage; returns counts ``{lang: {reason: n}}`` (also in the manifest).

    ``langs`` accepts 2- or 3-letter codes; output directories use ``normalize_lang``
    codes. Raises MinerError on bad inputs or settings.
    """
    start = time.time()
    out_dir = as_path(out_dir)
    langs = check_langs(cfg, langs)
    if not inputs:
        raise MinerError("no input files given")
    if cfg.shard_size < 1:
        raise MinerError(f"shard_size must be at least 1, got {cfg.shard_size}")
    for path in inputs:
        check_file(path)
    stage_root = out_dir / ".prepare"
    parts = plan_parts(list(dict.fromkeys(inputs)), cfg, executor)
    tasks: dict[InputPart, AnyPath] = {part: stage_root / part.stage_name(cfg, langs)
                                       for part in parts}
    results = run_tasks(tasks, cfg, langs, executor)
    counts = merge_counts(*(results[p]["counts"] for p in tasks))
    by_path: dict[str, list[dict]] = {}
    for part in parts:  # parts are in input order already
        by_path.setdefault(part.path, []).append(results[part])
    in_order = [r for path in inputs for r in by_path[path]]
    dedup_counts, files = write_shards(in_order, langs, out_dir / "sentences", cfg.shard_size)
    counts = merge_counts(counts, dedup_counts)
    counts = {lang: {r: counts.get(lang, {}).get(r, 0) for r in REASONS} for lang in langs}
    update_stage(out_dir, "prepare", {
        "config_hash": cfg.stage_hash("prepare"),
        "inputs": [str(p) for p in inputs],
        "langs": langs,
        "shard_size": cfg.shard_size,
        "counts": counts,
        "files": {lang: [str(as_path(f).relative_to(out_dir)) for f in fs] for lang, fs in files.items()},
        "seconds": round(time.time() - start, 3),
        "finished": True,
    })
    return counts


def check_langs(cfg: Config, langs: list[str]) -> list[str]:
    """Normalised, de-duplicated ``langs``; MinerError if the LID model lacks one."""
    out: list[str] = []
    for lang in langs:
        code = normalize_lang(lang)
        if code not in out:
            out.append(code)
    if not out:
        raise MinerError("give at least one --lang")
    p = cfg.prepare
    if p.no_lid:
        if len(out) > 1:
            raise MinerError("--no-lid needs exactly one --lang (nothing else can tell the languages apart)")
        return out
    lid = cached_identifier(p.lid_model)
    for raw, code in zip(langs, out):
        if code not in lid.languages:
            raise MinerError(f"language {raw!r} ({code}) is not known to the LID model "
                             f"{lid.model_path.name}; use another --lid-model or --no-lid")
    for code, value in p.lid_thresholds.items():
        if not 0.0 <= float(value) <= 1.0:
            raise MinerError(f"lid threshold for {code} must be between 0 and 1, got {value}")
    if not 0.0 <= p.lid_threshold <= 1.0:
        raise MinerError(f"lid threshold must be between 0 and 1, got {p.lid_threshold}")
    return out


def stage_name(path: str, cfg: Config, langs: list[str]) -> str:
    """Staging directory name of an input: its file name and a hash of the file's
    path, size and mtime and of every setting that changes the result."""
    p = as_path(path)
    st = p.stat()
    settings = {k: v for k, v in cfg.to_dict()["prepare"].items() if k != "workers"}
    settings["lid_thresholds"] = {normalize_lang(k): v for k, v in settings["lid_thresholds"].items()}
    where = str(p.resolve()) if isinstance(p, Path) else str(p)
    blob = json.dumps([where, st.st_size, st.st_mtime_ns, langs, settings],
                      sort_keys=True, default=str)
    return f"{p.name}-{xxhash.xxh64_hexdigest(blob.encode())}"


# -- step 1: one input file or piece ----------------------------------------------------

@dataclass(frozen=True)
class InputPart:
    """One unit of prepare work: a whole input file, or a piece of a big one.

    ``span`` is None for a whole file; for uncompressed text/JSONL (start byte, stop
    byte, number of its first line), for Parquet (first row group, stop row group,
    number of its first row), for a multistream dump (start byte, stop byte, 0): the
    bzip2 streams that begin there. Pieces keep the documents' line/row numbers (their
    ``doc_id``) and read in turn give exactly the documents of the whole file.
    """

    path: str
    span: Optional[tuple[int, int, int]] = None

    def stage_name(self, cfg: Config, langs: list[str]) -> str:
        name = stage_name(self.path, cfg, langs)
        return name if self.span is None else f"{name}.{self.span[0]}-{self.span[1]}"


def plan_parts(inputs: list[str], cfg: Config, executor: Optional[Executor] = None
               ) -> list[InputPart]:
    """The units of work for ``inputs``, in input order: one per file, or pieces of
    about ``cfg.prepare.chunk_size`` bytes for uncompressed text/JSONL (lines; not
    ``--paragraphs``), multi-row-group Parquet files and multistream bzip2 Wikipedia
    dumps (``pages-articles-multistream.xml.bz2``, by stream) bigger than that. The first
    line number of each text piece comes from counting the newlines before it, one
    task per piece."""
    from miner.readers import compression_of, detect_format

    chunk = parse_memory(cfg.prepare.chunk_size)
    if chunk < 1:
        raise MinerError(f"chunk_size must be positive, got {cfg.prepare.chunk_size!r}")
    parts: list[InputPart] = []
    ranges: list[tuple[str, int, int]] = []  # text pieces whose first line is not known yet
    for path in inputs:
        size = as_path(path).stat().st_size
        fmt = (cfg.prepare.format or "auto").lower()
        if size <= chunk or fmt in ("wet", "warc"):
            parts.append(InputPart(path))
            continue
        fmt = detect_format(path) if fmt == "auto" else fmt
        if fmt == "wiki":
            from miner.readers.wiki import is_multistream

            if compression_of(path) == "bz2" and is_multistream(path):
                # pieces of bzip2 streams: each task finds its first stream itself
                parts.extend(InputPart(path, (s, min(s + chunk, size), 0))
                             for s in range(0, size, chunk))
            else:  # one compressed stream cannot be entered in the middle
                parts.append(InputPart(path))
        elif fmt == "parquet":
            parts.extend(_parquet_parts(path, chunk))
        elif fmt in ("text", "jsonl") and compression_of(path) is None and not (
                fmt == "text" and cfg.prepare.paragraphs):
            pieces = [(path, s, min(s + chunk, size)) for s in range(0, size, chunk)]
            ranges.extend(pieces)
            parts.extend(InputPart(path, (s, e, -1)) for _, s, e in pieces)
        else:  # compressed text cannot be entered in the middle
            parts.append(InputPart(path))
    if ranges:
        executor = executor or LocalExecutor(cfg.prepare.workers)
        counts = executor.map(_count_item, ranges, desc="count lines" if len(ranges) > 8 else "")
        first, done = {}, {}
        for (path, s, _), n in zip(ranges, counts):
            first[(path, s)] = done.get(path, 0) + 1
            done[path] = done.get(path, 0) + n
        parts = [p if p.span is None or p.span[2] != -1 else
                 InputPart(p.path, (p.span[0], p.span[1], first[(p.path, p.span[0])]))
                 for p in parts]
    return parts


def _count_item(item: tuple[str, int, int]) -> int:
    from miner.readers.text import count_line_starts

    return count_line_starts(*item)


def _parquet_parts(path: str, chunk: int) -> list[InputPart]:
    """Row-group ranges of about ``chunk`` bytes (uncompressed) each."""
    meta = parquet_file(path).metadata
    parts, g0, rows, first, size = [], 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        if size and size + rg.total_byte_size > chunk:
            parts.append(InputPart(path, (g0, g, first)))
            g0, first, size = g, rows, 0
        size += rg.total_byte_size
        rows += rg.num_rows
    parts.append(InputPart(path, (g0, meta.num_row_groups, first)))
    return parts if len(parts) > 1 else [InputPart(path)]


def run_tasks(tasks: dict[InputPart, AnyPath], cfg: Config, langs: list[str],
              executor: Optional[Executor] = None) -> dict[InputPart, dict]:
    """``prepare_file`` for each pending input or piece, one task each, on ``executor``
    (default: a local process pool of ``cfg.prepare.workers``)."""
    results: dict[InputPart, dict] = {}
    pending = []
    for part, stage_dir in tasks.items():
        done = read_done(stage_dir)
        if done is not None:
            log.info("%s: already prepared, skipping", part.path)
            results[part] = done
        else:
            pending.append(part)
    if not pending:
        return results
    executor = executor or LocalExecutor(cfg.prepare.workers)
    # one file in this process: show its own progress bar instead of a per-file one
    show = executor.name == "local" and min(executor.workers, len(pending)) == 1
    start = time.time()
    docs = sents = files = 0
    # several files at once: one bar counting documents as files finish (docs/s), with
    # sentences/s; the executor's own per-task bar is left off
    bar = tqdm(unit="doc", desc="prepare", disable=True if show else None)

    def on_result(item, result) -> None:
        nonlocal docs, sents, files
        c = result["counts"]
        n_docs = sum(v.get("documents", 0) for v in c.values())
        docs += n_docs
        sents += sum(v.get("sentences", 0) for v in c.values())
        files += 1
        bar.update(n_docs)
        bar.set_postfix(files=f"{files}/{len(pending)}",
                        sents_per_s=f"{sents / max(time.time() - start, 1e-9):.0f}")

    items = [(part, str(tasks[part])) for part in pending]
    try:
        done = executor.map(partial(_prepare_item, cfg=cfg, langs=langs, progress=show), items,
                            desc="", on_result=on_result)
    finally:
        bar.close()
    results.update(zip(pending, done))
    dt = max(time.time() - start, 1e-9)
    log.info("prepare: %d file(s), %.0f docs/s, %.0f sentences/s", len(pending), docs / dt, sents / dt)
    return results


def _prepare_item(item: tuple[InputPart, str], cfg: Config, langs: list[str],
                  progress: bool) -> dict:
    """One executor task: ``prepare_file`` of ``(part, stage_dir)``."""
    part, stage_dir = item
    return prepare_file(part.path, cfg, langs, stage_dir, progress=progress, span=part.span)


def read_done(stage_dir: str | AnyPath) -> Optional[dict]:
    """The result recorded in ``stage_dir/done.json``, or None if the input is not done."""
    marker = as_path(stage_dir) / "done.json"
    if not marker.exists():
        return None
    try:
        result = json.loads(marker.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not all(as_path(f).exists() for fs in result["files"].values() for f in fs):
        return None
    return result


def prepare_file(path: str, cfg: Config, langs: list[str], stage_dir: str | Path,
                 progress: bool = False, span: Optional[tuple[int, int, int]] = None) -> dict:
    """Read one input (or its piece ``span``, see ``InputPart``) and write its kept
    sentences per language under ``stage_dir``.

    Returns ``{"source": path, "counts": {lang: {reason: n}}, "files": {lang: [file]}}``
    and writes the same as ``stage_dir/done.json``, last. Dedup is not done here.
    """
    p = cfg.prepare
    stage_dir = as_path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    lid = None if p.no_lid else cached_identifier(p.lid_model)
    thresholds = {lang: p.lid_threshold for lang in langs}
    for code, value in p.lid_thresholds.items():  # overrides for other languages: unused
        if normalize_lang(code) in thresholds:
            thresholds[normalize_lang(code)] = float(value)
    counts = {lang: dict.fromkeys(REASONS[:5], 0) for lang in langs}
    writers = {lang: _StageWriter(stage_dir / f"{lang}.parquet") for lang in langs}
    bar = tqdm(unit="doc", desc=as_path(path).name, disable=None if progress else True)
    start = time.time()
    n_sents = 0
    try:
        for doc in open_reader(path, p.format, cfg, span=span):
            doc_lang = document_language(doc.text, langs, lid)
            c = counts[doc_lang]
            c["documents"] += 1
            for position, raw in enumerate(split_sentences(doc.text, doc_lang)):
                c["sentences"] += 1
                n_sents += 1
                text = normalize_text(raw, p.normalize_punctuation)
                reason = length_reason(text, p.min_chars, p.max_chars)
                if reason:
                    c[reason] += 1
                    continue
                if lid is None:
                    lang, prob = doc_lang, None
                else:
                    lang, prob = lid.predict(text)
                    if lang not in thresholds or prob < thresholds[lang]:
                        c["wrong_language"] += 1
                        continue
                writers[lang].add(sentence_hash(text), text, lang, prob, str(path), doc.doc_id,
                                  doc.url_or_title, position)
            bar.update(1)
            if bar.n % 50 == 0:
                bar.set_postfix(sents_per_s=f"{n_sents / max(time.time() - start, 1e-9):.0f}")
        files = {lang: [str(w.close())] for lang, w in writers.items()}
    finally:
        bar.close()
        for w in writers.values():
            w.abort()
    result = {"source": str(path), "counts": counts, "files": files}
    write_json(stage_dir / "done.json", result)
    return result


def document_language(text: str, langs: list[str], lid) -> str:
    """The language a document is split in: the only ``--lang``, or the most likely
    of ``langs`` by LID on its first characters (the first ``--lang`` if none is likely)."""
    if len(langs) == 1 or lid is None:
        return langs[0]
    for lang, _ in lid.predict_top(text[:DOC_LID_CHARS], k=10):
        if lang in langs:
            return lang
    return langs[0]


class _StageWriter:
    """Rows of one language of one input, streamed to Parquet in row groups."""

    def __init__(self, path: AnyPath):
        self.path = path
        self.rows: dict[str, list] = {name: [] for name in SCHEMA.names}
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self.writer = pq.ParquetWriter(self._tmp, SCHEMA, compression="zstd")
        self.closed = False

    def add(self, *values) -> None:
        for name, value in zip(SCHEMA.names, values):
            self.rows[name].append(value)
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
            self._ctx.__exit__(MinerError, MinerError("aborted"), None)
            self.closed = True


# -- step 2: global dedup and final shards ---------------------------------------------

def write_shards(results: list[dict], langs: list[str], sentences_dir: AnyPath,
                 shard_size: int) -> tuple[dict, dict[str, list[str]]]:
    """Dedup each language across ``results`` (in their order; first occurrence wins)
    and write ``sentences_dir/{lang}/part-NNNNN.parquet`` with ``shard_size`` rows.

    Returns counts ``{lang: {"duplicate": n, "kept": n}}`` and the files per language.
    Memory: one set of 64-bit ids per language plus one shard of rows.
    """
    counts: dict[str, dict[str, int]] = {}
    files: dict[str, list[str]] = {}
    for lang in langs:
        seen: set[int] = set()
        out = _ShardWriter(sentences_dir / lang, shard_size)
        dup = 0
        for result in results:
            for staged in result["files"].get(lang, []):
                for batch in parquet_file(staged).iter_batches(batch_size=FLUSH_ROWS):
                    ids = batch.column("id").to_pylist()
                    keep = []
                    for i, h in enumerate(ids):
                        if h in seen:
                            dup += 1
                        else:
                            seen.add(h)
                            keep.append(i)
                    if keep:
                        out.add(batch.take(pa.array(keep, type=pa.int32())))
        files[lang] = out.close()
        counts[lang] = {"duplicate": dup, "kept": len(seen)}
    return counts, files


class _ShardWriter:
    """Record batches in, ``part-NNNNN.parquet`` files of exactly ``shard_size`` rows out
    (the last one shorter), each written atomically; stale higher parts are removed."""

    def __init__(self, directory: AnyPath, shard_size: int):
        self.dir = directory
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
        path = self.dir / f"part-{len(self.files):05d}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd", row_group_size=min(self.shard_size, 100_000))
        self.files.append(str(path))

    def close(self) -> list[str]:
        if self.n_pending or not self.files:
            self._write(pa.Table.from_batches(self.pending, schema=SCHEMA))
        self.dir.mkdir(parents=True, exist_ok=True)
        keep = {as_path(f).name for f in self.files}
        for old in self.dir.glob("part-*.parquet"):
            if old.name not in keep:
                old.unlink()
        return self.files
