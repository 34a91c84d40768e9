"""``mine pair``: two one-sentence-per-line files into ``score<TAB>src<TAB>tgt``.

A thin case of the staged pipeline: the lines (unified: a repeated line counts once)
become sentence shards directly, with no splitting, length or language filtering,
then the same ``embed``, ``knn`` and ``score`` stages as ``mine run`` produce the
candidates, which are written best first. With ``--work DIR`` the stage outputs are
kept there and a rerun resumes; otherwise they live in a temporary directory.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import Config
from miner.errors import MinerError
from miner.io import atomic_open, read_lines

log = logging.getLogger(__name__)


def write_line_shards(path: str | Path, lang: str, out_dir: Path, shard_size: int) -> int:
    """Unique non-blank lines of ``path`` as ``out_dir/sentences/{lang}`` shards, in order."""
    from miner.prepare import SCHEMA, _ShardWriter
    from miner.sentences import sentence_hash

    seen: set[int] = set()
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    for lineno, line in enumerate(read_lines(path), 1):
        text = line.strip()
        if not text:
            continue
        h = sentence_hash(text)
        if h in seen:
            continue
        seen.add(h)
        for name, value in zip(SCHEMA.names, (h, text, lang, None, str(path), str(lineno), "", 0)):
            rows[name].append(value)
    if not seen:
        raise MinerError(f"{path}: holds only blank lines")
    writer = _ShardWriter(out_dir / "sentences" / lang, shard_size)
    for batch in pa.table(rows, schema=SCHEMA).to_batches():
        writer.add(batch)
    writer.close()
    return len(seen)


def mine_files(src_path: str | Path, tgt_path: str | Path, src_lang: str, tgt_lang: str,
               cfg: Config, work_dir: str | Path) -> pa.Table:
    """Run shards -> embed -> knn -> score in ``work_dir``; the scored candidates, best
    first, with ``score >= threshold`` when one is set."""
    from miner.embed.encoders import load_encoder
    from miner.embed.stage import run_embed
    from miner.knn.stage import run_knn
    from miner.score import run_score, scores_dir

    work_dir = Path(work_dir)
    for path, lang in ((src_path, src_lang), (tgt_path, tgt_lang)):
        n = write_line_shards(path, lang, work_dir, cfg.shard_size)
        log.info("%s: %d unique lines", path, n)
    e = cfg.embed
    encoder = load_encoder(e.encoder, e.model, e.device, e.batch_size)
    for lang in (src_lang, tgt_lang):
        run_embed(cfg, work_dir, lang, encoder)
    run_knn(cfg, work_dir, src_lang, tgt_lang)
    run_score(cfg, work_dir, src_lang, tgt_lang)
    parts = sorted(scores_dir(work_dir, src_lang, tgt_lang).glob("part-*.parquet"))
    table = pa.concat_tables(pq.read_table(p, columns=["score", "src_text", "tgt_text"])
                             for p in parts)
    if cfg.score.threshold is not None:
        import pyarrow.compute as pc

        table = table.filter(pc.greater_equal(table["score"], cfg.score.threshold))
    return table


@contextlib.contextmanager
def work_directory(work: str | Path | None):
    """``work`` itself (kept, so reruns resume) or a temporary directory."""
    if work:
        Path(work).mkdir(parents=True, exist_ok=True)
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


def check_langs(src_lang: str, tgt_lang: str) -> None:
    for code in (src_lang, tgt_lang):
        if not (code.isascii() and code.isalpha() and code.islower() and 2 <= len(code) <= 3):
            raise MinerError(f"unknown language code {code!r}: expected an ISO 639 code like de")
    if src_lang == tgt_lang:
        raise MinerError(f"language pair {src_lang}-{tgt_lang}: source and target are the same")
