"""``mine bitext``: filter the scored candidates of a pair and write the bitext.

A ``BitextStage``: one global pass, current while the filter settings and the digests
of the scores parts are those recorded. Reads ``scores/{src}-{tgt}/part-*.parquet``
(every retrieved candidate, best first, written by ``mine score``) and runs the
``FilterPipeline`` over it: the
stateless filters (threshold ... LID) in one task per part on an executor (local
process pool or Ray; ``PartFilter``), the stateful ones (pair dedup, one-to-one, the
per-document cap) in one pass on the driver over the survivors of every part, best
first, on keys the tasks computed. Writes, atomically and byte-identically on a
rerun and for every executor, under ``bitext/{src}-{tgt}/``:

- ``bitext.tsv.gz``: ``score<TAB>src<TAB>tgt``, best first (LASER / WikiMatrix layout);
- ``train.{src}`` and ``train.{tgt}``: Moses-style line-aligned plain text;
- ``bitext.parquet``: the same rows with provenance (ids, documents, URLs or titles,
  sources, LID probabilities, score, direction), a ``translation`` column keyed by
  language code and the mining settings as schema metadata (``bitext_schema``);
- ``README.md``: a data card with Hugging Face YAML front matter, so
  ``datasets.load_dataset(<the folder>)`` loads ``bitext.parquet`` as split train.

The files are written into a staging folder and published together (the old folder
is moved aside, the new one renamed into place, the old one removed), so nobody ever
reads files of two runs side by side; a run killed between the two renames gets the
previous folder back (``miner.stage``). The stage record in ``manifest.json`` holds the
counts per filter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import Config
from miner.errors import MinerError
from miner.filters import FilterPipeline, LengthRatio
from miner.formats import num_rows, read_parquet
from miner.formats.scores import (BATCH_ROWS, BITEXT_SCHEMA, SCORE_SCHEMA, TRANSLATION,
                                  bitext_schema, read_score_batches)
from miner.io import atomic_open, atomic_path
from miner.progress import Progress
from miner.rundir import RunDir
from miner.stage import Result, Stage
from miner.storage import RemotePath, as_path, rmtree

log = logging.getLogger(__name__)

MAX_CARD_SOURCES = 20  # sources listed in the data card, most used first
# rows per row group of bitext.parquet: fixed, so its bytes depend on the kept rows
# only, never on the shard size, the scores parts or the filters' input batches
ROW_GROUP_ROWS = BATCH_ROWS
FILES = ("bitext.tsv.gz", "train.{src}", "train.{tgt}", "bitext.parquet", "README.md")
# the layout of the files beyond bitext.parquet's columns (which the fingerprint holds
# itself): bump it when the card or the text files change, so that a run folder made
# by an older miner gets them rewritten rather than skipped
OUTPUT_LAYOUT = 2  # 2: Hugging Face card front matter, translation column, metadata


def bitext_dir(out_dir, src: str, tgt: str):
    return RunDir(out_dir).bitext(src, tgt)


def _clean(texts: pd.Series) -> pd.Series:
    """One-line text for TSV and Moses files: tabs and line breaks become spaces."""
    return texts.fillna("").str.replace(r"[\t\r\n]", " ", regex=True)


def _to_arrow(df: pd.DataFrame, schema: pa.Schema, src: str, tgt: str) -> pa.Table:
    """Kept rows as a table of ``schema`` (``bitext_schema``): the flat columns, then
    ``translation`` built from ``src_text`` and ``tgt_text``."""
    cols = {}
    for field in BITEXT_SCHEMA:
        # from_pandas: NaN (a null of an all-null string or int column after
        # to_pandas) is null again
        cols[field.name] = pa.Array.from_pandas(df[field.name], type=field.type) \
            if field.name in df else pa.nulls(len(df), field.type)
    texts = {src: cols["src_text"], tgt: cols["tgt_text"]}
    struct = schema.field(TRANSLATION).type
    cols[TRANSLATION] = pa.StructArray.from_arrays(
        [texts[struct.field(i).name] for i in range(struct.num_fields)], fields=list(struct))
    return pa.table(cols, schema=schema)


# -- dropped pairs kept as examples for the report ---------------------------------

EXAMPLES_PER_REASON = 3  # the first pairs each filter drops, best first (report.html)
EXAMPLE_COLUMNS = ("score", "src_text", "tgt_text", "src_title", "tgt_title", "src_url", "tgt_url")


def example_rows(rows) -> list[dict]:
    """``EXAMPLE_COLUMNS`` of ``rows`` (a DataFrame or pa.Table) as JSON-ready dicts."""
    if isinstance(rows, pa.Table):
        records = rows.select(list(EXAMPLE_COLUMNS)).to_pylist()
    else:
        records = rows[list(EXAMPLE_COLUMNS)].astype(object).to_dict("records")
    # NaN (a missing score or text in pandas) is no JSON value: None
    return [{k: None if v is None or (isinstance(v, float) and v != v) else v
             for k, v in r.items()} for r in records]


def add_examples(examples: dict[str, list], more: dict[str, list]) -> None:
    """Append ``more`` (reason -> example dicts, best first) to ``examples`` up to
    ``EXAMPLES_PER_REASON`` per reason. Fed in candidate order (parts in order, best
    first in each), so each reason keeps its best-scoring drops whatever the parts."""
    for reason, rows in more.items():
        have = examples.setdefault(reason, [])
        have.extend(rows[:EXAMPLES_PER_REASON - len(have)])


# -- the stateless filters: one task per scores part -----------------------------------

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
    the outputs are written batch by batch as a single pass does) and the keys of the stateful
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
        examples: dict[str, list] = {}  # reason -> the part's first drops
        for b, batch in enumerate(read_score_batches([as_path(path)], batch_rows=self.batch_rows)):
            df = batch.to_pandas()
            dropped: dict[str, list] = {}  # reason -> labels of its first drops in df
            kept, c = pipeline.run_stateless(df, dropped, EXAMPLES_PER_REASON)
            add_examples(examples, {r: example_rows(df.loc[ix]) for r, ix in dropped.items()})
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
        result = {"index": index, "counts": counts, "rows": None, "examples": examples}
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

class BitextStage(Stage):
    """``scores/{src}-{tgt}`` -> ``bitext/{src}-{tgt}/``, filtered."""

    def __init__(self, cfg: Config, src: str, tgt: str, identifier=None):
        self.cfg, self.src, self.tgt, self.identifier = cfg, src, tgt, identifier
        self.name = f"bitext/{src}-{tgt}"

    def check(self, ctx) -> None:
        self.parts = ctx.input_shards(f"score/{self.src}-{self.tgt}",
                                      ctx.run.scores(self.src, self.tgt),
                                      "no scored candidates (part-*.parquet); run `mine score` first")

    def finish_fingerprint(self, ctx):
        import dataclasses

        from miner.scorer import load_scorer

        c = self.cfg
        return {"filters": dataclasses.asdict(c.filters), "threshold": c.score.threshold,
                # the default threshold and the data card depend on these
                "embed": [c.embed.encoder, c.embed.model], "score": dataclasses.asdict(c.score),
                "k": c.knn.k, "lid_model": c.prepare.lid_model,
                "identifier": None if self.identifier is None else repr(self.identifier),
                **({"scorer_digest": load_scorer(c.score.scorer).digest} if c.score.scorer
                   else {}),
                "layout": [OUTPUT_LAYOUT, bitext_schema(self.src, self.tgt).to_string(
                    show_schema_metadata=False)],
                "scores": [ctx.digest(p) for p in self.parts]}

    def finish(self, ctx, records) -> Result:
        counts, data = write_bitext_files(self.cfg, ctx.run, self.src, self.tgt, self.parts,
                                          ctx.cluster, identifier=self.identifier)
        out = ctx.run.bitext(self.src, self.tgt)
        return Result(outputs=[out / f.format(src=self.src, tgt=self.tgt) for f in FILES],
                      counts=counts, data=data)

    def summary(self, counts: dict) -> str:
        return f"{counts.get('kept', 0)} of {counts.get('candidates', 0)} pairs kept"


def write_bitext(cfg: Config, out_dir, src_lang: str, tgt_lang: str, executor=None, *,
                 identifier=None) -> dict:
    """Run the stage on its own for one pair; returns the counts (``candidates``,
    ``kept``, ``dropped`` per filter), also recorded in the manifest. ``identifier``
    replaces the fastText LID model (tests; it travels to the tasks by pickle when they
    run in other processes)."""
    from miner.stage import run_stage

    c = run_stage(BitextStage(cfg, src_lang, tgt_lang, identifier), cfg, out_dir, executor)
    return {k: c[k] for k in ("candidates", "kept", "dropped")}


def publish(staging, target, retired) -> None:
    """Put the folder ``staging`` in the place of ``target`` (whole folders, so the files
    inside always come from one run). Locally: two renames; a crash between them leaves
    ``retired``, which the next run renames back (``miner.stage``). On an object store,
    which has no rename, the files are copied one by one, the manifest last."""
    if isinstance(as_path(target), RemotePath):
        target.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():  # a copy inside the store, bytes as they are
            f.fs.copy_file(f.key, (target / f.name).key)
        rmtree(staging)
        return
    rmtree(retired)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    rmtree(retired)


def write_bitext_files(cfg: Config, run: RunDir, src_lang: str, tgt_lang: str, parts: list,
                       executor=None, *, identifier=None) -> tuple[dict, dict]:
    """Filter the scored candidates ``parts`` of ``src_lang-tgt_lang`` and write every
    output, published together; returns the counts and what the report needs
    (threshold, length-ratio bounds, filters).

    The stateless filters (threshold ... LID) run in one ``PartFilter`` task per
    scores part on ``executor`` (``miner.executor``; None: in this process, part
    after part); the stateful ones (pair dedup, one-to-one, the per-document cap) then
    run here over the survivors of every part in order, best first, on keys the tasks
    computed, and the kept rows are streamed into the outputs. Files and counts are
    the same for every executor and equal a single pass of ``FilterPipeline.filter``
    over the candidates.
    """
    pipeline = FilterPipeline.from_config(cfg, src_lang, tgt_lang, identifier=identifier)
    stateful = pipeline.split()[1]  # ValueError unless every stateful step is last
    threshold = pipeline.threshold
    if threshold is None:
        log.warning("%s-%s: no threshold given and no default for encoder %s with margin %s: "
                    "keeping candidates of every score", src_lang, tgt_lang,
                    cfg.embed.encoder, cfg.score.margin)
    length_step = pipeline.step(LengthRatio.name)
    bounds = [length_step.lo, length_step.hi] if length_step else None
    schema = bitext_schema(src_lang, tgt_lang,
                           mining_metadata(cfg, src_lang, tgt_lang, threshold, bounds,
                                           [s.name for s in pipeline.steps]))
    out = run.bitext_staging(src_lang, tgt_lang)
    rmtree(out)
    paths = {"tsv": out / "bitext.tsv.gz", "src": out / f"train.{src_lang}",
             "tgt": out / f"train.{tgt_lang}", "parquet": out / "bitext.parquet"}
    parts_dir = run.bitext_parts(src_lang, tgt_lang)
    rmtree(parts_dir)  # left by an interrupted run
    sources: Counter = Counter()
    try:
        with contextlib.ExitStack() as stack:
            tsv = stack.enter_context(atomic_open(paths["tsv"], "w", encoding="utf-8", newline="\n"))
            src_f = stack.enter_context(atomic_open(paths["src"], "w", encoding="utf-8", newline="\n"))
            tgt_f = stack.enter_context(atomic_open(paths["tgt"], "w", encoding="utf-8", newline="\n"))
            pq_tmp = stack.enter_context(atomic_path(paths["parquet"]))
            writer = stack.enter_context(pq.ParquetWriter(pq_tmp, schema, compression="zstd"))
            buffered: list[pa.Table] = []  # kept rows not yet in a row group
            examples: dict[str, list] = {}  # reason -> its first drops, best first
            bar = stack.enter_context(Progress(
                f"bitext {src_lang}-{tgt_lang}: candidates filtered ({len(parts)} scores parts)",
                total=sum(num_rows(p) for p in parts), unit="pair"))

            def flush(final: bool = False) -> None:
                """Row groups of exactly ROW_GROUP_ROWS rows (the last one: the rest),
                each one contiguous table, whatever batches the rows came in."""
                table = pa.concat_tables(buffered) if buffered else None
                buffered.clear()
                n = 0 if table is None else table.num_rows
                start = 0
                while n - start >= ROW_GROUP_ROWS or (final and n > start):
                    size = min(ROW_GROUP_ROWS, n - start)
                    writer.write_table(table.slice(start, size).combine_chunks(),
                                       row_group_size=size)
                    start += size
                if start < n:
                    buffered.append(table.slice(start))

            def write(kept: pd.DataFrame) -> None:
                src_t, tgt_t = _clean(kept["src_text"]), _clean(kept["tgt_text"])
                tsv.writelines(f"{s:.6f}\t{a}\t{b}\n"
                               for s, a, b in zip(kept["score"].tolist(), src_t, tgt_t))
                src_f.writelines(f"{a}\n" for a in src_t)
                tgt_f.writelines(f"{b}\n" for b in tgt_t)
                buffered.append(_to_arrow(kept, schema, src_lang, tgt_lang))
                if sum(t.num_rows for t in buffered) >= ROW_GROUP_ROWS:
                    flush()
                sources.update(f"{src_lang}: {s}" for s in kept["src_source"].fillna("unknown"))
                sources.update(f"{tgt_lang}: {s}" for s in kept["tgt_source"].fillna("unknown"))

            def take(result: dict) -> None:
                """The stateful filters over one part's survivors; its kept rows out."""
                rows = result["rows"]
                if isinstance(rows, str):
                    rows = read_parquet(rows)
                n = 0 if rows is None else rows.num_rows
                keys = [_step_keys(rows, j) for j in range(len(stateful))] if n else []
                dropped: dict[str, list] = {}  # reason -> positions of its first drops
                keep, c = pipeline.run_stateful(keys, n, dropped, EXAMPLES_PER_REASON)
                add_examples(examples, result["examples"])
                add_examples(examples, {r: example_rows(rows.take(pa.array(pos, pa.int64())))
                                        for r, pos in dropped.items()})
                bar.update(result["counts"]["candidates"])
                pipeline.record({"candidates": result["counts"]["candidates"], "kept": c["kept"],
                                 "dropped": {**result["counts"]["dropped"], **c["dropped"]}})
                if not c["kept"]:
                    return
                rows = rows.filter(pa.array(keep))
                batch_of = rows.column(BATCH_COLUMN).to_numpy()
                rows = rows.select(SCORE_SCHEMA.names)
                # one write per input batch with kept rows (the row groups of
                # bitext.parquet are cut by ``flush``, not by these batches)
                cuts = [0, *(np.flatnonzero(np.diff(batch_of)) + 1).tolist(), len(batch_of)]
                for lo, hi in zip(cuts[:-1], cuts[1:]):
                    write(rows.slice(lo, hi - lo).to_pandas())

            task = PartFilter(cfg, src_lang, tgt_lang, None, BATCH_ROWS, identifier)
            _filter_parts(executor, task, parts, parts_dir, take, f"bitext {src_lang}-{tgt_lang}")
            flush(final=True)
            if pipeline.counts["kept"] == 0:
                # an empty file keeps the schema
                writer.write_table(_to_arrow(pd.DataFrame(), schema, src_lang, tgt_lang))
    finally:
        rmtree(parts_dir)
    counts = pipeline.counts
    card = data_card(cfg, src_lang, tgt_lang, counts, threshold, bounds, sources)
    with atomic_open(out / "README.md", "w", encoding="utf-8", newline="\n") as f:
        f.write(card)
    publish(out, run.bitext(src_lang, tgt_lang), run.bitext_retired(src_lang, tgt_lang))
    log.info("%s-%s: kept %d of %d candidates", src_lang, tgt_lang, counts["kept"],
             counts["candidates"])
    return counts, {"threshold": threshold, "length_ratio_bounds": bounds,
                    **({"scorer": cfg.score.scorer} if cfg.score.scorer else {}),
                    "filters": [s.name for s in pipeline.steps],
                    # what the report's summary shows (all in this stage's fingerprint)
                    "settings": {"encoder": cfg.embed.encoder, "model": cfg.embed.model,
                                 "margin": cfg.score.margin, "k": cfg.knn.k,
                                 "retrieval": cfg.score.retrieval},
                    "dropped_examples": {s.name: examples[s.name] for s in pipeline.steps
                                         if examples.get(s.name)}}


def shareable_name(name: Optional[str]) -> Optional[str]:
    """``name`` as a shared file may show it: a URL or a model / scorer name as it is,
    a local file or folder by its name only (an absolute path tells readers about this
    machine, not about the data)."""
    if not name or "://" in name:
        return name
    p = Path(name).expanduser()
    if p.is_absolute() or name.startswith(".") or p.exists():
        return p.name or name
    return name


def mining_metadata(cfg: Config, src: str, tgt: str, threshold: Optional[float],
                    bounds: Optional[list[float]], filters: list[str]) -> dict:
    """How the pairs were mined: the ``miner`` schema metadata of ``bitext.parquet``.
    Settings only, no time or host, so a rerun writes the same bytes."""
    from miner import __version__

    return {"languages": [src, tgt], "source_language": src, "target_language": tgt,
            "encoder": cfg.embed.encoder, "model": shareable_name(cfg.embed.model),
            "margin": cfg.score.margin, "k": cfg.knn.k, "retrieval": cfg.score.retrieval,
            "threshold": threshold, "scorer": shareable_name(cfg.score.scorer),
            "length_ratio_bounds": bounds, "filters": filters, "miner_version": __version__}


# Hugging Face's size_categories buckets: (upper bound, label), the last one open
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                   (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T"),
                   (None, "n>1T")]
CARD_TAGS = ("bitext", "parallel-corpus", "mined", "miner")
# plain YAML 1.1 scalars that would not load as strings (pyyaml reads `no` as false)
_YAML_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` rows."""
    return next(label for bound, label in SIZE_CATEGORIES if bound is None or n < bound)


def _yaml_str(value: str) -> str:
    """A YAML scalar that loads back as the string ``value``."""
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", value) and value.lower() not in _YAML_SPECIAL:
        return value
    return json.dumps(value)  # a JSON string is a YAML double-quoted string


def card_front_matter(src: str, tgt: str, kept: int) -> str:
    """The Hugging Face dataset card metadata (YAML between ``---`` lines): what makes
    ``datasets.load_dataset(<bitext folder>)`` load ``bitext.parquet`` as split train
    and the Hub file the dataset under translation, its languages and size."""
    lines = ["---", "language:", f"- {_yaml_str(src)}", f"- {_yaml_str(tgt)}",
             "# set the licence from the sources' licences (see Licence below) before sharing",
             "license: other",
             f"pretty_name: {_yaml_str(f'Mined bitext {src}-{tgt}')}",
             "task_categories:", "- translation",
             "multilinguality:", "- translation",
             "size_categories:", f"- {size_category(kept)}",
             "tags:", *(f"- {t}" for t in CARD_TAGS),
             "configs:", "- config_name: default", "  data_files:",
             "  - split: train", "    path: bitext.parquet",
             "---"]
    return "\n".join(lines) + "\n"


def data_card(cfg: Config, src: str, tgt: str, counts: dict, threshold: Optional[float],
              bounds: Optional[list[float]], sources: Counter) -> str:
    """The README.md of a bitext folder: Hugging Face front matter (``card_front_matter``),
    then languages, counts, settings, sources (file names or URLs), licence."""
    model = shareable_name(cfg.embed.model)
    encoder = cfg.embed.encoder + (f" ({model})" if model else "")
    dropped = "\n".join(f"| {name} | {n} |" for name, n in counts["dropped"].items())
    named: Counter = Counter()  # "de: /data/dewiki.xml.bz2" -> "de: dewiki.xml.bz2"
    for key, n in sources.items():
        lang, sep, source = key.partition(": ")
        named[f"{lang}: {shareable_name(source)}" if sep else shareable_name(key)] += n
    top = sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))
    src_lines = "\n".join(f"- {name}: {n} sentences in kept pairs"
                          for name, n in top[:MAX_CARD_SOURCES]) or "- (no pairs kept)"
    if len(top) > MAX_CARD_SOURCES:
        src_lines += (f"\n- ... and {len(top) - MAX_CARD_SOURCES} more sources "
                      f"(column src_source / tgt_source of bitext.parquet)")
    th = f"{threshold:g}" if threshold is not None else "none (every candidate scored)"
    scorer = "" if not cfg.score.scorer else (
        f"- Scores: logits of the learned scorer `{shareable_name(cfg.score.scorer)}` "
        f"(miner.scorer)\n")
    ratio = f"{bounds[0]:g}-{bounds[1]:g}" if bounds else "off"
    return card_front_matter(src, tgt, counts["kept"]) + f"""
# Mined bitext {src}-{tgt}

Parallel sentences mined from monolingual text with `miner` (margin-based mining,
Artetxe & Schwenk 2019), then filtered.

- Languages: `{src}` (source) and `{tgt}` (target)
- Pairs: {counts["kept"]} kept of {counts["candidates"]} scored candidates
- Encoder: {encoder}; margin: {cfg.score.margin}, k={cfg.knn.k}, retrieval: {cfg.score.retrieval}
{scorer}- Score threshold: {th}
- Length ratio {src}/{tgt} in characters: {ratio}

## Files

- `bitext.tsv.gz`: `score<TAB>{src}<TAB>{tgt}`, best first
- `train.{src}`, `train.{tgt}`: line-aligned text (Moses style)
- `bitext.parquet`: the same rows with provenance (sentence and document ids, title,
  URL, revision, position in the document, source file, LID probability of both sides,
  score, retrieval direction) and a
  `translation` column keyed by language (`{{"{src}": ..., "{tgt}": ...}}`); its schema
  metadata (`miner`) records the settings above

All three hold the same pairs in the same order. Load this folder with
`datasets.load_dataset("path/to/this/folder")` (split `train`, from `bitext.parquet`).

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
