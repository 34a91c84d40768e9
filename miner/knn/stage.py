"""The ``knn`` stage: embedding shards -> neighbour shards, both directions.

Reads ``embeddings/{src}`` and ``embeddings/{tgt}`` and writes, one task per query
shard, ``knn/{src}-{tgt}/fwd/part-NNNNN.parquet`` (neighbours of each source sentence
among the targets) and ``.../bwd/...`` (of each target among the sources);
``miner.formats.neighbours`` has the columns. With ``--index flat`` the search is
exact (ties to the lower target row), so the concatenated parts are identical
whatever the shard sizes.

A task's fingerprint is the kNN settings as resolved (index kind, backend), the
encoder, and the content digests of its query shard and of every database shard: a
rerun searches only shards whose inputs or settings changed, or whose file is gone.
``--max-memory`` only sizes the blocks, so it is not part of it. Placement: in this
process locally (faiss and torch already use every core); on a cluster, (query shard x
database partition) tasks and one merge per query shard (``miner.knn.distributed``).
An IVF / IVF-PQ index is trained once per direction and kept in
``{direction}/.index/{hash}.faiss`` until the direction is done, so an interrupted
run resumes without retraining.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from miner.config import Config, parse_memory
from miner.errors import MinerError
from miner.formats.embeddings import check_consistent, read_embeddings, read_ids  # noqa: F401
from miner.formats.neighbours import read_knn_shard, write_knn_shard  # noqa: F401
from miner.knn.index import (build_index, choose_index, factory_string, gpus_available,
                             index_searcher, read_index, to_gpus, train_sample, train_size,
                             write_index)
from miner.knn.search import Database, load_embeddings, search_shard
from miner.knn.sharded import knn_partitions, plan_blocks, resolve_backend
from miner.formats import num_rows
from miner.progress import Progress
from miner.rundir import DIRECTIONS, KNN_INDEX, RunDir
from miner.stage import Result, Stage, Task, describe_result
from miner.storage import as_path

log = logging.getLogger(__name__)

PROGRESS_BLOCK = 16384  # query rows per search call when the database is resident
KEEP_DECODED_SHARE = 1 / 8  # of --max-memory: both sides' decoded shards kept (_loader)


def embedding_shards(ctx, lang: str) -> list:
    """The embedding shards of a language, in order: those embed recorded when it did
    (a missing one is an error naming it), else those in the folder."""
    return ctx.input_shards(f"embed/{lang}", ctx.run.embeddings(lang), "no embedding shards "
                            f"(run `mine embed {ctx.run} --lang {lang}` first)")


def knn_shards(out_dir, src: str, tgt: str, direction: str) -> list:
    """The neighbour shards of one direction, in order (aligned with the query shards)."""
    return RunDir.shards(RunDir(out_dir).knn(src, tgt, direction))


def read_knn(out_dir, src: str, tgt: str, direction: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All parts of one direction concatenated (see ``read_knn_shard``)."""
    run = RunDir(out_dir)
    paths = RunDir.shards(run.knn(src, tgt, direction))
    if not paths:
        raise MinerError(f"{run.knn(src, tgt, direction)}: no neighbour shards "
                         f"(run `mine knn {out_dir} --pair {src}-{tgt}` first)")
    parts = [read_knn_shard(p) for p in paths]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))  # type: ignore


@dataclasses.dataclass
class _Side:
    paths: list
    rows: list
    digests: list


def no_sentences(ctx, lang: str, pair: str) -> str:
    """The line for a language of ``pair`` left with no sentence: why, from prepare's
    counts (no document in the language, all too short or too long, wrong language)."""
    where = ctx.run.sentences(lang)
    rec = ctx.manifest.stage("prepare") or {}
    c = rec.get("counts", {}).get(lang) if isinstance(rec.get("counts"), dict) else None
    p = ctx.cfg.prepare
    if not isinstance(c, dict):
        why = "no sentences were prepared for it"
    elif not c.get("documents"):
        why = "no input document is in this language (check the inputs and --pair)"
    else:
        reasons = [f"{c.get('too_short', 0)} shorter than min_chars {p.min_chars}",
                   f"{c.get('too_long', 0)} longer than max_chars {p.max_chars}",
                   f"{c.get('wrong_language', 0)} in another language",
                   f"{c.get('duplicate', 0)} duplicate"]
        why = (f"prepare kept none of {c.get('sentences', 0)} sentences in "
               f"{c['documents']} documents: {', '.join(reasons)}")
    return f"{lang}: no sentences to mine {pair} in {where} ({why})"


class KnnStage(Stage):
    """``embeddings/{src}``, ``embeddings/{tgt}`` -> ``knn/{src}-{tgt}/{fwd,bwd}``."""

    placement = "driver"

    def __init__(self, cfg: Config, src: str, tgt: str):
        self.cfg, self.src, self.tgt = cfg, src, tgt
        self.name = f"knn/{src}-{tgt}"
        self.info: dict[str, dict] = {}
        self._decoded: dict[str, np.ndarray] = {}  # path -> embeddings (see _loader)

    def check(self, ctx) -> None:
        self.sides, metas = {}, {}
        for lang in (self.src, self.tgt):
            paths = embedding_shards(ctx, lang)
            metas[lang] = check_consistent(paths)
            self.sides[lang] = _Side(paths, [num_rows(p) for p in paths],
                                     [ctx.digest(p) for p in paths])
            if not sum(self.sides[lang].rows):
                raise MinerError(no_sentences(ctx, lang, f"{self.src}-{self.tgt}"))
        ms, mt = metas[self.src], metas[self.tgt]
        if (ms.encoder, ms.dim) != (mt.encoder, mt.dim):
            raise MinerError(f"{self.src} embeddings are {ms.encoder} (dim {ms.dim}) but {self.tgt} "
                             f"embeddings are {mt.encoder} (dim {mt.dim}); embed both with one encoder")
        self.encoder, self.dim = ms.encoder, ms.dim

    def _direction(self, direction: str) -> tuple[_Side, _Side]:
        q, db = (self.src, self.tgt) if direction == "fwd" else (self.tgt, self.src)
        return self.sides[q], self.sides[db]

    def tasks(self, ctx) -> list[Task]:
        kc = self.cfg.knn
        tasks = []
        for direction in DIRECTIONS:
            q, db = self._direction(direction)
            n_db = sum(db.rows)
            kind = choose_index(kc.index, n_db)
            backend = resolve_backend(kc.knn_backend)
            # max_memory and knn_backend are replaced by what they resolve to; the
            # threads never change the neighbours (tests/test_knn_sharded.py)
            settings = {key: v for key, v in dataclasses.asdict(kc).items()
                        if key not in ("max_memory", "knn_backend", "knn_threads")}
            settings.update(index=kind, backend=backend if kind == "flat" else "faiss",
                            seed=self.cfg.seed)
            if kind == "flat":
                settings.pop("nprobe")
            self.info[direction] = {"index": kind, "backend": backend, "database": n_db,
                                    "settings": settings}
            out = ctx.run.knn(self.src, self.tgt, direction)
            wanted = {p.name for p in q.paths}
            for stale in RunDir.shards(out):  # parts of a run with other query shards
                if stale.name not in wanted:
                    stale.unlink()
            for p, rows, digest in zip(q.paths, q.rows, q.digests):
                fp = {"knn": settings, "encoder": self.encoder, "dim": self.dim,
                      "query": digest, "database": db.digests}
                tasks.append(Task(f"{direction}/{p.name}", fp, (direction, str(p), rows)))
        return tasks

    def run_pending(self, ctx, pending: list[Task], done) -> None:
        with search_threads(self.cfg.knn.knn_threads):
            self._run_pending(ctx, pending, done)

    def _run_pending(self, ctx, pending: list[Task], done) -> None:
        if self._both_at_once(ctx, pending):
            for direction in DIRECTIONS:
                _remove_index_dir(ctx.run.knn(self.src, self.tgt, direction))
            self._search_both(ctx, pending, done)
            return
        for direction in DIRECTIONS:
            todo = [t for t in pending if t.item[0] == direction]
            out = ctx.run.knn(self.src, self.tgt, direction)
            info = self.info[direction]
            _, db = self._direction(direction)
            index_path = None
            if info["index"] != "flat":
                index_path = index_file(out, info["index"], self.cfg.seed, self.encoder,
                                        self.dim, db.digests, sum(db.rows))
                info["index_trained"] = False
            # an index of another database or other settings would never be used again
            _remove_index_dir(out, keep=index_path if todo else None)
            if not todo:
                continue
            self._search(ctx, direction, todo, out, index_path, done)
            _remove_index_dir(out)  # every shard of the direction is done

    def _both_at_once(self, ctx, pending: list[Task]) -> bool:
        """Both directions from one GEMM per tile (``knn_torch_bf16_both``): exact
        search on the CPU bf16 path, in this process, every shard of both directions
        to search, and both sides resident within ``--max-memory``."""
        if ctx.cluster is not None or len(pending) != sum(len(s.paths) for s in self.sides.values()):
            return False
        if any(self.info[d]["index"] != "flat" or not _cpu_bf16_path(self.info[d]["backend"])
               for d in DIRECTIONS):
            return False
        n = sum(sum(s.rows) for s in self.sides.values())
        part_rows, _ = plan_blocks(parse_memory(self.cfg.knn.max_memory), self.dim, 1, n, "torch")
        return part_rows >= n

    def _search_both(self, ctx, pending: list[Task], done) -> None:
        from miner.knn.cpu_bf16 import PreparedDatabase, knn_torch_bf16_both

        kc = self.cfg.knn
        load = self._loader(parse_memory(kc.max_memory))

        def whole(lang):
            paths = self.sides[lang].paths
            parts = [load(p) for p in paths]
            return parts[0] if len(parts) == 1 else np.concatenate(parts)

        x, y = PreparedDatabase(whole(self.src)), PreparedDatabase(whole(self.tgt))
        with Progress(f"knn {self.src}-{self.tgt} fwd+bwd", total=len(x), unit="query") as bar:
            results = dict(zip(DIRECTIONS, knn_torch_bf16_both(x, y, kc.k, on_block=bar.update)))
        for direction in DIRECTIONS:
            q, db = self._direction(direction)
            out = ctx.run.knn(self.src, self.tgt, direction)
            db_ids = read_ids(db.paths)
            sims, rows = results[direction]
            # each query shard's first row in the concatenation searched
            starts = dict(zip(map(str, q.paths), np.cumsum([0] + q.rows).tolist()))
            for task in (t for t in pending if t.item[0] == direction):
                path, n = as_path(task.item[1]), task.item[2]
                search = _precomputed(sims, rows, starts[str(task.item[1])])
                written = search_shard(path, task.fingerprint, out, search, db_ids, max(n, 1),
                                       kc.k, load=load)
                done(task, describe_result(Result([out / path.name],
                                                  {direction: {"queries": written, "shards": 1}})))

    def _search(self, ctx, direction, todo, out, index_path, done) -> None:
        kc = self.cfg.knn
        info = self.info[direction]
        q, db = self._direction(direction)
        budget = parse_memory(kc.max_memory)
        part_rows, q_block = plan_blocks(budget, self.dim, max(q.rows), sum(db.rows),
                                         info["backend"])
        shards = [(as_path(t.item[1]), t.fingerprint) for t in todo]

        def finished(task, rows):
            done(task, describe_result(Result([out / as_path(task.item[1]).name],
                                              {direction: {"queries": rows, "shards": 1}})))

        cluster = ctx.cluster
        if info["index"] != "flat":
            dbase = Database(db.paths, db.rows, part_rows, load=self._loader(budget))
            index = None
            info["index_trained"] = not index_path.exists()
            if info["index_trained"]:
                index = _build_faiss_index(dbase, info["index"], kc.nprobe, self.cfg.seed)
                write_index(index, index_path)
                log.info("knn %s: trained and filled %s", out, index_path.name)
            if cluster is not None:
                from miner.knn.distributed import IndexPlan, run_index_direction

                del index  # the tasks read the file; the driver need not hold it meanwhile
                gpu = 1 if cluster.gpus() > 0 and _has_faiss_gpu() else 0
                plan = IndexPlan(str(out), str(index_path), tuple(map(str, db.paths)), q_block,
                                 kc.k, kc.nprobe, kind=info["index"], threads=1, gpu=bool(gpu))
                rows = run_index_direction(cluster, plan, shards, num_cpus=1, num_gpus=gpu)
                for task, r in zip(todo, rows):
                    finished(task, r)
                return
            if index is None:
                index = read_index(index_path, kc.nprobe)
            if gpus_available():  # pragma: no cover - no GPU in CI
                index = to_gpus(index, info["index"], dbase.n, index.d, kc.nprobe)

            search = index_searcher(index, kc.k)
            del index  # an IVF-Flat searcher holds the lists (the index is mapped)
        elif cluster is not None:
            from miner.knn.distributed import DirectionPlan, run_direction

            plan = DirectionPlan(str(out), tuple(map(str, db.paths)), tuple(db.rows), part_rows,
                                 q_block, kc.k, info["backend"])
            gpu = 1 if info["backend"] in ("torch", "triton") and cluster.gpus() > 0 else 0
            rows = run_direction(cluster, plan, shards, num_gpus=gpu)
            for task, r in zip(todo, rows):
                finished(task, r)
            return
        else:
            dbase = Database(db.paths, db.rows, part_rows, load=self._loader(budget),
                             prepare=_cpu_bf16_path(info["backend"]))

            def search(block):
                return knn_partitions(block, dbase.partitions(), kc.k, info["backend"])
            if dbase.n <= part_rows:  # one resident partition: small blocks cost nothing
                q_block = min(q_block, PROGRESS_BLOCK)
        db_ids = dbase.ids()
        load = self._loader(budget)
        total = sum(rows for _, _, rows in (t.item for t in todo))
        with Progress(f"knn {self.src}-{self.tgt} {direction}", total=total,
                      unit="query") as bar:
            for task, (path, fp) in zip(todo, shards):
                finished(task, search_shard(path, fp, out, search, db_ids, q_block, kc.k,
                                            load=load, progress=bar))

    def _loader(self, budget: int):
        """``load(path)`` for query and database shards: each shard decoded once for
        both directions (the query shards of one are the database of the other) when
        both sides' float16 rows fit an eighth of ``--max-memory``; else read each time."""
        keep = (sum(self.sides[self.src].rows) + sum(self.sides[self.tgt].rows)) \
            * self.dim * 2 <= budget * KEEP_DECODED_SHARE

        def load(path):
            key = str(path)
            emb = self._decoded.get(key)
            if emb is None:
                emb = load_embeddings(path)
                if keep:
                    self._decoded[key] = emb
            return emb
        return load

    def report(self, c: dict) -> dict:
        """Counts per direction: queries, database, index, shards, searched_shards,
        skipped_shards (and index_trained for IVF)."""
        out = {}
        for direction in DIRECTIONS:
            total = c.get(direction, {})
            ran = c.get("this_run", {}).get(direction, {})
            info = {k: v for k, v in self.info.get(direction, {}).items()
                    if k not in ("settings", "backend")}
            out[direction] = dict(total, **info, searched_shards=ran.get("shards", 0),
                                  skipped_shards=total.get("shards", 0) - ran.get("shards", 0))
        return out

    def summary(self, counts: dict) -> str:
        return ", ".join(f"{d} {counts.get(d, {}).get('queries', 0)} queries" for d in DIRECTIONS)


def run_knn(cfg: Config, out_dir, src_lang: str, tgt_lang: str, executor=None) -> dict:
    """Run the stage on its own for one pair; returns counts per direction (see
    ``KnnStage.report``)."""
    from miner.stage import run_stage

    return run_stage(KnnStage(cfg, src_lang, tgt_lang), cfg, out_dir, executor)


# -- approximate (faiss IVF / IVF-PQ) search -----------------------------------------

INDEX_DIR = KNN_INDEX  # miner.rundir


def index_file(out: Path, kind: str, seed: int, encoder: str, dim: int,
               database: list[str], n: int) -> Path:
    """``out/.index/{hash}.faiss``: the hash covers what the trained and filled index
    depends on (index kind and factory string, training sample size and seed, encoder,
    dimension, the database shards' digests), not k or nprobe, which are search-time
    settings."""
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


def _precomputed(sims: np.ndarray, rows: np.ndarray, start: int):
    """``search(block)`` for ``search_shard`` that hands out rows start... of results
    computed before, block after block."""
    pos = [start]

    def search(block):
        a = pos[0]
        pos[0] += len(block)
        return sims[a:pos[0]], rows[a:pos[0]]
    return search


def _cpu_bf16_path(backend: str) -> bool:
    """True when ``backend`` runs ``knn_torch_bf16`` (torch without CUDA), whose
    database partitions are worth preparing once (bf16 copy, norms)."""
    if backend != "torch":
        return False
    import torch

    return not torch.cuda.is_available()


def _has_faiss_gpu() -> bool:
    import faiss

    return hasattr(faiss, "GpuMultipleClonerOptions")


@contextmanager
def search_threads(threads: int):
    """Torch's and faiss's (OpenMP) threads for the search, put back after: ``threads``,
    or 0 for the cores of this process's affinity mask (taskset, cgroup cpusets), not
    the machine's count, which oversubscribes a container and spins on a shared node."""
    import faiss

    from miner.executor import usable_cores

    n = threads or usable_cores()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is an extra; faiss alone then
        torch = None
    before = (torch.get_num_threads() if torch else None, faiss.omp_get_max_threads())
    if torch and before[0] != n:  # a change rebuilds torch's OpenMP pool: only if needed
        torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    try:
        yield n
    finally:
        if torch and torch.get_num_threads() != before[0]:
            torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])


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
