"""BUCC 2018-style evaluation of bitext mining.

Gold translation pairs are hidden among non-parallel sentences. Mine each split,
choose the score threshold that maximises F1 against the tune split's gold (LASER's
``BuccOptimize``: walk the candidates best first), then report precision, recall
and F1 of the pairs scoring at least that threshold on the test split.

Files, as in the shared task: ``{src}-{tgt}.{split}.{src}`` and
``{src}-{tgt}.{split}.{tgt}`` with ``id<TAB>sentence`` lines, and
``{src}-{tgt}.{split}.gold`` with ``src-id<TAB>tgt-id`` lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miner.errors import MinerError
from miner.io import read_lines
from miner.mining import mine_embeddings, neighbours, unify

log = logging.getLogger(__name__)

SELECT_MARGINS = ("ratio", "distance")
SELECT_KS = (2, 4, 8, 16)


@dataclass
class BuccSplit:
    """One split of one language pair: sentences with ids, and the gold pairs if known."""

    name: str
    src_ids: list[str]
    src_texts: list[str]
    tgt_ids: list[str]
    tgt_texts: list[str]
    gold: set[tuple[str, str]] | None = None


def _read_tsv(path: Path, columns: int = 2) -> list[list[str]]:
    rows = []
    for lineno, line in enumerate(read_lines(path), 1):
        parts = line.split("\t")
        if len(parts) != columns or not all(p.strip() for p in parts):
            raise MinerError(f"{path}:{lineno}: malformed line, expected {columns} "
                             f"tab-separated fields: {line[:60]!r}")
        rows.append(parts)
    return rows


def read_split(directory: str | Path, pair: str, split: str) -> BuccSplit:
    """Read ``{pair}.{split}.{src|tgt|gold}`` from ``directory``; the gold file is optional."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MinerError(f"{directory}: no such directory")
    try:
        src_lang, tgt_lang = pair.split("-")
    except ValueError:
        raise MinerError(f"bad language pair {pair!r}: expected two codes like de-en") from None
    src_path = directory / f"{pair}.{split}.{src_lang}"
    tgt_path = directory / f"{pair}.{split}.{tgt_lang}"
    for p in (src_path, tgt_path):
        if not p.exists():
            raise MinerError(f"{p}: no such file (no BUCC split {split!r} for {pair} in {directory})")
    src = _read_tsv(src_path)
    tgt = _read_tsv(tgt_path)
    gold_path = directory / f"{pair}.{split}.gold"
    gold = None
    if gold_path.exists():
        gold = {(a, b) for a, b in _read_tsv(gold_path)}
        src_known = {i for i, _ in src}
        tgt_known = {i for i, _ in tgt}
        for a, b in gold:
            if a not in src_known or b not in tgt_known:
                raise MinerError(f"{gold_path}: gold pair {a} {b} names a sentence that is not "
                                 "in the split")
    return BuccSplit(split, [i for i, _ in src], [s.strip() for _, s in src],
                     [i for i, _ in tgt], [s.strip() for _, s in tgt], gold)


def candidate_scores_by_id(split: BuccSplit, x: np.ndarray, y: np.ndarray,
                           src_inverse: np.ndarray, tgt_inverse: np.ndarray, k: int,
                           margin: str, retrieval: str = "max", nbrs=None
                           ) -> dict[tuple[str, str], float]:
    """Mine unique sentences and expand each pair to every id carrying those texts.

    x, y: embeddings of the unique source and target sentences; *_inverse map each id
    position to its unique sentence (``unify``). As LASER's bucc.py does.
    """
    cands = mine_embeddings(x, y, k=k, margin=margin, retrieval=retrieval, nbrs=nbrs)
    src_by_text: dict[int, list[str]] = {}
    for pos, u in enumerate(src_inverse):
        src_by_text.setdefault(int(u), []).append(split.src_ids[pos])
    tgt_by_text: dict[int, list[str]] = {}
    for pos, u in enumerate(tgt_inverse):
        tgt_by_text.setdefault(int(u), []).append(split.tgt_ids[pos])
    out: dict[tuple[str, str], float] = {}
    for s, t, score in zip(cands.src.tolist(), cands.tgt.tolist(), cands.score.tolist()):
        for sid in src_by_text[s]:
            for tid in tgt_by_text[t]:
                out[sid, tid] = score
    return out


def optimize_threshold(cand2score: dict[tuple[str, str], float],
                       gold: set[tuple[str, str]]) -> tuple[float, float]:
    """The threshold with the best F1 on ``gold`` (LASER BuccOptimize) and that F1.

    Candidates are walked best first; after each, F1 of the candidates so far is
    computed; the threshold is the midpoint between the best cut's score and the next.
    """
    items = sorted(cand2score.items(), key=lambda kv: -kv[1])
    ngold = len(gold)
    ncorrect = 0
    best_f1, threshold = 0.0, float("inf")
    for i, (pair, score) in enumerate(items):
        if pair in gold:
            ncorrect += 1
        if ncorrect:
            precision = ncorrect / (i + 1)
            recall = ncorrect / ngold
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                nxt = items[i + 1][1] if i + 1 < len(items) else score - 1e-6
                threshold = (score + nxt) / 2
    return threshold, best_f1


def extract(cand2score: dict[tuple[str, str], float], threshold: float) -> list[tuple[str, str]]:
    """Pairs scoring at least ``threshold``, best first."""
    items = sorted(cand2score.items(), key=lambda kv: (-kv[1], kv[0]))
    return [pair for pair, score in items if score >= threshold]


def precision_recall_f1(pairs: list[tuple[str, str]], gold: set[tuple[str, str]]
                        ) -> tuple[float, float, float]:
    """P, R, F1 of extracted pairs against gold (0 where undefined)."""
    correct = sum(1 for p in pairs if p in gold)
    precision = correct / len(pairs) if pairs else 0.0
    recall = correct / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class EmbeddedSplit:
    split: BuccSplit
    x: np.ndarray
    y: np.ndarray
    src_inverse: np.ndarray
    tgt_inverse: np.ndarray
    nbrs: object = None


def embed_split(split: BuccSplit, encoder, k_max: int, backend: str = "auto") -> EmbeddedSplit:
    """Unify and embed both sides of a split, and search neighbours once with k_max."""
    src_u, src_inv = unify(split.src_texts)
    tgt_u, tgt_inv = unify(split.tgt_texts)
    log.info("%s: embedding %d + %d unique sentences", split.name, len(src_u), len(tgt_u))
    x = encoder.encode(src_u)
    y = encoder.encode(tgt_u)
    return EmbeddedSplit(split, x, y, src_inv, tgt_inv, neighbours(x, y, k_max, backend=backend))


@dataclass
class BuccResult:
    pair: str
    tune_split: str
    test_split: str
    margin: str
    k: int
    threshold: float
    tune_f1: float
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    n_extracted: int = 0
    n_gold: int | None = None
    selection: list[dict] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "pairs"}
        return d


def evaluate_bucc(directory: str | Path, pair: str, encoder, tune_split: str = "training",
                  test_split: str = "test", k: int = 4, margin: str = "ratio",
                  retrieval: str = "max", select: bool = False,
                  backend: str = "auto") -> BuccResult:
    """Tune the threshold on one split, apply it to another, score against its gold.

    With ``select``, also choose the margin (ratio or distance) and k (2, 4, 8, 16)
    with the best F1 on the tune split.
    """
    tune = read_split(directory, pair, tune_split)
    if tune.gold is None:
        raise MinerError(f"{Path(directory) / f'{pair}.{tune_split}.gold'}: no such file "
                         "(the tune split needs gold pairs)")
    test = tune if test_split == tune_split else read_split(directory, pair, test_split)
    k_max = max(SELECT_KS) if select else k
    tune_e = embed_split(tune, encoder, k_max, backend)
    test_e = tune_e if test is tune else embed_split(test, encoder, k_max, backend)

    def scores(e: EmbeddedSplit, mg: str, kk: int):
        return candidate_scores_by_id(e.split, e.x, e.y, e.src_inverse, e.tgt_inverse,
                                      kk, mg, retrieval, nbrs=e.nbrs)

    selection = []
    choices = [(mg, kk) for mg in SELECT_MARGINS for kk in SELECT_KS] if select else [(margin, k)]
    best = None
    for mg, kk in choices:
        th, f1 = optimize_threshold(scores(tune_e, mg, kk), tune.gold)
        selection.append({"margin": mg, "k": kk, "threshold": th, "tune_f1": f1})
        if best is None or f1 > best[3]:
            best = (mg, kk, th, f1)
    mg, kk, th, tune_f1 = best
    test_pairs = extract(scores(test_e, mg, kk), th)
    result = BuccResult(pair, tune_split, test_split, mg, kk, th, tune_f1,
                        n_extracted=len(test_pairs), selection=selection if select else [],
                        pairs=test_pairs)
    if test.gold is not None:
        result.precision, result.recall, result.f1 = precision_recall_f1(test_pairs, test.gold)
        result.n_gold = len(test.gold)
    return result
