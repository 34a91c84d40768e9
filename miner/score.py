"""The ``score`` stage: stored neighbours -> scored candidate pairs with provenance.

Reads ``knn/{src}-{tgt}/{fwd,bwd}/part-*.parquet`` (``miner.formats.neighbours``)
and writes ``scores/{src}-{tgt}/part-NNNNN.parquet`` (``miner.formats.scores``), best
first, every retrieved candidate (thresholds and filters come after). A
``ScoreStage`` is one global pass (the runner's finishing pass: current while the
margin settings, the shard size and the digests of the neighbour and sentence shards
are those recorded). Its steps go through the run's cluster executor when there is
one (Ray), else run in this process (a local process pool was twice slower on 2
cores, docs/mining.md):

1. global pass (driver): the ``id`` and ``mean_sim`` columns of every neighbour shard
   of both directions: the neighbourhood means of the whole corpus, never per shard;
2. one task per neighbour shard (``score_shard``): its neighbour ids mapped to rows of
   the other side, the margin of each of its k neighbours, each query's best one
   (``miner.margin.direction_best``); padded slots (similarity -inf: an approximate
   index found fewer than k neighbours) are never candidates;
3. driver: the retrieval over both directions (``miner.margin.combine``: fwd, bwd,
   intersect, or max with the greedy one-to-one pass) and the global best-first order;
4. the join of texts and provenance, a two-phase shuffle: one task per sentence shard
   takes the rows the candidates need and writes them, keyed by candidate position,
   to ``.shuffle/`` (``gather_shard``); one task per output part reads its position
   range from each of those files and writes the part (``write_part``). A single
   output part is written by one task straight from the sentence shards.

The parts are byte-identical whatever the executor and the shard sizes of the inputs.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from miner.config import Config
from miner.errors import MinerError
from miner.embed.stage import sentence_shards
from miner.executor import LocalExecutor, ThreadExecutor
from miner.formats import read_parquet
from miner.formats.neighbours import ids_digest, read_knn_shard_rows, read_means
from miner.formats.scores import SCORE_SCHEMA
from miner.io import atomic_path
from miner.margin import DIRECTION_NAMES, Candidates, combine, direction_best
from miner.rundir import DIRECTIONS, RunDir
from miner.stage import Result, Stage
from miner.storage import as_path, rmtree

log = logging.getLogger(__name__)

# the sentence shard columns each candidate carries for both sides ({src,tgt}_{column})
PROVENANCE = ("text", "doc_id", "title", "url", "revision", "position", "source", "lid_prob")


def ids_to_rows(ids: np.ndarray, query: np.ndarray, index=None) -> np.ndarray:
    """Row positions in ``ids`` (n,) of each value of ``query`` (any shape) — every
    value must be present. ``index``: a ``pd.Index(ids)`` built before, to reuse."""
    import pandas as pd

    # a hash index: several times faster than a binary search for random 64-bit ids
    index = pd.Index(ids) if index is None else index
    rows = index.get_indexer(np.asarray(query).reshape(-1)).reshape(np.shape(query))
    if (rows < 0).any():
        raise MinerError("neighbour files name sentences that the other side's neighbour "
                         "files do not hold: rerun `mine knn`")
    return rows


def neighbour_rows(other_ids: np.ndarray, nbr_ids: np.ndarray, nbr_sims: np.ndarray,
                   index=None) -> np.ndarray:
    """Rows in ``other_ids`` of the neighbours ``nbr_ids`` (n, k); -1 for padded slots.

    An approximate index (``--index ivf|ivfpq``) can find fewer than k neighbours; the
    kNN stage pads those slots with id 0 and similarity -inf. They are not looked up
    (id 0 names no sentence) and never become candidates; any other id missing from
    the other side is an error.
    """
    valid = nbr_sims != -np.inf
    if valid.all():
        return ids_to_rows(other_ids, nbr_ids, index)
    rows = np.full(nbr_ids.shape, -1, dtype=np.int64)
    rows[valid] = ids_to_rows(other_ids, nbr_ids[valid], index)
    return rows


# -- neighbour shards -> each query's best candidate (tasks) ---------------------------

def _read_columns(path, columns: list[str]) -> pa.Table:
    return read_parquet(path, columns=columns)


@dataclass(frozen=True)
class ScoreContext:
    """What every ``score_shard`` task shares: both sides' ids and neighbourhood means
    (sent once: Ray puts the task function in its object store)."""

    token: str  # names this context in each worker's index cache
    margin: str
    src_ids: np.ndarray
    src_mean: np.ndarray
    tgt_ids: np.ndarray
    tgt_mean: np.ndarray
    src_digest: str = ""  # ids_digest of each side's ids (stored neighbour rows)
    tgt_digest: str = ""


# the hash index of the other side, built once per worker process and direction (a
# Ray worker keeps the last one until it runs a task of another score context); the
# lock: tasks of one direction may run in threads side by side (ThreadExecutor)
_INDEX_CACHE: dict = {}
_INDEX_LOCK = threading.Lock()


def _other_side(ctx: ScoreContext, direction: str, build: bool = True):
    """The other side's ids and means, and their hash index (None unless ``build``)."""
    import pandas as pd

    ids, mean = (ctx.tgt_ids, ctx.tgt_mean) if direction == "fwd" else (ctx.src_ids, ctx.src_mean)
    if not build:
        return ids, mean, None
    key = (ctx.token, direction)
    with _INDEX_LOCK:
        if key not in _INDEX_CACHE:
            for stale in [k for k in _INDEX_CACHE if k[0] != ctx.token]:
                del _INDEX_CACHE[stale]
            _INDEX_CACHE[key] = pd.Index(ids)
        return ids, mean, _INDEX_CACHE[key]


def score_shard(ctx: ScoreContext, item: tuple[str, str, int]) -> tuple[np.ndarray, np.ndarray]:
    """A task: the best candidate of every query of one neighbour shard.

    item: (direction, shard path, row offset of the shard in its direction). Returns
    the best row on the other side (q,) int64 (-1: no neighbour) and its margin (q,)
    float64, exactly the rows ``miner.margin.retrieve`` computes for these queries.
    """
    direction, path, offset = item
    # the other side's ids are the other direction's query ids, end to end
    rows_of = ctx.tgt_digest if direction == "fwd" else ctx.src_digest
    ids, nbr_ids, nbr_sims, mean, rows = read_knn_shard_rows(path, rows_of)
    own = ctx.src_ids if direction == "fwd" else ctx.tgt_ids
    if not np.array_equal(ids, own[offset:offset + len(ids)]):
        raise MinerError(f"{path} changed while `mine score` read it: rerun `mine score`")
    other_ids, other_mean, index = _other_side(ctx, direction, build=rows is None)
    if rows is None:  # no stored rows (an older knn), or rows of other ids: look them up
        rows = neighbour_rows(other_ids, nbr_ids, nbr_sims, index)
    return direction_best(nbr_sims, rows, mean, other_mean, ctx.margin)


# -- texts and provenance: the two-phase shuffle (tasks) -------------------------------

@dataclass(frozen=True)
class GatherJob:
    """Rows of one sentence shard that candidates need: ``local_rows`` of ``shard``
    for the candidates at ``positions`` (ascending) of the best-first order."""

    shard: str
    positions: np.ndarray  # (r,) int64, ascending
    local_rows: np.ndarray  # (r,) int64
    out: str = ""  # the shuffle file (gather_shard)
    row_group_size: int = 1024


# provenance columns of sentence shards being read ahead in this process (path ->
# Future of the table), while the driver runs the retrieval: see ``score_pair``
_READ_AHEAD: dict = {}


def _provenance(shard: str) -> pa.Table:
    """The provenance columns of a sentence shard: read ahead, or read now."""
    ahead = _READ_AHEAD.get(shard)
    return ahead.result() if ahead is not None else _read_columns(as_path(shard), list(PROVENANCE))


def _take_provenance(job: GatherJob, start: int = 0, stop: int | None = None) -> pa.Table:
    """``pos`` and the provenance columns of the job's rows with position in [start, stop)."""
    lo, hi = 0, len(job.positions)
    if start or stop is not None:
        lo, hi = np.searchsorted(job.positions, [start, stop if stop is not None else
                                                 np.iinfo(np.int64).max])
    t = _provenance(job.shard).take(pa.array(job.local_rows[lo:hi]))
    return t.add_column(0, "pos", pa.array(job.positions[lo:hi], pa.int64()))


def gather_shard(job: GatherJob) -> str:
    """A task (phase 1): write the rows ``job`` names with their candidate positions,
    sorted by position, in small row groups, to ``job.out`` (atomically)."""
    table = _take_provenance(job)
    with atomic_path(job.out) as tmp:
        # temporary: a fast codec (read back once by the part tasks, then removed)
        pq.write_table(table, tmp, row_group_size=max(1, job.row_group_size),
                       compression="lz4")
    return job.out


@dataclass(frozen=True)
class PartJob:
    """One output part: candidates [start, stop) of the best-first order, their ids,
    scores and direction codes, and where each side's provenance lies: shuffle files
    (``str``, read by position range) or sentence shards (``GatherJob``)."""

    path: str
    start: int
    stop: int
    src_id: np.ndarray
    tgt_id: np.ndarray
    score: np.ndarray
    direction: np.ndarray
    src_sources: tuple
    tgt_sources: tuple


def _gather(sources: tuple, start: int, stop: int) -> pa.Table:
    """Provenance rows of candidates start..stop-1 in position order, from shuffle
    files or straight from sentence shards."""
    tables = []
    for source in sources:
        if isinstance(source, GatherJob):
            tables.append(_take_provenance(source, start, stop))
        else:
            tables.append(read_parquet(source, filters=[("pos", ">=", start),
                                                         ("pos", "<", stop)]))
    if not tables:  # no candidates
        from miner.formats.sentences import SCHEMA

        tables = [pa.table({"pos": pa.array([], pa.int64()),
                            **{c: pa.array([], SCHEMA.field(c).type) for c in PROVENANCE}})]
    table = pa.concat_tables(tables)
    pos = table.column("pos").to_numpy()
    want = np.arange(start, stop)
    if np.array_equal(pos, want):  # one source, or sources that do not interleave
        return table.drop_columns(["pos"])
    order = np.argsort(pos, kind="stable")
    if not np.array_equal(pos[order], want):
        raise MinerError(f"scores {start}..{stop}: the gathered sentence rows do not match "
                         "the candidates (files changed during `mine score`?): rerun it")
    return table.take(pa.array(order)).drop_columns(["pos"])


def write_part(job: PartJob) -> str:
    """A task (phase 2): assemble one output part and write it atomically."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # both sides at once (Arrow releases the GIL)
        s, t = pool.map(lambda sources: _gather(sources, job.start, job.stop),
                        (job.src_sources, job.tgt_sources))
    directions = pa.array([DIRECTION_NAMES[d] for d in (1, 2, 3)], pa.string())
    table = pa.table({
        "src_id": pa.array(job.src_id, pa.uint64()),
        "tgt_id": pa.array(job.tgt_id, pa.uint64()),
        "src_text": s.column("text"), "tgt_text": t.column("text"),
        "score": pa.array(job.score, pa.float64()),
        "direction": directions.take(pa.array(job.direction.astype(np.int64) - 1)),
        # doc_id, title, url, revision, position, source of each side, as stored
        **{f"{side}_{c}": table.column(c) for c in PROVENANCE
           if c not in ("text", "lid_prob") for side, table in (("src", s), ("tgt", t))},
        "src_lid_prob": s.column("lid_prob").cast(pa.float32()),
        "tgt_lid_prob": t.column("lid_prob").cast(pa.float32()),
    }, schema=SCORE_SCHEMA)
    with atomic_path(job.path) as tmp:
        # dictionaries only for the columns of a handful of values (directions, input
        # files): elsewhere they are built, overflow and are dropped (half of the write
        # time on texts and ids), and zstd already folds repeated titles and URLs.
        # Statistics (min/max) for the numeric columns only: nothing prunes on
        # strings, and computing them was a fifth of the write
        pq.write_table(table, tmp, compression="zstd", use_dictionary=list(DICTIONARY_COLUMNS),
                       write_statistics=[f.name for f in SCORE_SCHEMA
                                         if not pa.types.is_string(f.type)])
    return job.path


# score parts' columns of few distinct values: written with a dictionary
DICTIONARY_COLUMNS = ("direction", "src_source", "tgt_source")


def _sentence_rows(shards: list, knn_ids: np.ndarray, rows: np.ndarray
                   ) -> tuple[list, np.ndarray, np.ndarray]:
    """For each candidate row of the neighbour files, the sentence shard (of
    ``shards``) that holds the sentence and its row there."""
    ids = [_read_columns(p, ["id"]).column("id").to_numpy() for p in shards]
    all_ids = np.concatenate(ids)
    # neighbour files follow the sentence shards' order; map through ids to be safe
    if not np.array_equal(all_ids, knn_ids):
        rows = ids_to_rows(all_ids, knn_ids[rows])
    offsets = np.cumsum([0] + [len(x) for x in ids])
    shard = np.searchsorted(offsets, rows, side="right") - 1
    return shards, shard, rows - offsets[shard]


def _side_jobs(shards: list[Path], shard_of: np.ndarray, local: np.ndarray
               ) -> list[GatherJob]:
    # one stable sort groups the candidate positions by shard, ascending within each
    # (a single shard needs none)
    order = (np.arange(len(shard_of), dtype=np.int64) if len(shards) == 1
             else np.argsort(shard_of, kind="stable").astype(np.int64))
    bounds = np.searchsorted(shard_of[order], np.arange(len(shards) + 1))
    jobs = []
    for i, path in enumerate(shards):
        positions = order[bounds[i]:bounds[i + 1]]
        if len(positions):
            jobs.append(GatherJob(str(path), positions, local[positions].astype(np.int64)))
    return jobs


class ScoreStage(Stage):
    """``knn/{src}-{tgt}`` (+ the sentence shards) -> ``scores/{src}-{tgt}``."""

    def __init__(self, cfg: Config, src: str, tgt: str):
        self.cfg, self.src, self.tgt = cfg, src, tgt
        self.name = f"score/{src}-{tgt}"

    def check(self, ctx) -> None:
        pair = f"{self.src}-{self.tgt}"
        self.knn = {d: ctx.input_shards(f"knn/{pair}", ctx.run.knn(self.src, self.tgt, d),
                                        f"no neighbour shards (run `mine knn {ctx.run} "
                                        f"--pair {pair}` first)")
                    for d in DIRECTIONS}
        self.sentences = {lang: sentence_shards(ctx, lang) for lang in (self.src, self.tgt)}

    def finish_fingerprint(self, ctx):
        fp = {"margin": self.cfg.score.margin, "retrieval": self.cfg.score.retrieval,
              "rows_per_part": self.cfg.shard_size,
              "knn": {d: [ctx.digest(p) for p in ps] for d, ps in self.knn.items()},
              "sentences": {lang: [ctx.digest(p) for p in ps]
                            for lang, ps in self.sentences.items()}}
        if self.cfg.score.scorer:  # only then: runs without one stay current
            from miner.scorer import load_scorer

            fp["scorer"] = load_scorer(self.cfg.score.scorer).digest
            fp["lid_model"] = self.cfg.prepare.lid_model
        return fp

    def finish(self, ctx, records) -> Result:
        files, counts = score_pair(self.cfg, ctx.run, self.src, self.tgt, self.knn,
                                   self.sentences, ctx.cluster)
        return Result(outputs=files, counts=counts)

    def summary(self, counts: dict) -> str:
        return f"{counts.get('candidates', 0)} candidates"


def run_score(cfg: Config, out_dir, src: str, tgt: str, executor=None) -> dict:
    """Run the stage on its own for one pair; returns its counts."""
    from miner.stage import run_stage

    return run_stage(ScoreStage(cfg, src, tgt), cfg, out_dir, executor)


def score_pair(cfg: Config, run: RunDir, src: str, tgt: str, knn: dict, sentences: dict,
               executor=None) -> tuple[list, dict]:
    """Score the neighbour shards ``knn`` (``{"fwd": [...], "bwd": [...]}``) of one pair
    and write the candidates; returns the files written and counts. ``executor``:
    where the steps' tasks run (None: in this process)."""
    # local: threads (the steps run in numpy, pandas and Arrow, which release the GIL)
    executor = executor or ThreadExecutor(0)
    pair = f"{src}-{tgt}"
    margin, retrieval = cfg.score.margin, cfg.score.retrieval

    src_ids, src_mean, tgt_ids, tgt_mean, bests = direction_bests(margin, knn, executor, pair)
    # while the driver runs the retrieval (one core), another reads the sentence
    # shards' provenance that the output part will take rows of: only when the tasks
    # run in this process, all candidates go to one part and each side is at most a
    # shard (memory: two sentence shards' provenance, as the part's own reads)
    n, m = len(src_ids), len(tgt_ids)
    most = {"fwd": n, "bwd": m}.get(retrieval, min(n, m))  # one-to-one: min(n, m)
    ahead = None
    if (isinstance(executor, ThreadExecutor) and not cfg.score.scorer
            and most <= max(1, cfg.shard_size) and max(n, m) <= max(1, cfg.shard_size)):
        from concurrent.futures import ThreadPoolExecutor

        ahead = ThreadPoolExecutor(1)
        for shard in [*sentences[src], *sentences[tgt]]:
            _READ_AHEAD[str(shard)] = ahead.submit(_read_columns, shard, list(PROVENANCE))
    try:
        # 3. the retrieval over both directions, best first (by the margin, or by a
        # learned scorer over the pooled best pairs: miner.scorer)
        if cfg.score.scorer:
            from miner.scorer import learned_retrieval, load_scorer

            scorer = load_scorer(cfg.score.scorer)
            pool, x = pool_features(cfg, src, tgt, bests, src_mean, tgt_mean, src_ids,
                                    tgt_ids, sentences, knn)
            cands = learned_retrieval(scorer, pool, x, retrieval)
        else:
            cands = combine(*bests, retrieval)
        # 4. texts and provenance, then the parts
        files = write_candidates(executor, run, src, tgt, cands, src_ids, tgt_ids, sentences,
                                 cfg.shard_size, desc=f"score {pair}")
    finally:
        if ahead is not None:
            ahead.shutdown(cancel_futures=True)
            _READ_AHEAD.clear()
    counts = {"sources": int(len(src_ids)), "targets": int(len(tgt_ids)),
              "candidates": int(len(cands)),
              **{f"direction_{n}": int((cands.direction == c).sum())
                 for c, n in DIRECTION_NAMES.items()}}
    log.info("score %s: %d candidates", pair, len(cands))
    return files, counts


def direction_bests(margin: str, knn: dict, executor, pair: str = ""):
    """Steps 1 and 2 of the stage: both sides' ids and neighbourhood means, and each
    direction's best candidates ``(fwd_best, fwd_score, bwd_best, bwd_score)``."""
    # 1. global pass: the neighbourhood means of the whole corpus
    sides = {}
    for direction in DIRECTIONS:
        means = [read_means(p) for p in knn[direction]]
        sides[direction] = (np.concatenate([m[0] for m in means]),
                            np.concatenate([m[1] for m in means]), [len(m[0]) for m in means])
    (src_ids, src_mean, fwd_rows), (tgt_ids, tgt_mean, bwd_rows) = sides["fwd"], sides["bwd"]
    ctx = ScoreContext(uuid.uuid4().hex, margin, src_ids, src_mean, tgt_ids, tgt_mean,
                       ids_digest(src_ids), ids_digest(tgt_ids))
    # 2. each neighbour shard's best candidates
    items = [("fwd", str(p), int(o)) for p, o in zip(knn["fwd"], np.cumsum([0] + fwd_rows))] + \
            [("bwd", str(p), int(o)) for p, o in zip(knn["bwd"], np.cumsum([0] + bwd_rows))]
    try:
        best = executor.map(partial(score_shard, ctx), items,
                            desc=f"score {pair}: neighbour shards scored")
    finally:
        _INDEX_CACHE.clear()  # tasks that ran in this process built it here
    nf = len(knn["fwd"])

    def cat(results, i, dtype):
        return np.concatenate([r[i] for r in results]) if results else np.zeros(0, dtype)

    bests = (cat(best[:nf], 0, np.int64), cat(best[:nf], 1, np.float64),
             cat(best[nf:], 0, np.int64), cat(best[nf:], 1, np.float64))
    return src_ids, src_mean, tgt_ids, tgt_mean, bests


def run_pool_features(cfg: Config, work_dir, src: str, tgt: str):
    """The pooled candidates of a run folder whose knn stage ran, their features and
    both sides' sentence ids: what ``mine eval bucc --learn`` fits a scorer on."""
    run = RunDir(work_dir)
    knn = {d: RunDir.shards(run.knn(src, tgt, d)) for d in DIRECTIONS}
    sentences = {lang: RunDir.shards(run.sentences(lang)) for lang in (src, tgt)}
    src_ids, src_mean, tgt_ids, tgt_mean, bests = direction_bests(
        cfg.score.margin, knn, LocalExecutor(1), f"{src}-{tgt}")
    pool, x = pool_features(cfg, src, tgt, bests, src_mean, tgt_mean, src_ids, tgt_ids,
                            sentences, knn)
    return pool, x, src_ids, tgt_ids


def candidate_texts(shards: list, ids: np.ndarray, rows: np.ndarray
                    ) -> tuple[pa.Array, np.ndarray]:
    """Text (p,) and LID probability (p,) of the sentences at ``rows`` of ``ids`` (the
    neighbour files' order), read from the sentence shards."""
    shards, shard_of, local = _sentence_rows(shards, ids, rows)
    order = np.argsort(shard_of, kind="stable")
    bounds = np.searchsorted(shard_of[order], np.arange(len(shards) + 1))
    tables = []
    for i, path in enumerate(shards):
        take = local[order[bounds[i]:bounds[i + 1]]]
        if len(take):
            tables.append(_read_columns(path, ["text", "lid_prob"]).take(pa.array(take)))
    if not tables:
        return pa.array([], pa.large_string()), np.zeros(0)
    t = pa.concat_tables(tables)
    back = np.empty(len(order), np.int64)
    back[order] = np.arange(len(order))
    t = t.take(pa.array(back))
    return (t.column("text").combine_chunks().cast(pa.large_string()),
            np.nan_to_num(t.column("lid_prob").to_numpy(zero_copy_only=False)
                          .astype(np.float64)))  # null: no LID ran


def top_sims(paths: list, n_top: int = 2) -> np.ndarray:
    """The ``n_top`` best neighbour similarities (n, n_top) float64 of every query of
    one direction's neighbour shards, in their order; a missing neighbour (fewer than
    ``n_top`` found, or k < ``n_top``) repeats the last one found (-inf: none)."""
    blocks = []
    for p in paths:
        sims = read_parquet(p, columns=["nbr_sims"]).column("nbr_sims").combine_chunks()
        k = sims.type.list_size
        m = sims.values.to_numpy(zero_copy_only=False).reshape(len(sims), k)[:, :n_top]
        blocks.append(m.astype(np.float64))
    top = np.concatenate(blocks) if blocks else np.zeros((0, n_top))
    if top.shape[1] < n_top:
        top = np.concatenate([top] + [top[:, -1:]] * (n_top - top.shape[1]), axis=1)
    for j in range(1, n_top):
        top[:, j] = np.where(np.isfinite(top[:, j]), top[:, j], top[:, j - 1])
    return top


def pool_features(cfg: Config, src: str, tgt: str, bests: tuple, src_mean: np.ndarray,
                  tgt_mean: np.ndarray, src_ids: np.ndarray, tgt_ids: np.ndarray,
                  sentences: dict, knn: dict):
    """The pooled best pairs of both directions (``miner.scorer.pool_candidates``) and
    their features (``miner.scorer.features``): cosines and neighbourhood means from
    the neighbour files, texts and LID probabilities from the sentence shards (LID is
    run on the candidates' sentences when a side's shards carry none: ``mine pair``,
    ``mine eval``); each side's best two neighbour similarities from ``knn`` (the
    neighbour shards of both directions)."""
    from miner.margin import BOTH
    from miner.scorer import cosines, features, lid_probs, pool_candidates

    pool = pool_candidates(*bests)
    ms, mt = src_mean[pool.src].astype(np.float64), tgt_mean[pool.tgt].astype(np.float64)
    cos = cosines(pool.score, (ms + mt) / 2, cfg.score.margin)
    sides = []
    for lang, ids, rows in ((src, src_ids, pool.src), (tgt, tgt_ids, pool.tgt)):
        text, lid = candidate_texts(sentences[lang], ids, rows)
        if len(lid) and not lid.any():
            lid = lid_probs(text.to_pylist(), lang, cfg.prepare.lid_model)
        sides.append((text, lid))
    (st, sl), (tt, tl) = sides
    top_s, top_t = top_sims(knn["fwd"])[pool.src], top_sims(knn["bwd"])[pool.tgt]
    return pool, features(cos, ms, mt, pool.direction == BOTH, st, tt, sl, tl,
                          top_src=top_s, top_tgt=top_t)


def write_candidates(executor, run: RunDir, src: str, tgt: str,
                     cands: Candidates, src_ids: np.ndarray, tgt_ids: np.ndarray,
                     sentences: dict, rows_per_part: int, desc: str = "") -> list:
    """Join the candidates' texts and provenance and write ``part-NNNNN.parquet`` files
    of ``rows_per_part`` rows (atomically, stale parts removed); returns their paths."""
    directory = run.scores(src, tgt)
    directory.mkdir(parents=True, exist_ok=True)
    shuffle = run.score_shuffle(src, tgt)
    if shuffle.exists():
        rmtree(shuffle)  # left by an interrupted run
    rows_per_part = max(1, rows_per_part)
    p = len(cands)
    n_parts = max(1, -(-p // rows_per_part))
    src_jobs = _side_jobs(*_sentence_rows(sentences[src], src_ids, cands.src))
    tgt_jobs = _side_jobs(*_sentence_rows(sentences[tgt], tgt_ids, cands.tgt))
    src_cand_ids, tgt_cand_ids = src_ids[cands.src], tgt_ids[cands.tgt]

    if n_parts == 1:  # one task, straight from the sentence shards
        sources = {"src": tuple(src_jobs), "tgt": tuple(tgt_jobs)}
    else:  # phase 1: each sentence shard's rows, keyed by candidate position
        jobs = []
        for side, side_jobs in (("src", src_jobs), ("tgt", tgt_jobs)):
            for job in side_jobs:
                rg = max(1024, -(-len(job.positions) // n_parts))
                jobs.append(dataclasses.replace(
                    job, out=str(shuffle / f"{side}.{as_path(job.shard).name}"), row_group_size=rg))
        executor.map(gather_shard, jobs, desc=desc and f"{desc}: texts gathered")
        ranges = {j.out: (int(j.positions[0]), int(j.positions[-1])) for j in jobs}
        sources = {"src": tuple(j.out for j in jobs[:len(src_jobs)]),
                   "tgt": tuple(j.out for j in jobs[len(src_jobs):])}

    parts = []
    for i in range(n_parts):
        a, b = i * rows_per_part, min(p, (i + 1) * rows_per_part)

        def needed(side):
            if n_parts == 1:
                return sources[side]
            return tuple(f for f in sources[side] if ranges[f][0] < b and ranges[f][1] >= a)

        parts.append(PartJob(str(RunDir.shard(directory, i)), a, b,
                             src_cand_ids[a:b], tgt_cand_ids[a:b], cands.score[a:b],
                             cands.direction[a:b], needed("src"), needed("tgt")))
    executor.map(write_part, parts, desc=desc and f"{desc}: parts written")  # phase 2
    if shuffle.exists():
        rmtree(shuffle)
    names = [as_path(job.path).name for job in parts]
    for stale in RunDir.shards(directory):
        if stale.name not in names:
            stale.unlink()
    return [job.path for job in parts]
