"""Margin scoring and candidate retrieval (Artetxe & Schwenk 2019, LASER mine_bitexts).

Given the k nearest neighbours of every source sentence among the targets (forward)
and of every target among the sources (backward), the margin of a candidate (x, y) is

    margin(cos(x, y), (mean_k(x) + mean_k(y)) / 2)

where mean_k(x) is the mean similarity of x to its k neighbours on the other side:
``ratio`` is a / b, ``distance`` is a - b, ``absolute`` is a alone. The functions are
pure and vectorised over arrays; the stages around them do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miner.config import MARGINS, RETRIEVALS  # noqa: F401 - re-exported, defined once there
from miner.errors import MinerError


# direction codes of a retrieved pair
FWD, BWD, BOTH = 1, 2, 3
DIRECTION_NAMES = {FWD: "fwd", BWD: "bwd", BOTH: "both"}

# rounds of the vectorised greedy pass before it finishes sequentially
_MAX_ROUNDS = 64


def apply_margin(sims: np.ndarray, denom: np.ndarray, margin: str = "ratio",
                 out: np.ndarray | None = None) -> np.ndarray:
    """Margin of similarities ``sims`` against neighbourhood means ``denom`` (same shape).

    ``denom`` is (mean_k(x) + mean_k(y)) / 2 for each candidate. float64 out; ``out``:
    a float64 array of that shape to write it into (``denom`` itself will do).
    """
    denom = np.asarray(denom, dtype=np.float64)
    if margin == "ratio":
        return np.divide(sims, denom, out=out, dtype=np.float64)
    if margin == "distance":
        return np.subtract(sims, denom, out=out, dtype=np.float64)
    if margin == "absolute":
        if out is None:
            return np.asarray(sims, dtype=np.float64)
        out[...] = sims
        return out
    raise MinerError(f"unknown margin {margin!r}: choose one of {', '.join(MARGINS)}")


def candidate_scores(nbr_sims: np.ndarray, nbr_ids: np.ndarray, mean_self: np.ndarray,
                     mean_other: np.ndarray, margin: str = "ratio") -> np.ndarray:
    """Margin scores of every stored neighbour.

    nbr_sims, nbr_ids: (n, k) neighbours of the n query sentences among the other side
    (row numbers there; a negative id is a padded slot, scored -inf); mean_self: (n,)
    mean of each query's k neighbour similarities; mean_other: (m,) the same for the
    other side. Returns (n, k) float64 scores.
    """
    valid = nbr_ids >= 0
    padded = not valid.all()
    rows = np.where(valid, nbr_ids, 0) if padded else nbr_ids
    # (mean_self + mean_other) / 2 in float64, in place: at 1M queries x k=4 each
    # temporary is 32 MB of fresh pages, and faulting them in cost more than the sums
    denom = np.asarray(mean_other)[rows].astype(np.float64)
    denom += np.asarray(mean_self, dtype=np.float64)[:, None]
    denom /= 2
    scores = apply_margin(nbr_sims, denom, margin, out=denom)
    if padded:
        scores[~valid] = -np.inf
    return scores


def best_candidates(scores: np.ndarray, nbr_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row the neighbour with the highest score (first one on ties, as argmax).

    scores, nbr_ids: (n, k) -> best ids (n,) int64 and best scores (n,) float64; a row
    whose slots are all padded (negative ids) gets id -1 and score -inf.
    """
    rows = np.arange(scores.shape[0])
    if scores.shape[1] == 0:
        return np.full(len(rows), -1, np.int64), np.full(len(rows), -np.inf)
    col = scores.argmax(axis=1)
    best = nbr_ids[rows, col].astype(np.int64)
    best[best < 0] = -1  # only padding: the argmax of all -inf lands on a padded slot
    return best, scores[rows, col]


def direction_best(sims: np.ndarray, nbr_rows: np.ndarray, mean_self: np.ndarray,
                   mean_other: np.ndarray, margin: str = "ratio"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One direction's half of ``retrieve``: each query's best neighbour by margin.

    sims, nbr_rows: (q, k) similarities and row numbers on the other side (negative:
    a padded slot, never a candidate); mean_self (q,), mean_other (m,). Row-wise, so
    any block of queries gives the same rows as the whole set: ``retrieve`` runs it on
    everything, ``mine score`` per neighbour shard. Returns the best row (q,) int64
    (-1 where a query has no neighbour) and its score (q,) float64.
    """
    return best_candidates(candidate_scores(sims, nbr_rows, mean_self, mean_other, margin),
                           nbr_rows)


def argsort_desc(scores: np.ndarray) -> np.ndarray:
    """Indices that sort ``scores`` (n,) descending, ties in index order (stable).

    numpy's default argsort is a vectorised unstable sort several times faster than
    its stable one; ties, rare among float64 margins, are put back in index order
    afterwards, so the result equals ``np.argsort(-scores, kind="stable")``.
    """
    order = np.argsort(-scores)
    v = scores[order]
    same = v[1:] == v[:-1]
    if same.any():
        in_tie = np.zeros(len(v), dtype=bool)
        in_tie[:-1] |= same
        in_tie[1:] |= same
        pos = np.flatnonzero(in_tie)
        # a new tie group starts where the value changes or the run is broken
        starts = np.ones(len(pos), dtype=bool)
        starts[1:] = (v[pos[1:]] != v[pos[:-1]]) | (np.diff(pos) != 1)
        group = np.cumsum(starts)
        sub = order[pos]
        order[pos] = sub[np.lexsort((sub, group))]
    return order


def greedy_one_to_one(src: np.ndarray, tgt: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices of the candidates kept by LASER's greedy pass, best first.

    Walk candidates by score descending (stable: earlier index first on ties) and keep
    one when neither its source nor its target was kept before. Vectorised in rounds:
    a candidate ranked first among the remaining ones for both its source and its
    target is certainly kept by the sequential walk; keep all such, drop every
    remaining candidate that shares a side with them, repeat. Same result as the
    sequential loop, with a handful of numpy passes instead of one Python step per
    candidate.
    """
    n = len(scores)
    order = argsort_desc(np.asarray(scores, dtype=np.float64))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    alive = np.ones(n, dtype=bool)
    kept = []
    n_src = int(src.max()) + 1 if n else 0
    n_tgt = int(tgt.max()) + 1 if n else 0
    big = np.iinfo(np.int64).max
    for _ in range(_MAX_ROUNDS):
        if not alive.any():
            break
        idx = np.nonzero(alive)[0]
        best_src = np.full(n_src, big)
        best_tgt = np.full(n_tgt, big)
        np.minimum.at(best_src, src[idx], rank[idx])
        np.minimum.at(best_tgt, tgt[idx], rank[idx])
        win = idx[(best_src[src[idx]] == rank[idx]) & (best_tgt[tgt[idx]] == rank[idx])]
        kept.append(win)
        used_src = np.zeros(n_src, dtype=bool)
        used_tgt = np.zeros(n_tgt, dtype=bool)
        used_src[src[win]] = True
        used_tgt[tgt[win]] = True
        alive[idx[used_src[src[idx]] | used_tgt[tgt[idx]]]] = False
    else:
        # long chains of conflicts (rare): finish the walk sequentially, same rule
        used_src = np.zeros(n_src, dtype=bool)
        used_tgt = np.zeros(n_tgt, dtype=bool)
        for part in kept:
            used_src[src[part]] = True
            used_tgt[tgt[part]] = True
        rest = []
        for i in order[alive[order]]:
            if not used_src[src[i]] and not used_tgt[tgt[i]]:
                used_src[src[i]] = used_tgt[tgt[i]] = True
                rest.append(i)
        kept.append(np.asarray(rest, dtype=np.int64))
    if not kept:
        return np.zeros(0, dtype=np.int64)
    is_kept = np.zeros(n, dtype=bool)
    for part in kept:
        is_kept[part] = True
    return order[is_kept[order]]  # best first, without a second sort


@dataclass
class Candidates:
    """Retrieved sentence pairs, best first: row indices into both sides, score, direction."""

    src: np.ndarray  # (p,) int64
    tgt: np.ndarray  # (p,) int64
    score: np.ndarray  # (p,) float64
    direction: np.ndarray  # (p,) int8: FWD, BWD or BOTH

    def __len__(self) -> int:
        return len(self.score)

    def take(self, keep: np.ndarray) -> "Candidates":
        return Candidates(self.src[keep], self.tgt[keep], self.score[keep], self.direction[keep])


def retrieve(fwd_sims: np.ndarray, fwd_ids: np.ndarray, bwd_sims: np.ndarray,
             bwd_ids: np.ndarray, margin: str = "ratio", retrieval: str = "max",
             fwd_mean: np.ndarray | None = None,
             bwd_mean: np.ndarray | None = None) -> Candidates:
    """Score neighbours with a margin and retrieve candidate pairs, best first.

    fwd_sims, fwd_ids: (n, k) neighbours of the n sources among the m targets;
    bwd_sims, bwd_ids: (m, k) neighbours of the targets among the sources.
    fwd_mean (n,), bwd_mean (m,): neighbourhood means (default: row means of the sims;
    pass them when they were computed over a wider k or globally).

    retrieval ``fwd``: each source with its best target; ``bwd``: each target with
    its best source; ``intersect``: pairs that are each other's best; ``max``: the
    forward and backward best pooled, sorted by score, kept greedily so that each
    sentence is used at most once (LASER's default). Every pair carries a direction:
    found forward, backward, or both ways.
    """
    if retrieval not in RETRIEVALS:
        raise MinerError(f"unknown retrieval {retrieval!r}: choose one of {', '.join(RETRIEVALS)}")
    fwd_mean = fwd_sims.mean(axis=1) if fwd_mean is None else fwd_mean
    bwd_mean = bwd_sims.mean(axis=1) if bwd_mean is None else bwd_mean
    fwd_best, fwd_score = direction_best(fwd_sims, fwd_ids, fwd_mean, bwd_mean, margin)
    bwd_best, bwd_score = direction_best(bwd_sims, bwd_ids, bwd_mean, fwd_mean, margin)
    return combine(fwd_best, fwd_score, bwd_best, bwd_score, retrieval)


def combine(fwd_best: np.ndarray, fwd_score: np.ndarray, bwd_best: np.ndarray,
            bwd_score: np.ndarray, retrieval: str = "max") -> Candidates:
    """The retrieval over both directions' best neighbours (``direction_best``), best first.

    fwd_best, fwd_score (n,): each source's best target row and its score (-1: none);
    bwd_best, bwd_score (m,): each target's best source row. See ``retrieve`` for the
    modes; sorts are stable, so ties keep source order (then target order for ``max``).
    """
    if retrieval not in RETRIEVALS:
        raise MinerError(f"unknown retrieval {retrieval!r}: choose one of {', '.join(RETRIEVALS)}")
    n, m = len(fwd_best), len(bwd_best)
    src_all = np.arange(n, dtype=np.int64)
    tgt_all = np.arange(m, dtype=np.int64)
    fwd_ok = fwd_best >= 0
    bwd_ok = bwd_best >= 0
    # a forward pair (i, fwd_best[i]) is "both" when the target's best source is i
    fwd_both = fwd_ok & (bwd_best[np.where(fwd_ok, fwd_best, 0)] == src_all) if m \
        else np.zeros(n, bool)
    bwd_both = bwd_ok & (fwd_best[np.where(bwd_ok, bwd_best, 0)] == tgt_all) if n \
        else np.zeros(m, bool)
    fwd_dir = np.where(fwd_both, BOTH, FWD).astype(np.int8)
    bwd_dir = np.where(bwd_both, BOTH, BWD).astype(np.int8)
    fwd = Candidates(src_all, fwd_best, fwd_score, fwd_dir)
    bwd = Candidates(bwd_best, tgt_all, bwd_score, bwd_dir)
    if not fwd_ok.all():
        fwd = fwd.take(fwd_ok)
    if not bwd_ok.all():
        bwd = bwd.take(bwd_ok)

    if retrieval == "fwd":
        cands = fwd
    elif retrieval == "bwd":
        cands = bwd
    elif retrieval == "intersect":
        cands = Candidates(src_all, fwd_best, fwd_score, fwd_dir).take(fwd_both)
    else:  # max
        pooled = Candidates(np.concatenate([fwd.src, bwd.src]),
                            np.concatenate([fwd.tgt, bwd.tgt]),
                            np.concatenate([fwd.score, bwd.score]),
                            np.concatenate([fwd.direction, bwd.direction]))
        return pooled.take(greedy_one_to_one(pooled.src, pooled.tgt, pooled.score))
    return cands.take(argsort_desc(cands.score))
