"""The ``score`` stage: stored neighbours -> scored candidate pairs with provenance.

Reads ``DIR/knn/{src}-{tgt}/{fwd,bwd}/part-*.parquet`` (``id``, ``nbr_ids[k]``,
``nbr_sims[k]``, ``mean_sim``), maps sentence ids to global row numbers, applies the
margin with the neighbourhood means of the whole corpus (not per shard) and the
retrieval mode, all vectorised (``miner.margin``), then joins the texts and
provenance from the sentence shards. Writes ``DIR/scores/{src}-{tgt}/part-NNNNN.parquet``,
best first, every retrieved candidate (thresholds and filters come after).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import Config
from miner.errors import MinerError
from miner.io import atomic_path
from miner.knn.stage import read_knn
from miner.manifest import read_manifest, update_stage
from miner.margin import DIRECTION_NAMES, Candidates, retrieve

log = logging.getLogger(__name__)

PROVENANCE = ("text", "doc_id", "url_or_title", "source", "lid_prob")
SCORE_SCHEMA = pa.schema([
    ("src_id", pa.uint64()), ("tgt_id", pa.uint64()),
    ("src_text", pa.string()), ("tgt_text", pa.string()),
    ("score", pa.float64()), ("direction", pa.string()),
    ("src_doc_id", pa.string()), ("tgt_doc_id", pa.string()),
    ("src_url_or_title", pa.string()), ("tgt_url_or_title", pa.string()),
    ("src_source", pa.string()), ("tgt_source", pa.string()),
    ("src_lid_prob", pa.float32()), ("tgt_lid_prob", pa.float32()),
])


def ids_to_rows(ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row positions in ``ids`` (n,) of each value of ``query`` (any shape) — every
    value must be present."""
    import pandas as pd

    # a hash index: several times faster than a binary search for random 64-bit ids
    rows = pd.Index(ids).get_indexer(np.asarray(query).reshape(-1)).reshape(np.shape(query))
    if (rows < 0).any():
        raise MinerError("neighbour files name sentences that the other side's neighbour "
                         "files do not hold: rerun `mine knn`")
    return rows


def score_arrays(fwd: dict, bwd: dict, margin: str, retrieval: str) -> Candidates:
    """Candidates (row numbers into fwd["ids"] and bwd["ids"]) from both neighbour sets."""
    fwd_rows = ids_to_rows(bwd["ids"], fwd["nbr_ids"])  # source -> target rows
    bwd_rows = ids_to_rows(fwd["ids"], bwd["nbr_ids"])  # target -> source rows
    return retrieve(fwd["nbr_sims"], fwd_rows, bwd["nbr_sims"], bwd_rows, margin=margin,
                    retrieval=retrieval, fwd_mean=fwd["mean"], bwd_mean=bwd["mean"])


def read_provenance(out_dir: Path, lang: str) -> tuple[np.ndarray, pa.Table]:
    """Ids and provenance columns of all sentence shards of ``lang``, in order."""
    parts = sorted((out_dir / "sentences" / lang).glob("part-*.parquet"))
    if not parts:
        raise MinerError(f"{out_dir / 'sentences' / lang}: no sentence shards")
    table = pa.concat_tables(pq.read_table(p, columns=["id", *PROVENANCE]) for p in parts)
    return table.column("id").to_numpy(), table


def scores_dir(out_dir: str | Path, src: str, tgt: str) -> Path:
    return Path(out_dir) / "scores" / f"{src}-{tgt}"


def run_score(cfg: Config, out_dir: str | Path, src: str, tgt: str) -> dict:
    """Score the neighbours of one pair and write the candidates; returns counts."""
    start = time.time()
    out_dir = Path(out_dir)
    pair = f"{src}-{tgt}"
    fwd = dict(zip(("ids", "nbr_ids", "nbr_sims", "mean"), read_knn(out_dir, src, tgt, "fwd")))
    bwd = dict(zip(("ids", "nbr_ids", "nbr_sims", "mean"), read_knn(out_dir, src, tgt, "bwd")))
    cands = score_arrays(fwd, bwd, cfg.score.margin, cfg.score.retrieval)

    src_ids, src_prov = read_provenance(out_dir, src)
    tgt_ids, tgt_prov = read_provenance(out_dir, tgt)
    # neighbour files follow the sentence shards' order; map through ids to be safe
    src_rows = cands.src if np.array_equal(src_ids, fwd["ids"]) else \
        ids_to_rows(src_ids, fwd["ids"][cands.src])
    tgt_rows = cands.tgt if np.array_equal(tgt_ids, bwd["ids"]) else \
        ids_to_rows(tgt_ids, bwd["ids"][cands.tgt])
    s = src_prov.take(pa.array(src_rows))
    t = tgt_prov.take(pa.array(tgt_rows))
    directions = np.array([DIRECTION_NAMES[d] for d in (1, 2, 3)], dtype=object)
    table = pa.table({
        "src_id": pa.array(fwd["ids"][cands.src], pa.uint64()),
        "tgt_id": pa.array(bwd["ids"][cands.tgt], pa.uint64()),
        "src_text": s.column("text"), "tgt_text": t.column("text"),
        "score": pa.array(cands.score, pa.float64()),
        "direction": pa.array(directions[cands.direction.astype(np.int64) - 1].tolist(),
                              pa.string()),
        "src_doc_id": s.column("doc_id"), "tgt_doc_id": t.column("doc_id"),
        "src_url_or_title": s.column("url_or_title"), "tgt_url_or_title": t.column("url_or_title"),
        "src_source": s.column("source"), "tgt_source": t.column("source"),
        "src_lid_prob": s.column("lid_prob").cast(pa.float32()),
        "tgt_lid_prob": t.column("lid_prob").cast(pa.float32()),
    }, schema=SCORE_SCHEMA)
    files = write_parts(table, scores_dir(out_dir, src, tgt), cfg.shard_size)
    counts = {"sources": int(len(fwd["ids"])), "targets": int(len(bwd["ids"])),
              "candidates": int(len(cands)),
              **{f"direction_{n}": int((cands.direction == c).sum())
                 for c, n in DIRECTION_NAMES.items()}}
    update_stage(out_dir, f"score/{pair}", {
        "config_hash": cfg.stage_hash("knn", "score"), "margin": cfg.score.margin,
        "retrieval": cfg.score.retrieval, "files": files, "counts": counts,
        "seconds": round(time.time() - start, 3), "finished": True})
    log.info("score %s: %d candidates", pair, len(cands))
    return counts


def write_parts(table: pa.Table, directory: Path, rows_per_part: int) -> list[str]:
    """Write ``table`` as ``part-NNNNN.parquet`` files, atomically; remove stale parts."""
    directory.mkdir(parents=True, exist_ok=True)
    rows_per_part = max(1, rows_per_part)
    n_parts = max(1, -(-table.num_rows // rows_per_part))
    names = []
    for i in range(n_parts):
        path = directory / f"part-{i:05d}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table.slice(i * rows_per_part, rows_per_part), tmp,
                           compression="zstd")
        names.append(path.name)
    for stale in directory.glob("part-*.parquet"):
        if stale.name not in names:
            stale.unlink()
    return names


def score_is_current(cfg: Config, out_dir: str | Path, src: str, tgt: str) -> bool:
    """True when the manifest records a finished score of this pair with these settings,
    newer than its neighbour files."""
    rec = read_manifest(out_dir)["stages"].get(f"score/{src}-{tgt}")
    if not rec or not rec.get("finished") or rec.get("config_hash") != cfg.stage_hash("knn", "score"):
        return False
    d = scores_dir(out_dir, src, tgt)
    if not all((d / f).exists() for f in rec.get("files", [])):
        return False
    knn_dir = Path(out_dir) / "knn" / f"{src}-{tgt}"
    newest_knn = max((p.stat().st_mtime for p in knn_dir.glob("*/part-*.parquet")), default=0)
    oldest_score = min((d / f).stat().st_mtime for f in rec["files"])
    return oldest_score >= newest_knn
