"""BUCC-style F1 with the bitext filters off and on.

For each pair (de, fr, ru, zh with en) the ``training`` split is mined with mUSE and
the ratio margin (k=4, max retrieval) as ``mine eval bucc`` does. With filters off,
the threshold is optimised on the candidates and the best F1 reported (tuned and
scored on ``training``, as the shared task's optimisation step). With filters on, the
filter pipeline (every default filter except the threshold, which is what is being
tuned) drops candidates first, then the threshold is optimised on what is left.

    .venv/bin/python benchmarks/bucc_filters.py [--data ../shared/data/bucc]
        [--langs de,fr,ru,zh] [--cache DIR]

``--cache`` keeps the mined candidates (Parquet) so that reruns skip the encoder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from miner.config import Config  # noqa: E402
from miner.evaluate.bucc import (candidate_scores_by_id, embed_split,  # noqa: E402
                                 optimize_threshold, read_split)
from miner.filters import FilterPipeline  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bucc"


def mine_candidates(data: Path, lang: str, encoder, k: int = 4, margin: str = "ratio"
                    ) -> tuple[pd.DataFrame, set]:
    """Candidates of ``{lang}-en`` training as a best-first frame in the scores layout."""
    split = read_split(data, f"{lang}-en", "training")
    e = embed_split(split, encoder, k)
    c2s = candidate_scores_by_id(split, e.x, e.y, e.src_inverse, e.tgt_inverse, k, margin,
                                 "max", nbrs=e.nbrs)
    src = dict(zip(split.src_ids, split.src_texts))
    tgt = dict(zip(split.tgt_ids, split.tgt_texts))
    items = sorted(c2s.items(), key=lambda kv: (-kv[1], kv[0]))
    df = pd.DataFrame({
        "src_id": [a for (a, _), _ in items], "tgt_id": [b for (_, b), _ in items],
        "src_text": [src[a] for (a, _), _ in items], "tgt_text": [tgt[b] for (_, b), _ in items],
        "score": [s for _, s in items],
    })
    return df, split.gold


def f1_of(df: pd.DataFrame, gold: set) -> tuple[float, float]:
    c2s = dict(zip(zip(df["src_id"], df["tgt_id"]), df["score"]))
    threshold, f1 = optimize_threshold(c2s, gold)
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
    encoder = None
    cfg = Config()
    rows = []
    for lang in args.langs.split(","):
        cached = args.cache / f"{lang}-en.parquet" if args.cache else None
        gold = read_split(args.data, f"{lang}-en", "training").gold
        if cached and cached.exists():
            df = pd.read_parquet(cached)
        else:
            if encoder is None:
                from miner.embed import load_encoder

                encoder = load_encoder("muse")
            t0 = time.time()
            df, gold = mine_candidates(args.data, lang, encoder)
            print(f"{lang}-en: {len(df)} candidates mined in {time.time() - t0:.0f}s",
                  file=sys.stderr)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                df.to_parquet(cached)
        off, th_off = f1_of(df, gold)
        pipe = FilterPipeline.from_config(cfg, lang, "en", use_threshold=False)
        kept, _ = pipe.filter(df)
        on, th_on = f1_of(kept, gold)
        gold_lost = len({(a, b) for a, b in zip(df.src_id, df.tgt_id)} & gold) - \
            len({(a, b) for a, b in zip(kept.src_id, kept.tgt_id)} & gold)
        alone = {}
        for name in pipe.counts["dropped"]:
            single = FilterPipeline.from_config(cfg, lang, "en", use_threshold=False)
            single.steps = [single.step(name)]
            alone[name] = f1_of(single.filter(df)[0], gold)[0] - off
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
