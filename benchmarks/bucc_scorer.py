"""Cross-validated BUCC F1 of the learned scorer against the margin.

For each pair (de, fr, ru, zh with en) the ``training`` split is mined with mUSE by
the stages of ``mine run`` (``miner.evaluate.bucc.mine_split``: sentence shards,
embed, knn, score) for every margin (ratio, distance) and k (2, 4, 8, 16), and the
pooled best pairs of both directions with their features are read from the ratio,
k=4 run (``miner.score.run_pool_features``, what the score stage computes with a
scorer). Then two-fold cross-validation by sentence: every source sentence goes to
half A or B at random (seeded), a gold target goes with its source, the other targets
at random; a candidate belongs to a half when both its sentences do (candidates
across halves are dropped). Everything is fitted and tuned on one half (threshold,
``--select``'s margin and k, the regression) and scored on the other; never the same
sentences. F1 is averaged over both folds.

- ``ratio``: ratio margin, k=4, max retrieval (the default), threshold tuned;
- ``select``: margin and k chosen by F1 on the tuning half, as ``--select``;
- ``learned``: the margin's retrieved pairs rescored by the regression;
- ``learned+1:1``: the pooled pairs rescored, then the greedy one-to-one pass on the
  learned score (what ``--scorer`` does in the score stage).

A second table, ``--transfer``: fit on three pairs (all their sentences), test on
the fourth (threshold from the three): how a shipped scorer carries to a pair it
never saw, against the ratio margin with its threshold also from the other three.

    .venv/bin/python benchmarks/bucc_scorer.py [--data ../shared/data/bucc]
        [--langs de,fr,ru,zh] [--cache DIR] [--seed 0] [--write-default]

``--write-default`` fits on all pairs and writes ``miner/data/scorer-muse.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.config import Config  # noqa: E402
from miner.evaluate.bucc import (SELECT_KS, SELECT_MARGINS, candidate_scores_by_id,  # noqa: E402
                                 learn_data, mine_split, optimize_threshold,
                                 precision_recall_f1, read_split)
from miner.margin import greedy_one_to_one  # noqa: E402
from miner.scorer import DEFAULT_PATH, fit_logistic, fit_scorer  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bucc"


def mine_pair(data: Path, lang: str, work: Path, encoder, executor) -> dict:
    """Everything the folds need for one pair, mined once."""
    split = read_split(data, f"{lang}-en", "training")
    cfg = Config()
    c2s = {}
    for kk in SELECT_KS:
        for mg in SELECT_MARGINS:
            c = copy.deepcopy(cfg)
            c.score.margin, c.knn.k = mg, kk
            c2s[mg, kk] = mine_split(split, f"{lang}-en", c, work, False, encoder, executor)[0]
    x, y, s, t = learn_data(split, f"{lang}-en", cfg, work, encoder, executor)
    return {"split": split, "c2s": c2s, "x": x, "y": y, "s": s, "t": t}


def one_to_one(s: np.ndarray, t: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``greedy_one_to_one`` over sentence ids (made row numbers first)."""
    import pandas as pd

    return greedy_one_to_one(pd.factorize(s)[0], pd.factorize(t)[0], score)


def halves(split, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    src_half = dict(zip(split.src_ids, rng.integers(0, 2, len(split.src_ids)).tolist()))
    tgt_half = dict(zip(split.tgt_ids, rng.integers(0, 2, len(split.tgt_ids)).tolist()))
    for a, b in split.gold:
        tgt_half[b] = src_half[a]
    return src_half, tgt_half


def restrict(c2s: dict, sh: dict, th: dict, h: int) -> dict:
    return {p: v for p, v in c2s.items() if sh[p[0]] == h and th[p[1]] == h}


def expand(d: dict, rows: np.ndarray, score: np.ndarray) -> dict:
    return candidate_scores_by_id(d["split"], d["s"][rows], d["t"][rows], score[rows])


def f1_at(c2s: dict, gold: set, th: float) -> float:
    return precision_recall_f1([p for p, v in c2s.items() if v >= th], gold)[2]


def cv(d: dict, seed: int) -> dict:
    split = d["split"]
    sh, th = halves(split, seed)
    # each pool row's half (a text's first BUCC id; duplicates are rare)
    from miner.evaluate.bucc import ids_by_hash

    sb, tb = ids_by_hash(split.src_ids, split.src_texts), ids_by_hash(split.tgt_ids, split.tgt_texts)
    row_s = np.array([sh[sb[int(v)][0]] for v in d["s"]])
    row_t = np.array([th[tb[int(v)][0]] for v in d["t"]])
    margin_pairs = set(d["c2s"]["ratio", 4])
    out = {k: [] for k in ("ratio", "select", "learned", "learned+1:1")}
    for train in (0, 1):
        test = 1 - train
        gold = {h: {p for p in split.gold if sh[p[0]] == h} for h in (0, 1)}

        def tuned(c2s_all):
            tr, te = restrict(c2s_all, sh, th, train), restrict(c2s_all, sh, th, test)
            thr, f1_tr = optimize_threshold(tr, gold[train])
            return f1_tr, f1_at(te, gold[test], thr)

        out["ratio"].append(tuned(d["c2s"]["ratio", 4])[1])
        best = max(d["c2s"], key=lambda key: tuned(d["c2s"][key])[0])
        out["select"].append(tuned(d["c2s"][best])[1])
        in_train = (row_s == train) & (row_t == train)
        w, b, mean, scale = fit_logistic(d["x"][in_train], d["y"][in_train])
        logit = ((d["x"] - mean) / scale) @ w + b
        rows = np.arange(len(logit))
        learned = {p: v for p, v in expand(d, rows, logit).items() if p in margin_pairs}
        out["learned"].append(tuned(learned)[1])
        one = []  # the one-to-one pass within each half
        for h in (0, 1):
            r = rows[(row_s == h) & (row_t == h)]
            one.append(r[one_to_one(d["s"][r], d["t"][r], logit[r])])
        out["learned+1:1"].append(tuned(expand(d, np.concatenate(one), logit))[1])
    return {k: float(np.mean(v)) for k, v in out.items()}


def one_to_one_c2s(d: dict, logit: np.ndarray) -> dict:
    rows = one_to_one(d["s"], d["t"], logit)
    return expand(d, rows, logit)


def pooled_threshold(c2s_by_pair: dict, golds: dict) -> float:
    merged = {(lang, *p): v for lang, c in c2s_by_pair.items() for p, v in c.items()}
    gold = {(lang, *p) for lang, g in golds.items() for p in g}
    return optimize_threshold(merged, gold)[0]


def transfer(data: dict) -> dict:
    out = {}
    langs = list(data)
    for held in langs:
        rest = [lang for lang in langs if lang != held]
        x = np.concatenate([data[lang]["x"] for lang in rest])
        y = np.concatenate([data[lang]["y"] for lang in rest])
        w, b, mean, scale = fit_logistic(x, y)

        def logit(lang):
            return ((data[lang]["x"] - mean) / scale) @ w + b

        thr = pooled_threshold({lang: one_to_one_c2s(data[lang], logit(lang)) for lang in rest},
                               {lang: data[lang]["split"].gold for lang in rest})
        learned = f1_at(one_to_one_c2s(data[held], logit(held)), data[held]["split"].gold, thr)
        thr_m = pooled_threshold({lang: data[lang]["c2s"]["ratio", 4] for lang in rest},
                                 {lang: data[lang]["split"].gold for lang in rest})
        margin = f1_at(data[held]["c2s"]["ratio", 4], data[held]["split"].gold, thr_m)
        out[held] = (margin, learned)
    return out


def write_default(data: dict, path: Path) -> None:
    x = np.concatenate([d["x"] for d in data.values()])
    y = np.concatenate([d["y"] for d in data.values()])
    scorer = fit_scorer(x, y, encoder="muse", model=None, margin="ratio", k=4,
                        fitted_on="BUCC 2018 training splits (shared sample): "
                                  + ", ".join(f"{lang}-en" for lang in data))
    c2s = {lang: one_to_one_c2s(d, scorer.logits(d["x"])) for lang, d in data.items()}
    scorer.threshold = float(pooled_threshold(c2s, {lang: d["split"].gold
                                                    for lang, d in data.items()}))
    scorer.notes = {"positives": int(y.sum()), "candidates": int(len(y)),
                    "in_sample_f1": {lang: f1_at(c, data[lang]["split"].gold, scorer.threshold)
                                     for lang, c in c2s.items()}}
    scorer.save(path)
    print(f"default scorer written to {path}: in-sample F1 "
          + ", ".join(f"{k} {100 * v:.2f}" for k, v in scorer.notes["in_sample_f1"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--langs", default="de,fr,ru,zh")
    ap.add_argument("--cache", type=Path, help="keep what was mined (pickles) for reruns")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-default", action="store_true")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no BUCC data at {args.data}", file=sys.stderr)
        return 2
    from miner.embed.encoders import encoder_for
    from miner.executor import LocalExecutor

    data, encoder = {}, None
    for lang in args.langs.split(","):
        cached = args.cache / f"{lang}-en.scorer-data.pkl" if args.cache else None
        if cached and cached.exists():
            data[lang] = pickle.loads(cached.read_bytes())
            continue
        encoder = encoder or encoder_for(Config().embed)
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="bucc-scorer-") as tmp:
            data[lang] = mine_pair(args.data, lang, Path(tmp), encoder, LocalExecutor(1))
        print(f"{lang}-en: mined in {time.time() - t0:.0f}s", file=sys.stderr)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps(data[lang]))
    names = ("ratio", "select", "learned", "learned+1:1")
    print("two-fold cross-validated F1 by sentence (fit/tune on one half, score the other):")
    print(f"{'pair':<7}" + "".join(f"{n:>13}" for n in names))
    rows = {lang: cv(d, args.seed) for lang, d in data.items()}
    for lang, r in rows.items():
        print(f"{lang + '-en':<7}" + "".join(f"{100 * r[n]:>13.2f}" for n in names))
    mean = {n: float(np.mean([r[n] for r in rows.values()])) for n in names}
    print(f"{'mean':<7}" + "".join(f"{100 * mean[n]:>13.2f}" for n in names))
    if len(data) > 1:
        print("\nheld-out pair (fit and threshold on the other pairs):")
        print(f"{'pair':<7}{'ratio':>13}{'learned+1:1':>13}")
        for lang, (m, l) in transfer(data).items():
            print(f"{lang + '-en':<7}{100 * m:>13.2f}{100 * l:>13.2f}")
    if args.write_default:
        write_default(data, DEFAULT_PATH)
    ok = mean["learned+1:1"] >= mean["ratio"] + 0.015 and \
        all(r["learned+1:1"] >= r["select"] - 0.003 for r in rows.values())
    print("acceptance (learned+1:1 >= ratio + 1.5 mean, >= select - 0.3 per pair):",
          "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
