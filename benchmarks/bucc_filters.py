"""BUCC-style F1 with the bitext filters off and on.

For each pair (de, fr, ru, zh with en) the ``training`` split is mined with mUSE and
the ratio margin (k=4, max retrieval) by the stages of ``mine run``, as ``mine eval
bucc`` does (``miner.pair.mine_sentences``: sentence shards, embed, knn, score). With
filters off, the threshold is optimised on the candidates and the best F1 reported
(tuned and scored on ``training``, as the shared task's optimisation step). With
filters on, the filter pipeline (every default filter except the threshold, which is
what is being tuned) drops candidates first, as the bitext stage does, then the
threshold is optimised on what is left (``mine eval bucc --filters`` prints the same
F1). Candidates are pairs of unique sentences, filtered as such, then expanded to
every pair of BUCC ids carrying those texts.

    .venv/bin/python benchmarks/bucc_filters.py [--data ../shared/data/bucc]
        [--langs de,fr,ru,zh] [--cache DIR]

``--cache`` keeps the scored candidates (Parquet, the score stage's layout) so that
reruns skip the encoder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.config import Config  # noqa: E402
from miner.evaluate.bucc import (BuccSplit, candidate_scores_by_id,  # noqa: E402
                                 optimize_threshold, read_split)
from miner.filters import FilterPipeline  # noqa: E402
from miner.formats import read_parquet  # noqa: E402
from miner.pair import mine_sentences  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bucc"


def mine_candidates(split: BuccSplit, lang: str, cfg: Config) -> pd.DataFrame:
    """The score stage's candidates of ``{lang}-en`` (unique sentences, best first)."""
    with tempfile.TemporaryDirectory(prefix="bucc-filters-") as tmp:
        parts = mine_sentences(zip(split.src_ids, split.src_texts),
                               zip(split.tgt_ids, split.tgt_texts), lang, "en", cfg, tmp)
        return pd.concat([read_parquet(p).to_pandas() for p in parts], ignore_index=True)


def by_id(df: pd.DataFrame, split: BuccSplit) -> dict:
    return candidate_scores_by_id(split, df["src_id"], df["tgt_id"], df["score"])


def f1_of(df: pd.DataFrame, split: BuccSplit) -> tuple[float, float]:
    threshold, f1 = optimize_threshold(by_id(df, split), split.gold)
    return f1, threshold


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--langs", default="de,fr,ru,zh")
    ap.add_argument("--cache", type=Path)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no BUCC data at {args.data}", file=sys.stderr)
        return 2
    cfg = Config()
    rows = []
    for lang in args.langs.split(","):
        cached = args.cache / f"{lang}-en.scores.parquet" if args.cache else None
        split = read_split(args.data, f"{lang}-en", "training")
        if cached and cached.exists():
            df = pd.read_parquet(cached)
        else:
            t0 = time.time()
            df = mine_candidates(split, lang, cfg)
            print(f"{lang}-en: {len(df)} candidates mined in {time.time() - t0:.0f}s",
                  file=sys.stderr)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                df.to_parquet(cached)
        off, th_off = f1_of(df, split)
        pipe = FilterPipeline.from_config(cfg, lang, "en", use_threshold=False)
        kept, _ = pipe.filter(df)
        on, th_on = f1_of(kept, split)
        gold_lost = (len(set(by_id(df, split)) & split.gold)
                     - len(set(by_id(kept, split)) & split.gold))
        alone = {}
        for name in pipe.counts["dropped"]:
            single = FilterPipeline.from_config(cfg, lang, "en", use_threshold=False)
            single.steps = [single.step(name)]
            alone[name] = f1_of(single.filter(df)[0], split)[0] - off
        rows.append((lang, off, on, th_off, th_on, pipe.counts["dropped"], gold_lost, alone))
    print(f"{'pair':<7}{'F1 off':>8}{'F1 on':>8}{'diff':>8}{'th off':>9}{'th on':>9}  dropped")
    for lang, off, on, th_off, th_on, dropped, gold_lost, _ in rows:
        drops = ", ".join(f"{k}={v}" for k, v in dropped.items() if v)
        print(f"{lang + '-en':<7}{100 * off:>8.2f}{100 * on:>8.2f}{100 * (on - off):>+8.2f}"
              f"{th_off:>9.4f}{th_on:>9.4f}  {drops} (gold candidates lost: {gold_lost})")
    names = list(rows[0][7]) if rows else []
    print("\nF1 difference with each filter alone (points):")
    print(f"{'pair':<7}" + "".join(f"{n:>16}" for n in names))
    for row in rows:
        print(f"{row[0] + '-en':<7}" + "".join(f"{100 * row[7][n]:>+16.2f}" for n in names))
    worse = [r[0] for r in rows if r[2] < r[1]]
    if worse:
        print(f"filters lower F1 on: {', '.join(worse)}")
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
