"""Margins and retrieval modes on hand-built embeddings with answers worked by hand.

Sources x0=(1,0), x1=(0,1); targets y0=(1,0), y1=(0.6,0.8), y2=(0,1). Similarities:
    x0: [1.0, 0.6, 0.0]      x1: [0.0, 0.8, 1.0]
With k=2: forward means x0 0.8, x1 0.9; backward means y0 0.5, y1 0.7, y2 0.5.
Ratio margins: x0-y0 1/0.65, x0-y1 0.6/0.75, x1-y2 1/0.7, x1-y1 0.8/0.8.
"""

import numpy as np
import pytest

from miner import margin as M
from miner.errors import MinerError
from miner.knn import knn_search
from miner.margin import BOTH, BWD, apply_margin, greedy_one_to_one, retrieve

X = np.array([[1, 0], [0, 1]], dtype=np.float32)
Y = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)


def mine_embeddings(x, y, k, margin, retrieval, backend):
    """Exact kNN both ways, then the margin and the retrieval (the knn and score stages
    on arrays in memory)."""
    fs, fi = knn_search(x, y, k, backend=backend)
    bs, bi = knn_search(y, x, k, backend=backend)
    return retrieve(fs, fi, bs, bi, margin=margin, retrieval=retrieval)


def pairs(c):
    return [(int(s), int(t), round(float(v), 6), int(d))
            for s, t, v, d in zip(c.src, c.tgt, c.score, c.direction)]


def test_ratio_max_by_hand():
    c = mine_embeddings(X, Y, k=2, margin="ratio", retrieval="max", backend="numpy")
    assert pairs(c) == [(0, 0, round(1 / 0.65, 6), BOTH), (1, 2, round(1 / 0.7, 6), BOTH)]


def test_ratio_bwd_keeps_every_target_by_hand():
    c = mine_embeddings(X, Y, k=2, margin="ratio", retrieval="bwd", backend="numpy")
    # y1's best source is x1 (0.8/0.8 = 1.0 beats 0.6/0.75 = 0.8); x1's best target is y2
    assert pairs(c) == [(0, 0, round(1 / 0.65, 6), BOTH), (1, 2, round(1 / 0.7, 6), BOTH),
                        (1, 1, 1.0, BWD)]


def test_fwd_and_intersect_by_hand():
    fwd = mine_embeddings(X, Y, k=2, margin="ratio", retrieval="fwd", backend="numpy")
    assert [(s, t) for s, t, _, _ in pairs(fwd)] == [(0, 0), (1, 2)]
    inter = mine_embeddings(X, Y, k=2, margin="ratio", retrieval="intersect", backend="numpy")
    assert [(s, t) for s, t, _, _ in pairs(inter)] == [(0, 0), (1, 2)]


def test_distance_and_absolute_by_hand():
    d = mine_embeddings(X, Y, k=2, margin="distance", retrieval="bwd", backend="numpy")
    assert pairs(d) == [(0, 0, 0.35, BOTH), (1, 2, 0.3, BOTH), (1, 1, 0.0, BWD)]
    a = mine_embeddings(X, Y, k=2, margin="absolute", retrieval="bwd", backend="numpy")
    # absolute: y1's best source by raw cosine is x1 (0.8)
    assert pairs(a) == [(0, 0, 1.0, BOTH), (1, 2, 1.0, BOTH), (1, 1, 0.8, BWD)]


def test_margin_changes_the_winner():
    """A hub target close to everything loses under the ratio margin but wins raw."""
    x = np.array([[1, 0]], dtype=np.float32)
    hub = np.array([0.9, 0.43589], dtype=np.float32)
    y = np.stack([np.array([0.89, -0.45596], dtype=np.float32), hub])
    # add sources that all sit near the hub, raising the hub's neighbourhood mean
    xs = np.vstack([x, np.tile(hub, (3, 1))])
    raw = mine_embeddings(xs, y, k=3, margin="absolute", retrieval="fwd", backend="numpy")
    assert int(raw.tgt[raw.src == 0][0]) == 1
    ratio = mine_embeddings(xs, y, k=3, margin="ratio", retrieval="fwd", backend="numpy")
    assert int(ratio.tgt[ratio.src == 0][0]) == 0


def test_ties_go_to_the_lower_id():
    x = np.array([[1, 0]], dtype=np.float32)
    y = np.array([[0, 1], [1, 0], [1, 0]], dtype=np.float32)  # y1 and y2 identical
    c = mine_embeddings(x, y, k=2, margin="ratio", retrieval="fwd", backend="numpy")
    assert int(c.tgt[0]) == 1
    c = mine_embeddings(x, y, k=2, margin="ratio", retrieval="fwd", backend="faiss")
    assert int(c.tgt[0]) == 1


def test_max_uses_each_sentence_once_with_duplicates():
    # two identical sources compete for one target: only the first is paired
    x = np.array([[1, 0], [1, 0]], dtype=np.float32)
    y = np.array([[1, 0], [0, 1]], dtype=np.float32)
    c = mine_embeddings(x, y, k=1, margin="ratio", retrieval="max", backend="numpy")
    assert len(set(c.src.tolist())) == len(c) and len(set(c.tgt.tolist())) == len(c)
    assert (int(c.src[0]), int(c.tgt[0])) == (0, 0)


def test_apply_margin():
    s = np.array([0.8]), np.array([0.5])
    assert apply_margin(*s, "ratio")[0] == pytest.approx(1.6)
    assert apply_margin(*s, "distance")[0] == pytest.approx(0.3)
    assert apply_margin(*s, "absolute")[0] == pytest.approx(0.8)
    with pytest.raises(MinerError):
        apply_margin(*s, "nope")
    with pytest.raises(MinerError):
        retrieve(np.ones((1, 1)), np.zeros((1, 1), int), np.ones((1, 1)),
                 np.zeros((1, 1), int), retrieval="nope")


def _sequential_greedy(src, tgt, scores):
    order = np.argsort(-scores, kind="stable")
    used_s, used_t, kept = set(), set(), []
    for i in order:
        if src[i] not in used_s and tgt[i] not in used_t:
            used_s.add(src[i]), used_t.add(tgt[i]), kept.append(i)
    return kept


@pytest.mark.parametrize("max_rounds", [64, 1])
def test_vectorised_greedy_equals_sequential_walk(monkeypatch, max_rounds):
    monkeypatch.setattr(M, "_MAX_ROUNDS", max_rounds)
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 200))
        src = rng.integers(0, int(rng.integers(1, 40)), n)
        tgt = rng.integers(0, int(rng.integers(1, 40)), n)
        scores = rng.integers(0, 10, n).astype(float)  # many ties
        assert greedy_one_to_one(src, tgt, scores).tolist() == _sequential_greedy(src, tgt, scores)


def test_argsort_desc_equals_stable_sort_with_ties():
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 5, 100, 5000):
        for values in (rng.integers(0, 4, n).astype(float), rng.uniform(size=n)):
            assert M.argsort_desc(values).tolist() == np.argsort(-values, kind="stable").tolist()


def test_padded_slots_are_never_candidates():
    """Negative neighbour ids are padding (an approximate index found fewer than k):
    never a candidate, even with a high similarity; a query with only padding has none."""
    fwd_sims = np.array([[0.9, 0.99], [0.5, 0.95], [0.7, 0.6]])
    fwd_ids = np.array([[0, -1], [-1, -1], [1, 0]])
    bwd_sims = np.array([[0.9, 0.99], [0.7, 0.2]])
    bwd_ids = np.array([[0, -1], [2, -1]])
    means = np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.5])
    for retrieval, want in (("fwd", [(0, 0), (2, 1)]), ("bwd", [(0, 0), (2, 1)]),
                            ("intersect", [(0, 0), (2, 1)]), ("max", [(0, 0), (2, 1)])):
        c = retrieve(fwd_sims, fwd_ids, bwd_sims, bwd_ids, margin="ratio", retrieval=retrieval,
                     fwd_mean=means[0], bwd_mean=means[1])
        assert sorted(zip(c.src.tolist(), c.tgt.tolist())) == want, retrieval
        assert np.isfinite(c.score).all() and (c.direction == BOTH).all()
    best, score = M.direction_best(fwd_sims, fwd_ids, means[0], means[1])
    assert best.tolist() == [0, -1, 1] and score[1] == -np.inf


@pytest.mark.parametrize("retrieval", M.RETRIEVALS)
def test_direction_best_per_block_then_combine_equals_retrieve(retrieval):
    """What `mine score` does per neighbour shard and then on the driver gives
    exactly ``retrieve``'s candidates (pairs, float64 scores, order, ties)."""
    rng = np.random.default_rng(5)
    n, m, k = 300, 250, 4
    fwd_sims = rng.integers(5, 10, (n, k)) / 10  # coarse values: many ties
    bwd_sims = rng.integers(5, 10, (m, k)) / 10
    fwd_ids, bwd_ids = rng.integers(0, m, (n, k)), rng.integers(0, n, (m, k))
    fwd_mean, bwd_mean = fwd_sims.mean(1), bwd_sims.mean(1)
    whole = retrieve(fwd_sims, fwd_ids, bwd_sims, bwd_ids, "ratio", retrieval, fwd_mean, bwd_mean)

    def blocks(sims, ids, mean_self, mean_other, size):
        parts = [M.direction_best(sims[a:a + size], ids[a:a + size], mean_self[a:a + size],
                                  mean_other) for a in range(0, len(sims), size)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    c = M.combine(*blocks(fwd_sims, fwd_ids, fwd_mean, bwd_mean, 37),
                  *blocks(bwd_sims, bwd_ids, bwd_mean, fwd_mean, 64), retrieval)
    for a, b in ((whole.src, c.src), (whole.tgt, c.tgt), (whole.score, c.score),
                 (whole.direction, c.direction)):
        assert a.tobytes() == b.tobytes()
