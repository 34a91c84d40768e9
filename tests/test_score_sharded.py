"""`mine score` per neighbour shard through an executor.

The parts are checked against what defines them (``check_scores``), recomputed from
the stored neighbour shards with the public ``miner.margin.apply_margin``: best first;
each score the margin of its pair; for ``fwd``/``bwd`` every query's best candidate,
for ``intersect`` the pairs that are each other's best, for ``max`` LASER's greedy
one-to-one pass over both directions' best; directions; and the texts and provenance
of the sentence shards. The parts are byte-identical whatever the executor (in
process, or a spawned process pool, which proves the tasks pickle) and the output
shard size gives the same rows (many parts through the shuffle, or one written by a
single task); sentence shards in another order give the same bytes; padded neighbour
slots (an approximate index found fewer than k neighbours) are never candidates.
Real embeddings of the bundled examples, several shards per side.
"""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import EXAMPLES

from miner.config import Config
from miner.errors import MinerError
from miner.executor import LocalExecutor
from miner.formats.neighbours import (ROWS_OF, ids_digest, read_knn_shard, read_knn_shard_rows,
                                      write_knn_shard)
from miner.formats.scores import SCORE_SCHEMA
from miner.knn.stage import knn_shards, read_knn
from miner.margin import RETRIEVALS, apply_margin
from miner.rundir import DIRECTIONS, RunDir
from miner.score import PROVENANCE, run_score, score_pair

SRC, TGT = "de", "en"


# -- a run directory: the examples prepared, embedded and searched, 20 sentences a shard --

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, muse):
    from miner.embed.stage import run_embed
    from miner.knn.stage import run_knn
    from miner.prepare import prepare

    out = tmp_path_factory.mktemp("score") / "run"
    cfg = Config(shard_size=20)
    prepare(cfg, [str(EXAMPLES / "articles" / f"{lang}.jsonl") for lang in (SRC, TGT)],
            [SRC, TGT], out, LocalExecutor(1))  # in process: a pool costs more than these inputs
    for lang in (SRC, TGT):
        run_embed(cfg, out, lang, muse)
    run_knn(cfg, out, SRC, TGT)
    for direction in DIRECTIONS:
        assert len(knn_shards(out, SRC, TGT, direction)) >= 3
    return out


def config(retrieval="max", margin="ratio", shard_size=20) -> Config:
    cfg = Config(shard_size=shard_size)
    cfg.score.retrieval, cfg.score.margin = retrieval, margin
    return cfg


def scores_dir(out: Path) -> Path:
    return RunDir(out).scores(SRC, TGT)


def part_bytes(out: Path) -> dict:
    """Every file and folder in the scores folder (no stale parts, no ``.shuffle/``)."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in scores_dir(out).iterdir()}


def read_scores(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in RunDir.shards(scores_dir(out)))


def score_with(executor, cfg: Config, out: Path) -> dict:
    """The stage's work on ``executor`` (``score_pair``: a local pool runs its tasks in
    spawned processes, which ``run_score`` keeps in process); returns the counts."""
    run = RunDir(out)
    knn = {d: knn_shards(out, SRC, TGT, d) for d in DIRECTIONS}
    sentences = {lang: RunDir.shards(run.sentences(lang)) for lang in (SRC, TGT)}
    return score_pair(cfg, run, SRC, TGT, knn, sentences, executor)[1]


# -- what the parts must hold, from the neighbour and sentence shards ------------------

def best_neighbours(out: Path, margin: str) -> dict:
    """Per direction, query id -> (its best neighbour's id, that margin), queries in
    neighbour-file order: the margin of every stored neighbour (``apply_margin`` over
    the mean of both sides' ``mean_sim``), padded slots (similarity -inf) skipped, the
    first best on ties."""
    knn = {d: read_knn(out, SRC, TGT, d) for d in DIRECTIONS}
    best = {}
    for direction, other in (("fwd", "bwd"), ("bwd", "fwd")):
        ids, nbr, sims, mean = knn[direction]
        row_of = {int(i): r for r, i in enumerate(knn[other][0])}
        valid = sims != -np.inf
        rows = np.array([[row_of[int(n)] if ok else 0 for n, ok in zip(ns, oks)]
                         for ns, oks in zip(nbr, valid)], dtype=np.int64)
        denom = (mean.astype(np.float64)[:, None] + knn[other][3].astype(np.float64)[rows]) / 2
        margins = np.where(valid, apply_margin(sims, denom, margin), -np.inf)
        col = margins.argmax(axis=1)
        best[direction] = {int(q): (int(nbr[i, col[i]]), float(margins[i, col[i]]))
                           for i, q in enumerate(ids) if valid[i].any()}
    return best


def check_scores(out: Path, cfg: Config, counts: dict | None = None) -> pa.Table:
    """Assert the scores parts of ``out`` are what ``cfg`` defines; returns them."""
    table = read_scores(out)
    assert table.schema == SCORE_SCHEMA
    parts = RunDir.shards(scores_dir(out))
    rows_per_part = max(1, cfg.shard_size)
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(len(parts))]
    assert len(parts) == max(1, -(-table.num_rows // rows_per_part))
    assert all(pq.read_metadata(p).num_rows == rows_per_part for p in parts[:-1])
    if counts is not None:
        assert counts["candidates"] == table.num_rows
    got = list(zip(table.column("src_id").to_pylist(), table.column("tgt_id").to_pylist(),
                   table.column("score").to_pylist(), table.column("direction").to_pylist()))
    scores = [g[2] for g in got]
    assert scores == sorted(scores, reverse=True)  # best first

    best = best_neighbours(out, cfg.score.margin)
    fwd, bwd = best["fwd"], best["bwd"]

    def direction(s, t, found):  # both: each is the other's best
        return "both" if fwd.get(s, (None,))[0] == t and bwd.get(t, (None,))[0] == s else found

    fwd_cands = [(s, t, v, direction(s, t, "fwd")) for s, (t, v) in fwd.items()]
    bwd_cands = [(s, t, v, direction(s, t, "bwd")) for t, (s, v) in bwd.items()]
    retrieval = cfg.score.retrieval
    # a stable sort: ties stay in query order
    if retrieval == "fwd":  # every source with its best target
        assert got == sorted(fwd_cands, key=lambda c: -c[2])
    elif retrieval == "bwd":  # every target with its best source
        assert got == sorted(bwd_cands, key=lambda c: -c[2])
    elif retrieval == "intersect":  # the pairs found both ways
        assert got == sorted([c for c in fwd_cands if c[3] == "both"], key=lambda c: -c[2])
    else:
        assert retrieval == "max"
        check_greedy_one_to_one(got, fwd_cands + bwd_cands)
    check_provenance(out, table)
    return table


def check_greedy_one_to_one(got: list, pool: list) -> None:
    """``got`` is LASER's greedy pass over ``pool`` (both directions' best candidates):
    walk the pool by score descending (ties: pool order) and keep a candidate when
    neither side was kept before. Exactly the walk's result when (1) no sentence is
    kept twice, (2) every kept row is a pool candidate, (3) every candidate of the pool
    not kept shares a side with a kept one ranked before it, (4) kept rows are in rank
    order."""
    order = sorted(range(len(pool)), key=lambda i: -pool[i][2])
    rank = {i: r for r, i in enumerate(order)}
    assert len({g[0] for g in got}) == len({g[1] for g in got}) == len(got)  # (1)
    first = {}
    for i, c in enumerate(pool):
        first.setdefault(c, i)  # a pair found both ways with equal margins: the first copy
    assert all(g in first for g in got), [g for g in got if g not in first]  # (2)
    kept = [first[g] for g in got]
    by_src, by_tgt = {}, {}
    for i in kept:
        by_src[pool[i][0]] = rank[i]
        by_tgt[pool[i][1]] = rank[i]
    blocked = [i for i in range(len(pool)) if i not in set(kept) and
               min(by_src.get(pool[i][0], len(pool)), by_tgt.get(pool[i][1], len(pool))) >= rank[i]]
    assert not blocked, [pool[i] for i in blocked]  # (3)
    assert [rank[i] for i in kept] == sorted(rank[i] for i in kept)  # (4)
    assert len(got) > 20


def check_provenance(out: Path, table: pa.Table) -> None:
    """Texts and provenance of both sides are the sentence shards' rows of those ids."""
    run = RunDir(out)
    for side, lang in (("src", SRC), ("tgt", TGT)):
        sentences = pa.concat_tables(pq.read_table(p, columns=["id", *PROVENANCE])
                                     for p in RunDir.shards(run.sentences(lang)))
        by_id = dict(zip(sentences.column("id").to_pylist(), sentences.to_pylist()))
        for column in PROVENANCE:
            expected = [by_id[i][column] for i in table.column(f"{side}_id").to_pylist()]
            if column == "lid_prob":
                expected = pa.array(expected, pa.float64()).cast(pa.float32()).to_pylist()
            assert table.column(f"{side}_{column}").to_pylist() == expected, (side, column)


# -- the tests -------------------------------------------------------------------------

@pytest.mark.parametrize("retrieval", RETRIEVALS)
def test_parts_hold_the_retrieval_and_do_not_depend_on_the_executor(run_dir, retrieval):
    margin = "distance" if retrieval == "bwd" else "ratio"
    tables = {}
    for shard_size in (7, 1000):  # many output parts (the shuffle) and one (a single task)
        cfg = config(retrieval, margin, shard_size)
        shutil.rmtree(scores_dir(run_dir), ignore_errors=True)
        counts = run_score(cfg, run_dir, SRC, TGT)
        tables[shard_size] = check_scores(run_dir, cfg, counts)
        n_parts = len(RunDir.shards(scores_dir(run_dir)))
        assert n_parts == 1 if shard_size == 1000 else n_parts > 3
        expected = part_bytes(run_dir)
        # the steps on an executor of their own, in this process (a spawned pool: below)
        shutil.rmtree(scores_dir(run_dir))
        assert score_with(LocalExecutor(1), cfg, run_dir) == \
            {k: counts[k] for k in ("sources", "targets", "candidates", "direction_fwd",
                                    "direction_bwd", "direction_both")}
        assert part_bytes(run_dir) == expected
    assert tables[7].equals(tables[1000])


@pytest.mark.slow  # a spawned pool costs seconds
def test_tasks_in_spawned_processes_write_the_same_bytes(run_dir):
    """Every task pickles (the tasks are the same for every retrieval mode, which only
    the driver applies)."""
    cfg = config(shard_size=7)
    shutil.rmtree(scores_dir(run_dir), ignore_errors=True)
    counts = run_score(cfg, run_dir, SRC, TGT)
    expected = part_bytes(run_dir)
    assert len(expected) > 3
    shutil.rmtree(scores_dir(run_dir))
    assert score_with(LocalExecutor(2), cfg, run_dir)["candidates"] == counts["candidates"]
    assert part_bytes(run_dir) == expected


def test_rerun_replaces_stale_parts_and_an_interrupted_shuffle(run_dir):
    cfg = config(shard_size=9)
    shutil.rmtree(scores_dir(run_dir), ignore_errors=True)
    run_score(cfg, run_dir, SRC, TGT)
    expected = part_bytes(run_dir)
    d = scores_dir(run_dir)
    run_score(config(shard_size=2), run_dir, SRC, TGT)  # many more parts
    assert len(part_bytes(run_dir)) > len(expected)
    shuffle = RunDir(run_dir).score_shuffle(SRC, TGT)
    shuffle.mkdir()
    (shuffle / "src.part-00000.parquet").write_bytes(b"left by a killed run")
    run_score(cfg, run_dir, SRC, TGT)
    assert part_bytes(run_dir) == expected
    assert not shuffle.exists() and d.is_dir()


def test_sentence_shards_in_another_order_are_mapped_by_id(run_dir, tmp_path):
    """Sentence shards that do not follow the neighbour files' order (here: the rows
    shuffled into three shards) are joined through the ids: the same parts."""
    out = tmp_path / "run"
    shutil.copytree(run_dir / "knn", out / "knn")
    for lang in (SRC, TGT):
        table = pa.concat_tables(pq.read_table(p) for p in
                                 RunDir.shards(RunDir(run_dir).sentences(lang)))
        table = table.take(pa.array(np.random.default_rng(1).permutation(table.num_rows)))
        (out / "sentences" / lang).mkdir(parents=True)
        for i, a in enumerate(range(0, table.num_rows, 30)):
            pq.write_table(table.slice(a, 30), out / "sentences" / lang / f"part-{i:05d}.parquet")
        assert len(RunDir.shards(out / "sentences" / lang)) == 3
    cfg = config(shard_size=8)
    check_scores(out, cfg, run_score(cfg, out, SRC, TGT))
    shutil.rmtree(scores_dir(run_dir), ignore_errors=True)
    run_score(cfg, run_dir, SRC, TGT)
    assert part_bytes(out) == part_bytes(run_dir)


def _rewrite_knn(run_dir: Path, out: Path, rows) -> None:
    """Copy the run with its neighbour shards rewritten: ``rows(direction, nbr_rows)``
    gives the (rows, digest of the ids they index) to store, or None to store no rows."""
    shutil.copytree(run_dir / "sentences", out / "sentences")
    for direction in DIRECTIONS:
        for path in knn_shards(run_dir, SRC, TGT, direction):
            ids, nbr, sims, mean = read_knn_shard(path)
            stored = np.stack(pq.read_table(path).column("nbr_rows").to_numpy(zero_copy_only=False))
            dest = out / "knn" / f"{SRC}-{TGT}" / direction / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_knn_shard(dest, ids, nbr, sims, mean, *(rows(direction, stored) or ()))


def test_stored_neighbour_rows_are_used_only_for_the_ids_they_index(run_dir, tmp_path):
    """The kNN stage stores each neighbour's row on the other side and the digest of
    the ids searched; score uses the rows when that digest is its own other side's
    (no id lookup), and looks ids up otherwise: the same parts either way, also when
    the stored rows are wrong but belong to other ids."""
    other_ids = {d: np.concatenate([read_knn_shard(p)[0] for p in knn_shards(
        run_dir, SRC, TGT, "bwd" if d == "fwd" else "fwd")]) for d in DIRECTIONS}
    for direction in DIRECTIONS:
        for path in knn_shards(run_dir, SRC, TGT, direction):
            meta = pq.read_schema(path).metadata
            assert meta[ROWS_OF].decode() == ids_digest(other_ids[direction])
            ids, nbr, sims, mean, rows = read_knn_shard_rows(path, ids_digest(other_ids[direction]))
            assert nbr is None and np.array_equal(other_ids[direction][rows],
                                                  read_knn_shard(path)[1])
    cfg = config(shard_size=8)
    shutil.rmtree(scores_dir(run_dir), ignore_errors=True)
    run_score(cfg, run_dir, SRC, TGT)
    expected = part_bytes(run_dir)
    variants = {
        "no_rows": lambda d, r: None,  # as knn wrote them before rows were stored
        # rows shifted by one, claimed for the other side's ids in reverse order
        "other_ids": lambda d, r: ((r + 1) % len(other_ids[d]), ids_digest(other_ids[d][::-1])),
    }
    for name, rows in variants.items():
        out = tmp_path / name
        _rewrite_knn(run_dir, out, rows)
        check_scores(out, cfg, run_score(cfg, out, SRC, TGT))
        assert part_bytes(out) == expected, name


def _pad(run_dir: Path, out: Path, filler: bool) -> int:
    """Copy the run with the last neighbours of some queries turned into padded slots
    (id 0, similarity -inf, the mean over the valid ones, as the kNN stage writes
    them); with ``filler`` the slots keep a real id and get a similarity so low that
    they never win instead. Returns the number of padded slots."""
    shutil.copytree(run_dir / "sentences", out / "sentences")
    rng = np.random.default_rng(7)
    padded = 0
    for direction in DIRECTIONS:
        for path in knn_shards(run_dir, SRC, TGT, direction):
            ids, nbr, sims, _ = read_knn_shard(path)
            keep = rng.integers(1, nbr.shape[1] + 1, len(ids))  # at least one neighbour
            pad = np.arange(nbr.shape[1])[None, :] >= keep[:, None]
            padded += int(pad.sum())
            mean = (np.where(pad, 0, sims).astype(np.float64).sum(1) / keep).astype(np.float32)
            sims = np.where(pad, np.float32(-1e30) if filler else -np.inf, sims).astype(np.float32)
            nbr = nbr if filler else np.where(pad, np.uint64(0), nbr).astype(np.uint64)
            dest = out / "knn" / f"{SRC}-{TGT}" / direction / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_knn_shard(dest, ids, nbr, sims, mean)
    return padded


def found_pairs(out: Path) -> set:
    """(source id, target id) of every neighbour slot that is not padding."""
    fwd, bwd = read_knn(out, SRC, TGT, "fwd"), read_knn(out, SRC, TGT, "bwd")
    found = {(int(q), int(n)) for q, row, sims in zip(fwd[0], fwd[1], fwd[2])
             for n, s in zip(row, sims) if s != -np.inf}
    return found | {(int(n), int(q)) for q, row, sims in zip(bwd[0], bwd[1], bwd[2])
                    for n, s in zip(row, sims) if s != -np.inf}


@pytest.mark.parametrize("retrieval", ["max", "intersect"])
def test_padded_slots_are_never_candidates(run_dir, tmp_path, retrieval):
    """Padded slots give exactly the candidates of slots that can never win."""
    padded, filled = tmp_path / "padded", tmp_path / "filled"
    assert _pad(run_dir, padded, filler=False) == _pad(run_dir, filled, filler=True) > 20
    cfg = config(retrieval, shard_size=6)
    table = check_scores(padded, cfg, run_score(cfg, padded, SRC, TGT))
    assert set(zip(table.column("src_id").to_pylist(), table.column("tgt_id").to_pylist())) \
        <= found_pairs(padded)
    run_score(cfg, filled, SRC, TGT)
    assert part_bytes(padded) == part_bytes(filled)


def test_an_ivf_run_with_fewer_than_k_neighbours_scores(run_dir, tmp_path):
    """A real IVF search visiting one list of 32 finds fewer than k=4 neighbours for
    many queries; every candidate is a pair the search found."""
    from miner.knn.stage import run_knn

    out = tmp_path / "run"
    for name in ("sentences", "embeddings"):
        shutil.copytree(run_dir / name, out / name)
    cfg = config(shard_size=10)
    cfg.knn.index, cfg.knn.nprobe = "ivf", 1
    run_knn(cfg, out, SRC, TGT)
    fwd, bwd = read_knn(out, SRC, TGT, "fwd"), read_knn(out, SRC, TGT, "bwd")
    assert np.isneginf(fwd[2]).any() and np.isneginf(bwd[2]).any()
    assert (fwd[1][np.isneginf(fwd[2])] == 0).all()
    got = check_scores(out, cfg, run_score(cfg, out, SRC, TGT))
    assert got.num_rows > 10
    pairs = set(zip(got.column("src_id").to_pylist(), got.column("tgt_id").to_pylist()))
    assert pairs <= found_pairs(out)
    assert np.isfinite(got.column("score").to_numpy()).all()


def test_unknown_neighbour_ids_are_still_an_error(run_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir / "sentences", out / "sentences")
    shutil.copytree(run_dir / "knn", out / "knn")
    path = knn_shards(out, SRC, TGT, "bwd")[1]
    ids, nbr, sims, mean = read_knn_shard(path)
    nbr = np.array(nbr)
    nbr[3, 1] = np.uint64(12345)  # a real similarity, an id no source has
    write_knn_shard(path, ids, nbr, sims, mean)
    with pytest.raises(MinerError, match="rerun `mine knn`"):
        run_score(config(), out, SRC, TGT)
