"""How the shipped scorer (``--scorer default``) carries to languages it never saw.

The default scorer was fitted on the BUCC training splits of de, fr, ru and zh. Here
it meets languages outside them, on BUCC-style sets built from the shared Tatoeba
test sets (human translations): for a language X, the X side is all of X's Tatoeba
sentences; the English side holds the translations of a random half of them (the
gold pairs) hidden among English sentences of other languages' Tatoeba sets (any
whose text equals an English sentence of X's set is left out, so that no distractor
is a translation). Half of the X sentences have no translation, as in BUCC.

Each set is mined by the stages of ``mine run`` (``miner.evaluate.bucc.mine_split``:
sentence shards, embed with mUSE, knn, score), once with the ratio margin and once
with the default scorer, and compared at the thresholds a user would get without
tuning on the language: the ratio margin at the threshold tuned on the four BUCC
training splits together, the scorer at its own shipped threshold. ``oracle``: the
F1 at the best threshold on the set itself (ranking quality, without threshold
transfer).

    .venv/bin/python benchmarks/scorer_transfer.py [--langs spa,ita,...] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bucc_scorer import f1_at, pooled_threshold  # noqa: E402
from miner.config import Config  # noqa: E402
from miner.evaluate.bucc import BuccSplit, mine_split, optimize_threshold, read_split  # noqa: E402
from miner.scorer import load_scorer  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
# Tatoeba (ISO 639-3) -> miner codes; all among mUSE's 16 languages, none in BUCC
LANGS = {"spa": "es", "ita": "it", "por": "pt", "nld": "nl", "pol": "pl", "tur": "tr",
         "jpn": "ja", "kor": "ko", "ara": "ar", "tha": "th"}
DISTRACTORS = ("afr", "bul", "ces", "dan", "ell", "fin", "heb", "hun", "ind", "swe")


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def tatoeba_split(data: Path, lang: str, seed: int) -> BuccSplit:
    """A BUCC-style split of ``lang``-English from the Tatoeba test sets."""
    rng = np.random.default_rng(seed)
    xs = read_lines(data / f"tatoeba.{lang}-eng.{lang}")
    ens = read_lines(data / f"tatoeba.{lang}-eng.eng")
    own = set(ens)
    gold_rows = sorted(rng.choice(len(xs), len(xs) // 2, replace=False).tolist())
    distract: list[str] = []
    for other in DISTRACTORS:
        path = data / f"tatoeba.{other}-eng.eng"
        if path.exists():
            distract += [t for t in read_lines(path) if t not in own]
    distract = list(dict.fromkeys(distract))  # distinct, in order
    distract = [distract[i] for i in sorted(rng.choice(len(distract), min(len(xs), len(distract)),
                                                       replace=False).tolist())]
    src_ids = [f"{lang}-{i:06d}" for i in range(len(xs))]
    tgt = [(f"en-{i:06d}", ens[i]) for i in gold_rows] + \
          [(f"en-d{i:06d}", t) for i, t in enumerate(distract)]
    order = rng.permutation(len(tgt))
    tgt = [tgt[i] for i in order]
    gold = {(f"{lang}-{i:06d}", f"en-{i:06d}") for i in gold_rows}
    return BuccSplit("tatoeba", src_ids, xs, [i for i, _ in tgt], [t for _, t in tgt], gold)


def bucc_ratio_threshold(bucc: Path, work: Path, encoder) -> float:
    """The ratio margin's threshold tuned on the BUCC training splits together."""
    c2s, golds = {}, {}
    for lang in ("de", "fr", "ru", "zh"):
        split = read_split(bucc, f"{lang}-en", "training")
        c2s[lang] = mine_split(split, f"{lang}-en", Config(), work / f"bucc-{lang}", False,
                               encoder)[0]
        golds[lang] = split.gold
    return pooled_threshold(c2s, golds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    tatoeba, bucc = args.data / "tatoeba", args.data / "bucc"
    if not tatoeba.is_dir() or not bucc.is_dir():
        print(f"skipped: {tatoeba} or {bucc} is absent (the shared evaluation data)")
        return 0
    from miner.embed.encoders import MuseEncoder

    encoder = MuseEncoder()
    scorer = load_scorer("default")
    with tempfile.TemporaryDirectory(prefix="scorer-transfer-") as tmp:
        work = Path(tmp)
        ratio_th = bucc_ratio_threshold(bucc, work, encoder)
        print(f"ratio threshold tuned on BUCC training (de, fr, ru, zh): {ratio_th:.4f}; "
              f"default scorer threshold: {scorer.threshold:.4f}")
        print("| pair | gold | ratio | scorer | ratio (oracle) | scorer (oracle) |")
        print("| --- | --- | --- | --- | --- | --- |")
        rows = []
        for code in args.langs.split(","):
            lang = LANGS[code]
            split = tatoeba_split(tatoeba, code, args.seed)
            cfg = Config()
            c2s_ratio = mine_split(split, f"{lang}-en", cfg, work / lang, False, encoder)[0]
            learned_cfg = copy.deepcopy(cfg)
            learned_cfg.score.scorer = "default"
            c2s_learned = mine_split(split, f"{lang}-en", learned_cfg, work / lang, False,
                                     encoder)[0]
            row = (f1_at(c2s_ratio, split.gold, ratio_th),
                   f1_at(c2s_learned, split.gold, scorer.threshold),
                   optimize_threshold(c2s_ratio, split.gold)[1],
                   optimize_threshold(c2s_learned, split.gold)[1])
            rows.append(row)
            print(f"| {lang}-en | {len(split.gold)} | " + " | ".join(f"{100 * v:.2f}" for v in row)
                  + " |", flush=True)
        mean = np.mean(rows, axis=0)
        print("| mean | | " + " | ".join(f"{100 * v:.2f}" for v in mean) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
