"""The ``knn`` stage: embedding shards -> neighbour shards, both directions, resumable.

Reads ``DIR/embeddings/{src}`` and ``DIR/embeddings/{tgt}`` and writes

    DIR/knn/{src}-{tgt}/fwd/part-NNNNN.parquet   one per source shard (same name)
    DIR/knn/{src}-{tgt}/bwd/part-NNNNN.parquet   one per target shard

with columns, row-aligned with the query's embedding (and sentence) shard:

    id        uint64                          the query sentence id
    nbr_ids   fixed_size_list<uint64>[k']     neighbour sentence ids, best first
    nbr_sims  fixed_size_list<float32>[k']    their inner products
    mean_sim  float32                         mean of nbr_sims (the margin denominator)

k' = min(k, rows on the other side). ``fwd`` holds the neighbours of source
sentences among the targets, ``bwd`` those of target sentences among the sources.
With ``--index flat`` the search is exact (ties to the lower target row), so the
concatenated parts are identical whatever the shard sizes. Each part is written
atomically and carries a fingerprint (kNN settings, encoder, the query shard and the
list of database shards) in its Parquet metadata: a rerun skips parts whose
fingerprint matches and redoes stale ones. An IVF / IVF-PQ index is trained once per
direction and kept in ``{direction}/.index/{hash}.faiss`` until every part of the
direction is written, so an interrupted run resumes without retraining.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import Config, parse_memory
from miner.embed.shards import check_consistent, embedding_shards
from miner.errors import MinerError
from miner.io import atomic_path
from miner.knn.index import (build_index, choose_index, factory_string, gpus_available,
                             index_search, read_index, to_gpus, train_sample, train_size,
                             write_index)
from miner.knn.sharded import knn_partitions, mean_topk, plan_blocks, resolve_backend
from miner.manifest import update_stage
from miner.storage import as_path, parquet_file, read_table

log = logging.getLogger(__name__)

KNN_META_KEY = b"miner.knn"
DIRECTIONS = ("fwd", "bwd")


# -- reading and writing neighbour shards -----------------------------------------

def knn_dir(out_dir: str | Path, src: str, tgt: str, direction: str) -> Path:
    """``DIR/knn/{src}-{tgt}/{fwd|bwd}``."""
    return as_path(out_dir) / "knn" / f"{src}-{tgt}" / direction


def knn_shards(out_dir: str | Path, src: str, tgt: str, direction: str) -> list[Path]:
    """The neighbour shards of one direction, in order (aligned with the query shards)."""
    return sorted(knn_dir(out_dir, src, tgt, direction).glob("part-*.parquet"))


def write_knn_shard(path: str | Path, ids: np.ndarray, nbr_ids: np.ndarray,
                    nbr_sims: np.ndarray, mean_sim: np.ndarray, fingerprint: dict) -> None:
    """Write one neighbour shard atomically.

    ids (n,) uint64, nbr_ids (n, k) uint64, nbr_sims (n, k) float32, mean_sim (n,)
    float32; fingerprint goes to the Parquet metadata (see ``read_fingerprint``).
    """
    n, k = nbr_ids.shape
    table = pa.table({
        "id": pa.array(np.asarray(ids, np.uint64)),
        "nbr_ids": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(nbr_ids, np.uint64).reshape(-1)), k),
        "nbr_sims": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(nbr_sims, np.float32).reshape(-1)), k),
        "mean_sim": pa.array(np.asarray(mean_sim, np.float32)),
    })
    table = table.replace_schema_metadata({KNN_META_KEY: json.dumps(fingerprint, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_knn_shard(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ids (n,) uint64, nbr_ids (n, k) uint64, nbr_sims (n, k) float32, mean_sim (n,) float32."""
    try:
        t = read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise MinerError(f"{path}: not a readable Parquet file ({e})") from None
    n = t.num_rows

    def matrix(name):
        col = t.column(name).combine_chunks()
        return col.values.to_numpy(zero_copy_only=False).reshape(n, col.type.list_size)

    return (t.column("id").to_numpy(), matrix("nbr_ids"), matrix("nbr_sims"),
            t.column("mean_sim").to_numpy())


def read_knn(out_dir: str | Path, src: str, tgt: str, direction: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All parts of one direction concatenated (see ``read_knn_shard``)."""
    paths = knn_shards(out_dir, src, tgt, direction)
    if not paths:
        raise MinerError(f"{knn_dir(out_dir, src, tgt, direction)}: no neighbour shards "
                         f"(run `mine knn {out_dir} --pair {src}-{tgt}` first)")
    parts = [read_knn_shard(p) for p in paths]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))  # type: ignore


def read_fingerprint(path: str | Path) -> dict | None:
    """The fingerprint stored in a neighbour shard, or None when unreadable."""
    try:
        md = parquet_file(path).schema_arrow.metadata or {}
        return json.loads(md[KNN_META_KEY])
    except (OSError, pa.ArrowInvalid, KeyError, json.JSONDecodeError):
        return None


# -- embeddings -------------------------------------------------------------------

def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """ids (n,) uint64 and embeddings (n, d) in their storage dtype (float16 stays float16)."""
    try:
        t = read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise MinerError(f"{path}: not a readable Parquet file ({e})") from None
    col = t.column("embedding").combine_chunks()
    emb = col.values.to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)
    return t.column("id").to_numpy(), emb


def read_ids(paths) -> np.ndarray:
    """The sentence ids of embedding shards, concatenated in order (uint64)."""
    if not paths:
        return np.zeros(0, np.uint64)
    return np.concatenate([read_table(p, columns=["id"]).column("id").to_numpy()
                           for p in paths])


def shard_rows(paths: list[Path]) -> list[int]:
    return [parquet_file(p).metadata.num_rows for p in paths]


def _describe(paths: list[Path], rows: list[int]) -> list[list]:
    return [[p.name, p.stat().st_size, r] for p, r in zip(paths, rows)]


class Database:
    """The searched side: shards read into partitions of at most ``part_rows`` rows.

    When everything fits one partition it is read once and kept; otherwise each
    ``partitions()`` call reads the shards again (bounded memory, more I/O).
    """

    def __init__(self, paths: list[Path], rows: list[int], part_rows: int):
        self.paths, self.rows, self.part_rows = paths, rows, part_rows
        self.n = sum(rows)
        self._cached: list[np.ndarray] | None = None

    def ids(self) -> np.ndarray:
        return read_ids(self.paths)

    def partitions(self) -> Iterator[np.ndarray]:
        if self._cached is not None:
            yield from self._cached
            return
        parts = list(self._read())
        if len(parts) == 1:
            self._cached = parts
        yield from parts

    def _read(self) -> Iterator[np.ndarray]:
        """Partitions filled shard by shard into preallocated arrays (no double copy)."""
        buf, fill = None, 0
        for p in self.paths:
            _, emb = read_embeddings(p)
            while len(emb):
                if buf is None:
                    size = min(self.part_rows, self.n)
                    buf, fill = np.empty((size, emb.shape[1]), emb.dtype), 0
                take = min(len(emb), len(buf) - fill)
                buf[fill:fill + take] = emb[:take]
                fill += take
                emb = emb[take:]
                if fill == len(buf):
                    yield buf
                    buf = None
            del emb
        if buf is not None and fill:
            yield buf[:fill]


# -- the stage ----------------------------------------------------------------------

def run_knn(cfg: Config, out_dir: str | Path, src_lang: str, tgt_lang: str,
            executor=None) -> dict:
    """Neighbours of every source sentence among the targets (fwd) and of every target
    among the sources (bwd); returns counts per direction and records the manifest.

    With a cluster ``executor`` (any whose ``name`` is not ``local``, e.g.
    ``miner.executor.RayExecutor``) an exact search runs as (query shard x database
    partition) tasks and one top-k merge per query shard, and an IVF / IVF-PQ search
    as one task per query shard on an index the driver trained once and wrote to the
    shared filesystem (``miner.knn.distributed``); the output is the same bytes. A
    ``LocalExecutor`` keeps the search in this process, where faiss and torch already
    use every core."""
    start = time.time()
    out_dir = as_path(out_dir)
    sides = {}
    for lang in (src_lang, tgt_lang):
        d = out_dir / "embeddings" / lang
        paths = embedding_shards(d)
        if not paths:
            raise MinerError(f"{d}: no embedding shards (run `mine embed {out_dir} "
                             f"--lang {lang}` first)")
        sides[lang] = (paths, check_consistent(paths), shard_rows(paths))
    (_, ms, _), (_, mt, _) = sides[src_lang], sides[tgt_lang]
    if (ms.encoder, ms.dim) != (mt.encoder, mt.dim):
        raise MinerError(f"{src_lang} embeddings are {ms.encoder} (dim {ms.dim}) but {tgt_lang} "
                         f"embeddings are {mt.encoder} (dim {mt.dim}); embed both with one encoder")
    kc = cfg.knn
    if kc.k < 1:
        raise MinerError(f"k must be at least 1, not {kc.k}")
    counts = {}
    for direction, q_lang, db_lang in (("fwd", src_lang, tgt_lang), ("bwd", tgt_lang, src_lang)):
        q_paths, _, q_rows = sides[q_lang]
        db_paths, _, db_rows = sides[db_lang]
        counts[direction] = _run_direction(
            cfg, knn_dir(out_dir, src_lang, tgt_lang, direction), q_paths, q_rows,
            db_paths, db_rows, ms.encoder, ms.dim, executor)
    update_stage(out_dir, f"knn/{src_lang}-{tgt_lang}", {
        "config_hash": cfg.stage_hash("knn"), "k": kc.k, "encoder": ms.encoder, "dim": ms.dim,
        "counts": counts, "seconds": round(time.time() - start, 3), "finished": True})
    return counts


def _run_direction(cfg: Config, out: Path, q_paths: list[Path], q_rows: list[int],
                   db_paths: list[Path], db_rows: list[int], encoder: str, dim: int,
                   executor=None) -> dict:
    t0 = time.time()
    kc = cfg.knn
    n_db, n_q = sum(db_rows), sum(q_rows)
    kind = choose_index(kc.index, n_db)
    backend = resolve_backend(kc.knn_backend)
    settings = {key: v for key, v in dataclasses.asdict(kc).items()
                if key not in ("max_memory", "knn_backend")}  # replaced by what they resolve to
    settings.update(index=kind, backend=backend if kind == "flat" else "faiss", seed=cfg.seed)
    if kind == "flat":
        settings.pop("nprobe")
    base = {"knn": settings, "encoder": encoder, "dim": dim,
            "database": _describe(db_paths, db_rows)}
    wanted = {}
    for p, r in zip(q_paths, q_rows):
        wanted[p.name] = dict(base, query=[p.name, p.stat().st_size, r])
    # parts left from a run with other query shards would be mixed in: drop them
    for stale in out.glob("part-*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    todo = [(p, r) for p, r in zip(q_paths, q_rows)
            if read_fingerprint(out / p.name) != wanted[p.name]]
    counts = {"queries": n_q, "database": n_db, "index": kind, "shards": len(q_paths),
              "searched_shards": len(todo), "skipped_shards": len(q_paths) - len(todo)}
    index_path = None
    if kind != "flat":
        index_path = index_file(out, kind, cfg.seed, encoder, dim, base["database"])
        counts["index_trained"] = False
    # an index of another database or other settings (or of a finished direction whose
    # driver died before removing it) would never be used again
    _remove_index_dir(out, keep=index_path if todo else None)
    if not todo:
        counts["seconds"] = round(time.time() - t0, 3)
        return counts
    budget = parse_memory(kc.max_memory)
    part_rows, q_block = plan_blocks(budget, dim, max(q_rows), n_db, backend)
    if kind != "flat":
        counts.update(_run_index(cfg, out, index_path, todo, wanted, db_paths, db_rows,
                                 part_rows, q_block, kind, executor))
        _remove_index_dir(out)  # every shard of the direction is done
        counts["seconds"] = round(time.time() - t0, 3)
        return counts
    if executor is not None and executor.name != "local":
        from miner.knn.distributed import DirectionPlan, run_direction

        plan = DirectionPlan(str(out), tuple(map(str, db_paths)), tuple(db_rows), part_rows,
                             q_block, kc.k, backend)
        gpu = 1 if backend in ("torch", "triton") and executor.gpus() > 0 else 0
        counts["searched_queries"] = run_direction(
            executor, plan, [(p, wanted[p.name]) for p, _ in todo], num_gpus=gpu)
        counts["seconds"] = round(time.time() - t0, 3)
        return counts
    db = Database(db_paths, db_rows, part_rows)
    db_ids = db.ids()

    def search(q):
        return knn_partitions(q, db.partitions(), kc.k, backend)

    searched = 0
    for p, _ in todo:
        searched += search_shard(p, wanted[p.name], out, search, db_ids, q_block, kc.k)
    counts["searched_queries"] = searched
    counts["seconds"] = round(time.time() - t0, 3)
    return counts


def search_shard(q_path: str | Path, fingerprint: dict, out: str | Path, search,
                 db_ids: np.ndarray, q_block: int, k: int) -> int:
    """Search one query shard and write its neighbour shard ``out/{q_path name}``;
    returns the rows written.

    ``search(block) -> (sims, rows)`` is called on consecutive blocks of ``q_block``
    query rows (float16 as stored, made writable); rows are global database rows,
    -1 for a slot an approximate index could not fill, which becomes id 0 and
    similarity -inf (``mean_sim`` then averages the valid slots). The single-process
    stage and the executor tasks (``miner.knn.distributed``) both write through here.
    """
    q_path = as_path(q_path)
    ids, emb = read_embeddings(q_path)
    emb = np.array(emb)  # writable (torch warns on read-only Arrow memory)
    sims_l, rows_l = [], []
    for s0 in range(0, len(emb), q_block):
        sims, rows = search(emb[s0:s0 + q_block])
        sims_l.append(sims)
        rows_l.append(rows)
    kk = min(k, len(db_ids))
    sims = np.concatenate(sims_l) if sims_l else np.zeros((0, kk), np.float32)
    rows = np.concatenate(rows_l) if rows_l else np.zeros((0, kk), np.int64)
    valid = rows >= 0  # approximate indexes may return fewer than k
    nbr = np.where(valid, db_ids[np.where(valid, rows, 0)], np.uint64(0)).astype(np.uint64)
    sims = np.where(valid, sims, -np.inf).astype(np.float32)
    mean = mean_topk(sims) if valid.all() else _masked_mean(sims, valid)
    write_knn_shard(as_path(out) / q_path.name, ids, nbr, sims, mean, fingerprint)
    log.info("knn %s: %s done (%d queries)", out, q_path.name, len(ids))
    return len(ids)


# -- approximate (faiss IVF / IVF-PQ) search -----------------------------------------

INDEX_DIR = ".index"


def index_file(out: Path, kind: str, seed: int, encoder: str, dim: int,
               database: list[list]) -> Path:
    """``out/.index/{hash}.faiss``: the hash covers what the trained and filled index
    depends on (index kind and factory string, training sample size and seed, encoder,
    dimension, the database shards' names, sizes and rows), not k or nprobe, which
    are search-time settings."""
    n = sum(r for _, _, r in database)
    key = {"index": kind, "factory": factory_string(kind, n, dim),
           "train": [train_size(kind, n), seed], "encoder": encoder, "dim": dim,
           "database": database}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return out / INDEX_DIR / f"{digest}.faiss"


def _remove_index_dir(out: Path, keep: Path | None = None) -> None:
    """Remove the index files of ``out`` (all but ``keep``), and the folder when empty."""
    d = out / INDEX_DIR
    if not d.is_dir():
        return
    for f in d.iterdir():
        if f != keep:
            f.unlink(missing_ok=True)
    if not any(d.iterdir()):
        d.rmdir()


def _run_index(cfg: Config, out: Path, index_path: Path, todo, wanted, db_paths, db_rows,
               part_rows: int, q_block: int, kind: str, executor) -> dict:
    """Train (or reuse) the direction's index file, then search the query shards in
    ``todo``: in this process, or one executor task per shard on a cluster executor."""
    kc = cfg.knn
    db = Database(db_paths, db_rows, part_rows)
    index = None
    trained = not index_path.exists()
    if trained:
        index = _build_faiss_index(db, kind, kc.nprobe, cfg.seed)
        write_index(index, index_path)
        log.info("knn %s: trained and filled %s", out, index_path.name)
    counts = {"index_trained": trained}
    if executor is not None and executor.name != "local":
        from miner.knn.distributed import IndexPlan, run_index_direction

        del index  # the tasks read the file; the driver need not hold it meanwhile
        gpu = 1 if executor.gpus() > 0 and _has_faiss_gpu() else 0
        plan = IndexPlan(str(out), str(index_path), tuple(map(str, db_paths)), q_block,
                         kc.k, kc.nprobe, kind=kind, threads=1, gpu=bool(gpu))
        counts["searched_queries"] = run_index_direction(
            executor, plan, [(p, wanted[p.name]) for p, _ in todo], num_cpus=1, num_gpus=gpu)
        return counts
    if index is None:
        index = read_index(index_path, kc.nprobe)
    if gpus_available():  # pragma: no cover - no GPU in CI
        index = to_gpus(index, kind, db.n, index.d, kc.nprobe)
    db_ids = db.ids()

    def search(q):
        return index_search(index, q, kc.k)

    counts["searched_queries"] = sum(
        search_shard(p, wanted[p.name], out, search, db_ids, q_block, kc.k) for p, _ in todo)
    return counts


def _has_faiss_gpu() -> bool:
    import faiss

    return hasattr(faiss, "GpuMultipleClonerOptions")


def _masked_mean(sims: np.ndarray, valid: np.ndarray) -> np.ndarray:
    total = np.where(valid, sims, 0).astype(np.float64).sum(1)
    return (total / np.maximum(valid.sum(1), 1)).astype(np.float32)


def _build_faiss_index(db: Database, kind: str, nprobe: int, seed: int):
    """Train an IVF / IVF-PQ index (on the CPU) on a deterministic sample of the
    database, then add every partition (global row order; one partition in memory at
    a time, as ``--max-memory`` sizes them)."""
    sample_rows = train_sample(db.n, train_size(kind, db.n), seed)
    train, offset = [], 0
    for part in db.partitions():
        local = sample_rows[(sample_rows >= offset) & (sample_rows < offset + len(part))] - offset
        train.append(part[local].astype(np.float32))
        offset += len(part)
    train = np.concatenate(train)
    dim = train.shape[1]
    index = build_index(kind, db.n, dim, train, nprobe, use_gpu=False)  # for write_index
    for part in db.partitions():
        for s0 in range(0, len(part), 65536):
            index.add(np.ascontiguousarray(part[s0:s0 + 65536], dtype=np.float32))
    return index
