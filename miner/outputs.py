"""``mine bitext``: filter the scored candidates of a pair and write the bitext.

Reads ``DIR/scores/{src}-{tgt}/part-*.parquet`` (every retrieved candidate, best
first, written by ``mine score``) and runs the ``FilterPipeline`` over it: the
stateless filters (threshold ... LID) in one task per part on an executor (local
process pool or Ray; ``PartFilter``), the stateful ones (pair dedup, one-to-one, the
per-document cap) in one pass on the driver over the survivors of every part, best
first, on keys the tasks computed. Writes, atomically and byte-identically on a
rerun and for every executor, under ``DIR/bitext/{src}-{tgt}/``:

- ``bitext.tsv.gz``: ``score<TAB>src<TAB>tgt``, best first (LASER / WikiMatrix layout);
- ``train.{src}`` and ``train.{tgt}``: Moses-style line-aligned plain text;
- ``bitext.parquet``: the same rows with provenance (ids, documents, URLs or titles,
  sources, LID probabilities, score, direction), loadable with
  ``datasets.load_dataset("parquet", data_files=...)``;
- ``README.md``: a data card.

The stage ``bitext/{src}-{tgt}`` of ``DIR/manifest.json`` records the counts per
filter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import Config
from miner.errors import MinerError
from miner.filters import FilterPipeline, LengthRatio
from miner.io import atomic_open, atomic_path
from miner.manifest import update_stage
from miner.score import SCORE_SCHEMA, scores_dir  # the layout `mine score` writes
from miner.storage import as_path, parquet_file, read_table, rmtree

log = logging.getLogger(__name__)

# bitext.parquet: score and texts first, then provenance
BITEXT_SCHEMA = pa.schema([SCORE_SCHEMA.field(n) for n in (
    "score", "src_text", "tgt_text", "direction", "src_id", "tgt_id", "src_doc_id",
    "tgt_doc_id", "src_url_or_title", "tgt_url_or_title", "src_source", "tgt_source",
    "src_lid_prob", "tgt_lid_prob")])
BATCH_ROWS = 65_536
MAX_CARD_SOURCES = 20  # sources listed in the data card, most used first


def bitext_dir(out_dir: str | Path, src: str, tgt: str) -> Path:
    return as_path(out_dir) / "bitext" / f"{src}-{tgt}"


def score_parts(out_dir: str | Path, src: str, tgt: str) -> list[Path]:
    """The scores Parquet parts of a pair in order; MinerError if there are none."""
    d = scores_dir(out_dir, src, tgt)
    parts = sorted(d.glob("part-*.parquet"))
    if not parts:
        raise MinerError(f"{d}: no scored candidates (part-*.parquet); run `mine score` first")
    return parts


def read_score_batches(parts: list[Path], columns: Optional[list[str]] = None,
                       batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Record batches of the scores parts, in order, checking the columns are there."""
    columns = columns or SCORE_SCHEMA.names
    for path in parts:
        try:
            f = parquet_file(path)
        except (pa.ArrowException, OSError) as e:
            raise MinerError(f"{path}: not a readable Parquet file ({e})") from None
        missing = [c for c in columns if c not in f.schema_arrow.names]
        if missing:
            raise MinerError(f"{path}: missing column(s) {', '.join(missing)} of the scores layout")
        yield from f.iter_batches(batch_size=batch_rows, columns=columns)


def _clean(texts: pd.Series) -> pd.Series:
    """One-line text for TSV and Moses files: tabs and line breaks become spaces."""
    return texts.fillna("").str.replace(r"[\t\r\n]", " ", regex=True)


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    cols = {}
    for field in BITEXT_SCHEMA:
        cols[field.name] = pa.array(df[field.name].tolist(), type=field.type) \
            if field.name in df else pa.nulls(len(df), field.type)
    return pa.table(cols, schema=BITEXT_SCHEMA)


# -- the stateless filters: one task per scores part -----------------------------------

PARTS_DIR = ".parts"  # the tasks' survivors, under the bitext folder while it is written
BATCH_COLUMN = "_batch"  # the input batch of its part each survivor came from


def _key_column(step: int, i: int) -> str:
    return f"_key{step}_{i}"


def _step_keys(rows: pa.Table, step: int) -> tuple:
    """The key columns of stateful step number ``step`` in a part's survivors."""
    keys = []
    while _key_column(step, len(keys)) in rows.column_names:
        keys.append(rows.column(_key_column(step, len(keys))))
    return tuple(keys)


@dataclass(frozen=True)
class PartFilter:
    """A task: the stateless filters (threshold ... LID) over one scores part.

    Called with ``(index, path)``; returns ``{"index", "counts", "rows"}``: the
    stateless filters' ``counts`` and ``rows``, the survivors in order with every
    scores column, ``_batch`` (which input batch of ``batch_rows`` they came from, so
    the outputs keep the row groups of a single pass) and the keys of the stateful
    filters (``_key{step}_{i}``, see ``FilterPipeline.stateful_keys``). ``rows`` is a
    ``pa.Table`` when ``parts_dir`` is None (in process), else the path of a Parquet
    file written atomically in ``parts_dir``; None when nothing survived.

    ``identifier`` replaces the fastText LID model; None loads ``prepare.lid_model``
    once per worker process (``miner.lid.cached_identifier``).
    """

    cfg: Config
    src_lang: str
    tgt_lang: str
    parts_dir: Optional[str] = None
    batch_rows: int = BATCH_ROWS
    identifier: Any = None

    def __call__(self, item: tuple[int, str]) -> dict:
        index, path = item
        pipeline = FilterPipeline.from_config(self.cfg, self.src_lang, self.tgt_lang,
                                              identifier=self.identifier)
        counts = {"candidates": 0, "kept": 0,
                  "dropped": {s.name: 0 for s in pipeline.split()[0]}}
        pieces = []
        for b, batch in enumerate(read_score_batches([as_path(path)], batch_rows=self.batch_rows)):
            kept, c = pipeline.run_stateless(batch.to_pandas())
            counts["candidates"] += c["candidates"]
            counts["kept"] += c["kept"]
            for name, n in c["dropped"].items():
                counts["dropped"][name] += n
            if not len(kept):
                continue
            rows = pa.Table.from_batches([batch]).take(pa.array(kept.index.to_numpy()))
            rows = rows.append_column(BATCH_COLUMN, pa.array(np.full(len(kept), b, np.int32)))
            for j, keys in enumerate(pipeline.stateful_keys(kept)):
                for i, k in enumerate(keys):
                    rows = rows.append_column(_key_column(j, i), pa.array(k))
            pieces.append(rows)
        result = {"index": index, "counts": counts, "rows": None}
        if pieces:
            # a key column of only nulls in one batch is typed null: unify with the others
            table = pa.concat_tables(pieces, promote_options="default")
            if self.parts_dir is None:
                result["rows"] = table
            else:
                target = as_path(self.parts_dir) / f"part-{index:05d}.parquet"
                with atomic_path(target) as tmp:
                    pq.write_table(table, tmp, compression="zstd")
                result["rows"] = str(target)
        return result


def _filter_parts(executor, task: PartFilter, parts: list[Path], parts_dir: Path,
                  take: Callable[[dict], None], desc: str) -> None:
    """``take(task(part))`` for every part, in part order.

    ``executor`` None: in this process, one part after the other (survivors in
    memory). Otherwise the tasks run on the executor, write their survivors under
    ``parts_dir`` and ``take`` consumes each result as soon as every earlier part's
    has been taken (the driver works while later tasks still run); each part's file
    is removed once taken.
    """
    items = [(i, str(p)) for i, p in enumerate(parts)]
    if executor is None:
        for item in items:
            take(task(item))
        return
    task = dataclasses.replace(task, parts_dir=str(parts_dir))
    parts_dir.mkdir(parents=True, exist_ok=True)
    ready: dict[int, dict] = {}
    next_index = 0

    def on_result(item, result: dict) -> None:
        nonlocal next_index
        ready[result["index"]] = result
        while next_index in ready:
            r = ready.pop(next_index)
            take(r)
            if isinstance(r["rows"], str):
                as_path(r["rows"]).unlink(missing_ok=True)
            next_index += 1

    executor.map(task, items, desc=desc, on_result=on_result)
    if next_index != len(items):  # an executor that did not report every result
        raise MinerError(f"{desc}: {len(items) - next_index} part(s) never came back")


# -- the driver: the stateful filters over all parts, best first, and the outputs -------

def write_bitext(cfg: Config, out_dir: str | Path, src_lang: str, tgt_lang: str,
                 executor=None, *, identifier=None) -> dict:
    """Filter the scored candidates of ``src_lang-tgt_lang`` and write every output.

    The stateless filters (threshold ... LID) run in one ``PartFilter`` task per
    scores part on ``executor`` (``miner.executor``; None: in this process, part
    after part); the stateful ones (pair dedup, one-to-one, the per-document cap) then
    run here over the survivors of every part in order, best first, on keys the tasks
    computed, and the kept rows are streamed into the outputs. Files and counts are
    the same for every executor and equal a single pass of ``FilterPipeline.filter``
    over the candidates.

    Returns the counts (``candidates``, ``kept``, ``dropped`` per filter), which are
    also recorded as stage ``bitext/{src}-{tgt}`` in the manifest. ``identifier``
    replaces the fastText LID model (tests; it travels to the tasks by pickle when
    they run in other processes).
    """
    t0 = time.time()
    parts = score_parts(out_dir, src_lang, tgt_lang)
    pipeline = FilterPipeline.from_config(cfg, src_lang, tgt_lang, identifier=identifier)
    stateful = pipeline.split()[1]  # ValueError unless every stateful step is last
    threshold = pipeline.threshold
    if threshold is None:
        log.warning("%s-%s: no threshold given and no default for encoder %s with margin %s: "
                    "keeping candidates of every score", src_lang, tgt_lang,
                    cfg.embed.encoder, cfg.score.margin)
    out = bitext_dir(out_dir, src_lang, tgt_lang)
    paths = {"tsv": out / "bitext.tsv.gz", "src": out / f"train.{src_lang}",
             "tgt": out / f"train.{tgt_lang}", "parquet": out / "bitext.parquet"}
    parts_dir = out / PARTS_DIR
    rmtree(parts_dir)  # left by an interrupted run
    sources: Counter = Counter()
    try:
        with contextlib.ExitStack() as stack:
            tsv = stack.enter_context(atomic_open(paths["tsv"], "w", encoding="utf-8", newline="\n"))
            src_f = stack.enter_context(atomic_open(paths["src"], "w", encoding="utf-8", newline="\n"))
            tgt_f = stack.enter_context(atomic_open(paths["tgt"], "w", encoding="utf-8", newline="\n"))
            pq_tmp = stack.enter_context(atomic_path(paths["parquet"]))
            writer = stack.enter_context(pq.ParquetWriter(pq_tmp, BITEXT_SCHEMA, compression="zstd"))

            def write(kept: pd.DataFrame) -> None:
                src_t, tgt_t = _clean(kept["src_text"]), _clean(kept["tgt_text"])
                tsv.writelines(f"{s:.6f}\t{a}\t{b}\n"
                               for s, a, b in zip(kept["score"].tolist(), src_t, tgt_t))
                src_f.writelines(f"{a}\n" for a in src_t)
                tgt_f.writelines(f"{b}\n" for b in tgt_t)
                writer.write_table(_to_arrow(kept))
                sources.update(f"{src_lang}: {s}" for s in kept["src_source"].fillna("unknown"))
                sources.update(f"{tgt_lang}: {s}" for s in kept["tgt_source"].fillna("unknown"))

            def take(result: dict) -> None:
                """The stateful filters over one part's survivors; its kept rows out."""
                rows = result["rows"]
                if isinstance(rows, str):
                    rows = read_table(rows)
                n = 0 if rows is None else rows.num_rows
                keys = [_step_keys(rows, j) for j in range(len(stateful))] if n else []
                keep, c = pipeline.run_stateful(keys, n)
                pipeline.record({"candidates": result["counts"]["candidates"], "kept": c["kept"],
                                 "dropped": {**result["counts"]["dropped"], **c["dropped"]}})
                if not c["kept"]:
                    return
                rows = rows.filter(pa.array(keep))
                batch_of = rows.column(BATCH_COLUMN).to_numpy()
                rows = rows.select(SCORE_SCHEMA.names)
                # one write per input batch with kept rows, as a single pass does
                cuts = [0, *(np.flatnonzero(np.diff(batch_of)) + 1).tolist(), len(batch_of)]
                for lo, hi in zip(cuts[:-1], cuts[1:]):
                    write(rows.slice(lo, hi - lo).to_pandas())

            task = PartFilter(cfg, src_lang, tgt_lang, None, BATCH_ROWS, identifier)
            _filter_parts(executor, task, parts, parts_dir, take, f"bitext {src_lang}-{tgt_lang}")
            if pipeline.counts["kept"] == 0:
                writer.write_table(_to_arrow(pd.DataFrame()))  # an empty file keeps the schema
    finally:
        rmtree(parts_dir)
    counts = pipeline.counts
    length_step = pipeline.step(LengthRatio.name)
    bounds = [length_step.lo, length_step.hi] if length_step else None
    card = data_card(cfg, src_lang, tgt_lang, counts, threshold, bounds, sources)
    with atomic_open(out / "README.md", "w", encoding="utf-8", newline="\n") as f:
        f.write(card)
    update_stage(out_dir, f"bitext/{src_lang}-{tgt_lang}", {
        "config_hash": cfg.stage_hash("embed", "score", "filters"),
        "inputs": [str(p.relative_to(as_path(out_dir))) for p in parts],
        "outputs": [str(p.relative_to(as_path(out_dir))) for p in
                    (*paths.values(), out / "README.md")],
        "threshold": threshold,
        "length_ratio_bounds": bounds,
        "filters": [s.name for s in pipeline.steps],
        "counts": counts,
        "seconds": round(time.time() - t0, 3),
        "finished": True,
    })
    log.info("%s-%s: kept %d of %d candidates", src_lang, tgt_lang, counts["kept"],
             counts["candidates"])
    return counts


def data_card(cfg: Config, src: str, tgt: str, counts: dict, threshold: Optional[float],
              bounds: Optional[list[float]], sources: Counter) -> str:
    """The README.md of a bitext folder: languages, counts, settings, sources, licence."""
    encoder = cfg.embed.encoder + (f" ({cfg.embed.model})" if cfg.embed.model else "")
    dropped = "\n".join(f"| {name} | {n} |" for name, n in counts["dropped"].items())
    top = sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))
    src_lines = "\n".join(f"- {name}: {n} sentences in kept pairs"
                          for name, n in top[:MAX_CARD_SOURCES]) or "- (no pairs kept)"
    if len(top) > MAX_CARD_SOURCES:
        src_lines += (f"\n- ... and {len(top) - MAX_CARD_SOURCES} more sources "
                      f"(column src_source / tgt_source of bitext.parquet)")
    th = f"{threshold:g}" if threshold is not None else "none (every candidate scored)"
    ratio = f"{bounds[0]:g}-{bounds[1]:g}" if bounds else "off"
    return f"""# Mined bitext {src}-{tgt}

Parallel sentences mined from monolingual text with `miner` (margin-based mining,
Artetxe & Schwenk 2019), then filtered.

- Languages: `{src}` (source) and `{tgt}` (target)
- Pairs: {counts["kept"]} kept of {counts["candidates"]} scored candidates
- Encoder: {encoder}; margin: {cfg.score.margin}, k={cfg.knn.k}, retrieval: {cfg.score.retrieval}
- Score threshold: {th}
- Length ratio {src}/{tgt} in characters: {ratio}

## Files

- `bitext.tsv.gz`: `score<TAB>{src}<TAB>{tgt}`, best first
- `train.{src}`, `train.{tgt}`: line-aligned text (Moses style)
- `bitext.parquet`: the same rows with provenance (sentence and document ids, URL or
  title, source, LID probability of both sides, score, retrieval direction); load it
  with `datasets.load_dataset("parquet", data_files="bitext.parquet")`

All three hold the same pairs in the same order.

## Filters (pairs dropped, in the order applied)

| filter | dropped |
|---|---|
{dropped}

## Sources

{src_lines}

## Licence

The pairs are excerpts of the source texts above and keep their licences (for
example, Wikipedia text is CC BY-SA 4.0; Common Crawl text belongs to its authors).
Check them before redistributing. Mined bitext is noisy: filter further or weight it
for MT training.
"""
