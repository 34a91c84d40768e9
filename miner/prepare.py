"""The ``prepare`` stage: inputs -> deduplicated, language-identified sentence shards.

A ``PrepareStage`` (the contract of ``miner.stage``) in two steps, so that the heavy
one can run anywhere (a local process pool, or Ray tasks) and the result stays
byte-identical whatever the number of workers:

1. one task per input file or piece of a big one (``InputPart``): read, split,
   normalise, filter by length and language (``prepare_file``), and write the
   surviving sentences per language to the run's staging folder
   ``.prepare/{input}-{key}/{lang}.parquet``. The key hashes the file's path, size,
   mtime, the piece and every setting that changes the result; the runner skips a task
   whose record matches and whose staged files are intact;
2. the finishing pass, in input order (``write_shards``): exact dedup within each
   language across all inputs by ``sentence_hash`` (``miner.dedup``: memory bounded by
   ``max_memory``, spilling to disk beyond it), then
   ``sentences/{lang}/part-00000.parquet`` ... with ``shard_size`` rows each
   (``miner.formats.sentences``). It is redone when a shard is missing or damaged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import xxhash
from tqdm import tqdm

from miner.config import Config, parse_memory
from miner.dedup import FirstOccurrences
from miner.errors import MinerError
from miner.executor import Executor, LocalExecutor
from miner.formats.sentences import FLUSH_ROWS, SCHEMA, RowWriter, ShardWriter
from miner.lid import cached_identifier, normalize_lang
from miner.readers import check_file, open_reader
from miner.sentences import length_reason, normalize_text, sentence_hash, split_sentences
from miner.stage import Result, Stage, Task
from miner.storage import AnyPath, as_path, parquet_file, rmtree

log = logging.getLogger(__name__)

REASONS = ("documents", "sentences", "too_short", "too_long", "wrong_language",
           "duplicate", "kept")
DOC_LID_CHARS = 2000


class PrepareStage(Stage):
    """Inputs of any language -> ``sentences/{lang}/`` shards for ``langs``."""

    name = "prepare"
    placement = "pool"

    def __init__(self, cfg: Config, inputs: list[str], langs: list[str]):
        self.cfg = cfg
        self.inputs = list(dict.fromkeys(inputs))
        self.raw_langs = list(langs)
        self.langs: list[str] = []
        self.show_progress = False

    def check(self, ctx) -> None:
        self.langs = check_langs(self.cfg, self.raw_langs)
        if not self.inputs:
            raise MinerError("no input files given")
        for path in self.inputs:
            check_file(path)

    def tasks(self, ctx) -> list[Task]:
        parts = plan_parts(self.inputs, self.cfg, ctx.executor)
        tasks = []
        for part in parts:
            key = part.stage_name(self.cfg, self.langs)  # hashes the file and settings
            tasks.append(Task(key, key, (part, str(ctx.run.staging(key)))))
        # one file in this process: show its own progress bar (docs/s)
        workers = getattr(ctx.executor, "workers", 0)
        self.show_progress = ctx.cluster is None and (workers == 1 or len(tasks) == 1)
        return tasks

    def run_task(self, item: tuple["InputPart", str]) -> Result:
        part, stage_dir = item
        counts, files = prepare_file(part.path, self.cfg, self.langs, stage_dir,
                                     progress=self.show_progress, span=part.span)
        return Result(outputs=list(files.values()), counts=counts,
                      data={lang: as_path(f).name for lang, f in files.items()})

    def finish_fingerprint(self, ctx):
        return {"langs": self.langs, "shard_size": self.cfg.shard_size}

    def finish(self, ctx, records: dict[str, dict]) -> Result:
        staged = [{lang: ctx.run.staging(key) / name for lang, name in rec["data"].items()}
                  for key, rec in records.items()]  # in input order
        # max_memory: the run's one memory budget (the kNN blocks' too); it does not
        # change the output, so it is in no fingerprint
        counts, files = write_shards(staged, self.langs, ctx.run, self.cfg.shard_size,
                                     self.cfg.knn.max_memory)
        # staging of inputs no longer in the run
        if ctx.run.prepare_staging.is_dir():
            for d in ctx.run.prepare_staging.iterdir():
                if d.name not in records:
                    rmtree(d)
        return Result(outputs=[f for fs in files.values() for f in fs], counts=counts)

    def summary(self, counts: dict) -> str:
        return ", ".join(f"{lang} {counts.get(lang, {}).get('kept', 0)} sentences"
                         for lang in self.langs)

    def report(self, counts: dict) -> dict:
        return ordered_counts(counts, self.langs)


def prepare(cfg: Config, inputs: list[str], langs: list[str], out_dir: str | Path,
            executor: Optional[Executor] = None, progress=None) -> dict:
    """Run the stage on its own; returns counts ``{lang: {reason: n}}``.

    ``langs`` accepts codes in any form (``de``, ``deu``, ``deu_Latn``); output
    directories use the canonical ``miner.langs.normalise_lang`` codes. Raises
    MinerError on bad inputs or settings.
    """
    from miner.stage import run_stage

    stage = PrepareStage(cfg, inputs, langs)
    return run_stage(stage, cfg, out_dir, executor, progress)


def ordered_counts(counts: dict, langs: list[str]) -> dict:
    """``{lang: {reason: n}}`` with every language and reason, in ``REASONS`` order."""
    return {lang: {r: counts.get(lang, {}).get(r, 0) for r in REASONS} for lang in langs}


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
    # the staged files' columns too: staging written before a schema change is redone
    blob = json.dumps([where, st.st_size, st.st_mtime_ns, langs, settings, SCHEMA.names],
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
        elif fmt in ("text", "sentences", "jsonl") and compression_of(path) is None and not (
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


def prepare_file(path: str, cfg: Config, langs: list[str], stage_dir: str | Path,
                 progress: bool = False, span: Optional[tuple[int, int, int]] = None
                 ) -> tuple[dict, dict]:
    """Read one input (or its piece ``span``, see ``InputPart``) and write its kept
    sentences per language to ``stage_dir/{lang}.parquet``.

    Returns counts ``{lang: {reason: n}}`` and the file written per language. Dedup
    is not done here.
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
    writers = {lang: RowWriter(stage_dir / f"{lang}.parquet") for lang in langs}
    bar = tqdm(unit="doc", desc=as_path(path).name, disable=None if progress else True)
    start = time.time()
    n_sents = 0
    try:
        for doc in open_reader(path, p.format, cfg, span=span):
            doc_lang = document_language(doc.text, langs, lid)
            c = counts[doc_lang]
            c["documents"] += 1
            whole = doc.position is not None  # --format sentences: a line is a sentence
            pieces = ((doc.position, doc.text),) if whole else \
                enumerate(split_sentences(doc.text, doc_lang))
            for position, raw in pieces:
                c["sentences"] += 1
                n_sents += 1
                text = normalize_text(raw, p.normalize_punctuation)
                reason = (line_length_reason(text, p.min_chars, p.max_chars) if whole
                          else length_reason(text, p.min_chars, p.max_chars))
                if reason:
                    c[reason] += 1
                    continue
                if lid is None:
                    lang, prob = doc_lang, None
                else:
                    lang, prob = lid.predict(text)
                    # document prior: a short line leaves its document's language
                    # only when LID is very sure of another one
                    if (lang != doc_lang and len(text) < p.short_lid_chars
                            and prob < p.short_lid_threshold):
                        lang, prob = document_prior(text, doc_lang, lid)
                    elif lang not in thresholds or prob < thresholds[lang]:
                        lang = None
                    if lang is None:
                        c["wrong_language"] += 1
                        continue
                writers[lang].add(id=sentence_hash(text), text=text, lang=lang, lid_prob=prob,
                                  source=doc.source, doc_id=doc.doc_id, title=doc.title,
                                  url=doc.url, revision=doc.revision, position=position)
            bar.update(1)
            if bar.n % 50 == 0:
                bar.set_postfix(sents_per_s=f"{n_sents / max(time.time() - start, 1e-9):.0f}")
        files = {lang: str(w.close()) for lang, w in writers.items()}
    finally:
        bar.close()
        for w in writers.values():
            w.abort()
    return counts, files


def line_length_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    """``length_reason`` for a line given as one sentence (``--format sentences``): the
    character bounds only. The fragment rules are not applied: they catch what sentence
    splitting and markup removal leave, and such a line was not split (an odd quote or
    a bracket left open is the author's)."""
    n = len(text)
    if n < min_chars or n == 0:
        return "too_short"
    return "too_long" if n > max_chars else None


def document_language(text: str, langs: list[str], lid) -> str:
    """The language a document is split in: the only ``--lang``, or the most likely
    of ``langs`` by LID on its first characters (the first ``--lang`` if none is likely)."""
    if len(langs) == 1 or lid is None:
        return langs[0]
    for lang, _ in lid.predict_top(text[:DOC_LID_CHARS], k=10):
        if lang in langs:
            return lang
    return langs[0]


def document_prior(text: str, doc_lang: str, lid) -> tuple[Optional[str], float]:
    """The language of a short line that LID puts in another language than its
    document's, but not very surely (``short_lid_chars``, ``short_lid_threshold``):
    the document's,
    with LID's probability for it, when the line is written in that language's scripts
    (``miner.scripts``: a short all-kanji Japanese line that LID calls Chinese stays
    Japanese); otherwise None, dropped as wrong language ("Cambridge, UK." in a
    Japanese article goes neither to Japanese nor to English)."""
    from miner.scripts import in_scripts_of

    if not in_scripts_of(text, doc_lang):
        return None, 0.0
    return doc_lang, dict(lid.predict_top(text, 10)).get(doc_lang, 0.0)


# -- step 2: global dedup and final shards ---------------------------------------------

def write_shards(staged: list[dict], langs: list[str], run, shard_size: int,
                 max_memory: str | int = "8G") -> tuple[dict, dict[str, list[str]]]:
    """Dedup each language across ``staged`` (one ``{lang: staged file}`` per input, in
    input order; first occurrence wins) and write ``run.sentences(lang)`` shards of
    ``shard_size`` rows.

    Returns counts ``{lang: {"duplicate": n, "kept": n}}`` and the files per language.
    Two reads of the staged files per language: their ``id`` column for
    ``miner.dedup.FirstOccurrences`` (memory about ``max_memory``, spilling to a
    temporary folder in the run's staging folder beyond it; the same rows whatever
    the budget), then their rows, the kept ones to the shards (memory: one shard).
    """
    budget = parse_memory(max_memory)
    staging = run.prepare_staging
    spill_parent = staging if isinstance(staging, Path) else None  # remote run: local temp
    counts: dict[str, dict[str, int]] = {}
    files: dict[str, list[str]] = {}
    for lang in langs:
        paths = [result[lang] for result in staged if lang in result]
        with FirstOccurrences(budget, spill_parent) as dedup:
            for path in paths:
                for batch in staged_batches(path, columns=["id"]):
                    dedup.add(batch.column(0).to_numpy())
            dedup.finish()
            out = ShardWriter(run.sentences(lang), shard_size)
            for path in paths:
                for batch in staged_batches(path):
                    keep = np.flatnonzero(dedup.take(batch.num_rows))
                    if len(keep):
                        out.add(batch.take(pa.array(keep, type=pa.int32())))
            files[lang] = out.close()
            counts[lang] = {"duplicate": dedup.total - dedup.kept, "kept": dedup.kept}
    return counts, files


def staged_batches(path, columns: Optional[list[str]] = None):
    """The rows of a staged file in batches of ``FLUSH_ROWS`` (its row groups), read
    one row group at a time on this thread: pyarrow's threaded batch reader keeps
    ~2x more memory (per-thread allocator heaps), which the finishing pass would add
    on top of the LID model's."""
    f = parquet_file(path)
    for g in range(f.num_row_groups):
        yield from f.read_row_group(g, columns=columns, use_threads=False).to_batches(FLUSH_ROWS)
