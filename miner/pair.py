"""``mine pair``: two one-sentence-per-line files into ``score<TAB>src<TAB>tgt``.

A thin case of the staged pipeline: the lines (unified: a repeated line counts once)
become sentence shards directly (cleaned as prepare cleans sentences: NFC, no NUL,
control or zero-width characters), with no splitting, length or language filtering,
then the same ``embed``, ``knn`` and ``score`` stages as ``mine run`` produce the
candidates, which pass the bitext stage's threshold and filters (the defaults of
``mine run``) and are written best first. With ``--work DIR`` the stage outputs are
kept there and a rerun resumes; otherwise they live in a temporary directory.

``mine_sentences`` is that sequence (sentence shards -> embed -> knn -> score) for
two lists of sentences; ``mine pair`` and ``mine eval bucc`` both call it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from miner.config import Config
from miner.errors import MinerError
from miner.io import atomic_open, read_lines
from miner.rundir import RunDir

log = logging.getLogger(__name__)

# (doc_id, text) of each sentence, in order: a file's line numbers and lines, or the
# ids and sentences of an evaluation split
Rows = Iterable[tuple[str, str]]


def file_rows(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(line number, line)`` of each line of a text file (plain or .gz)."""
    for lineno, line in enumerate(read_lines(path), 1):
        yield str(lineno), line


def write_sentence_shards(rows: Rows, lang: str, out_dir, shard_size: int, source: str,
                          punctuation: bool = False) -> int:
    """The unique non-blank texts of ``rows`` ((doc_id, text), in order) as
    ``out_dir/sentences/{lang}`` shards, cleaned as prepare cleans sentences
    (``normalize_text``: NFC, no control or zero-width characters, single spaces;
    ``punctuation``: Moses punctuation rules too), ids ``sentence_hash(text)``, the
    first occurrence's doc_id kept; returns how many. ``source``: the ``source``
    column and the name in errors."""
    from miner.formats.sentences import SCHEMA, ShardWriter
    from miner.readers import source_name
    from miner.sentences import normalize_text, sentence_hash

    seen: set[int] = set()
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    source_column = source_name(source) if source else source  # a file name, not a path
    for doc_id, line in rows:
        text = normalize_text(line, punctuation)  # as prepare does: NFC, no controls
        if not text:
            continue
        h = sentence_hash(text)
        if h in seen:
            continue
        seen.add(h)
        row = {"id": h, "text": text, "lang": lang, "source": source_column,
               "doc_id": doc_id, "position": 0}
        for name in SCHEMA.names:  # columns not named (lid_prob, title, ...): null
            columns[name].append(row.get(name))
    if not seen:
        raise MinerError(f"{source}: holds only blank lines")
    writer = ShardWriter(RunDir(out_dir).sentences(lang), shard_size)
    for batch in pa.table(columns, schema=SCHEMA).to_batches():
        writer.add(batch)
    writer.close()
    return len(seen)


def write_line_shards(path: str | Path, lang: str, out_dir, shard_size: int,
                      punctuation: bool = False) -> int:
    """Unique non-blank lines of ``path`` as ``out_dir/sentences/{lang}`` shards, in
    order, cleaned as ``write_sentence_shards`` says."""
    return write_sentence_shards(file_rows(path), lang, out_dir, shard_size, str(path),
                                 punctuation)


def mine_sentences(src_rows: Rows, tgt_rows: Rows, src_lang: str, tgt_lang: str,
                   cfg: Config, work_dir, *, sources: tuple[str, str] = ("", ""),
                   encoder=None, executor=None) -> list:
    """Mine two lists of sentences with the stages of ``mine run``; returns the score
    stage's parts (``scores/{src}-{tgt}/part-*.parquet`` in ``work_dir``, every
    retrieved candidate, best first, no threshold).

    The one place where sentence shards (``write_sentence_shards``) -> ``embed`` ->
    ``knn`` -> ``score`` run for ``mine pair`` and ``mine eval bucc``. Stages that are
    current in ``work_dir`` are skipped (a call with another k or margin over the same
    sentences reuses the embeddings). ``sources``: names of the two inputs (the
    ``source`` column, errors). ``encoder``: a loaded encoder to reuse; ``executor``:
    where the tasks run (default: the one ``cfg`` names, as ``mine run``).
    """
    from miner.embed.stage import run_embed
    from miner.executor import executor_for
    from miner.knn.stage import run_knn
    from miner.score import run_score

    for rows, lang, source in ((src_rows, src_lang, sources[0]), (tgt_rows, tgt_lang, sources[1])):
        n = write_sentence_shards(rows, lang, work_dir, cfg.shard_size, source,
                                  cfg.prepare.normalize_punctuation)
        log.info("%s: %d unique sentences", source or lang, n)
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(executor_for(cfg))
        for lang in (src_lang, tgt_lang):
            run_embed(cfg, work_dir, lang, encoder, executor)
        run_knn(cfg, work_dir, src_lang, tgt_lang, executor)
        run_score(cfg, work_dir, src_lang, tgt_lang, executor)
    return RunDir.shards(RunDir(work_dir).scores(src_lang, tgt_lang))


def mine_files(src_path: str | Path, tgt_path: str | Path, src_lang: str, tgt_lang: str,
               cfg: Config, work_dir: str | Path) -> tuple[pa.Table, dict]:
    """``mine_sentences`` over the lines of two files in ``work_dir``, then the bitext
    stage of ``mine run`` (its threshold, default 1.30 for muse with the ratio margin,
    and its filters, as ``cfg`` sets them); the kept pairs (``score``, ``src_text``,
    ``tgt_text``), best first, and the stage's counts (``candidates``, ``kept``,
    ``dropped`` per filter)."""
    from miner.formats import read_parquet
    from miner.outputs import write_bitext

    mine_sentences(file_rows(src_path), file_rows(tgt_path), src_lang, tgt_lang, cfg,
                   work_dir, sources=(str(src_path), str(tgt_path)))
    counts = write_bitext(cfg, work_dir, src_lang, tgt_lang)
    table = read_parquet(RunDir(work_dir).bitext_parquet(src_lang, tgt_lang),
                         columns=["score", "src_text", "tgt_text"])
    return table, counts


@contextlib.contextmanager
def work_directory(work: str | Path | None):
    """``work`` itself (kept, so reruns resume) or a temporary directory."""
    if work:
        if Path(work).exists() and not Path(work).is_dir():
            raise MinerError(f"{work}: not a directory (--work)")
        try:
            Path(work).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MinerError(f"{work}: cannot create the work folder ({e.strerror or e})") from None
        yield Path(work)
    else:
        with tempfile.TemporaryDirectory(prefix="mine-pair-") as tmp:
            yield Path(tmp)


def write_tsv(path: str | Path, table: pa.Table) -> int:
    """Write ``score<TAB>src<TAB>tgt`` lines, best first, atomically (``.gz`` compresses)."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        for score, s, t in zip(table["score"].to_pylist(), table["src_text"].to_pylist(),
                               table["tgt_text"].to_pylist()):
            f.write(f"{score:.6f}\t{s}\t{t}\n")
    return table.num_rows


def format_pairs(table: pa.Table, n: int) -> list[str]:
    """The best n pairs as printable lines."""
    head = table.slice(0, n)
    return [f"{score:.4f}  {s}\n        {t}" for score, s, t in
            zip(head["score"].to_pylist(), head["src_text"].to_pylist(),
                head["tgt_text"].to_pylist())]


def check_output(output: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is one of the inputs (the same file once paths are
    resolved, or a hard link to it) or a directory, before anything is written."""
    out = Path(output)
    if out.is_dir():
        raise MinerError(f"{out}: is a directory; -o names the output file")
    for path in map(Path, inputs):
        same = out.resolve() == path.resolve()
        if not same and out.exists() and path.exists():
            same = os.path.samefile(out, path)
        if same:
            raise MinerError(f"{out}: is the input {path}; write the pairs to another file")


def check_langs(src_lang: str, tgt_lang: str) -> tuple[str, str]:
    """The two codes, canonical (``miner.langs.normalise_lang``: ``deu_Latn`` -> ``de``);
    MinerError for a code that is not a language or one language twice."""
    from miner.langs import normalise_lang

    src, tgt = normalise_lang(src_lang), normalise_lang(tgt_lang)
    if src == tgt:
        raise MinerError(f"language pair {src_lang}-{tgt_lang}: source and target are the same")
    return src, tgt
