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

import contextlib
import copy
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miner.config import Config
from miner.errors import MinerError
from miner.io import read_lines

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


def ids_by_hash(ids: list[str], texts: list[str], punctuation: bool = False
                ) -> dict[int, list[str]]:
    """The ids carrying each text, keyed by the sentence id its sentence shard row has:
    ``sentence_hash`` of the text cleaned as ``miner.pair.write_sentence_shards``
    cleans it (``normalize_text``)."""
    from miner.sentences import normalize_text, sentence_hash

    out: dict[int, list[str]] = {}
    for i, text in zip(ids, texts):
        out.setdefault(sentence_hash(normalize_text(text, punctuation)), []).append(i)
    return out


def candidate_scores_by_id(split: BuccSplit, src_id, tgt_id, score, punctuation: bool = False
                           ) -> dict[tuple[str, str], float]:
    """Candidates mined between unique sentences (their sentence ids, as in the
    score stage's ``src_id`` and ``tgt_id`` columns, and scores), expanded to every
    pair of BUCC ids carrying those texts, as LASER's bucc.py does. ``punctuation``:
    the ``normalize_punctuation`` setting the shards were written with."""
    src_by_hash = ids_by_hash(split.src_ids, split.src_texts, punctuation)
    tgt_by_hash = ids_by_hash(split.tgt_ids, split.tgt_texts, punctuation)
    out: dict[tuple[str, str], float] = {}
    for s, t, sc in zip(list(src_id), list(tgt_id), list(score)):
        for sid in src_by_hash[int(s)]:
            for tid in tgt_by_hash[int(t)]:
                out[sid, tid] = float(sc)
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


# ``filters``: every bitext filter but the threshold. The bitext stage applies the
# configured (or default) threshold; the lowest float keeps every candidate.
NO_THRESHOLD = -sys.float_info.max


def split_langs(pair: str) -> tuple[str, str]:
    from miner.config import parse_pair
    from miner.lid import normalize_lang

    src, tgt = parse_pair(pair)
    return normalize_lang(src), normalize_lang(tgt)


def mine_split(split: BuccSplit, pair: str, cfg: Config, work_dir, filters: bool = False,
               encoder=None, executor=None) -> tuple[dict[tuple[str, str], float], dict | None]:
    """Mine one split in the run folder ``work_dir`` with the stages of ``mine run``;
    its candidates by BUCC ids with their scores and, with ``filters``, the bitext
    stage's counts (None without).

    Sentence shards -> embed -> knn -> score (``miner.pair.mine_sentences``); with
    ``filters``, then the bitext stage with the threshold off, and its kept pairs are
    the candidates. Stages current in ``work_dir`` are skipped: another margin or k
    over the same split reuses the embeddings.
    """
    from miner.formats import read_parquet
    from miner.pair import mine_sentences

    src, tgt = split_langs(pair)
    name = f"{pair}.{split.name}"
    parts = mine_sentences(zip(split.src_ids, split.src_texts),
                           zip(split.tgt_ids, split.tgt_texts), src, tgt, cfg, work_dir,
                           sources=(f"{name}.{src}", f"{name}.{tgt}"), encoder=encoder,
                           executor=executor)
    columns = ["src_id", "tgt_id", "score"]
    counts = None
    if filters:
        from miner.outputs import write_bitext
        from miner.rundir import RunDir

        cfg = copy.deepcopy(cfg)
        cfg.score.threshold = NO_THRESHOLD
        counts = write_bitext(cfg, work_dir, src, tgt, executor)
        tables = [read_parquet(RunDir(work_dir).bitext_parquet(src, tgt), columns)]
    else:
        tables = [read_parquet(p, columns) for p in parts]
    c2s: dict[tuple[str, str], float] = {}
    for t in tables:
        c2s.update(candidate_scores_by_id(split, t.column("src_id").to_pylist(),
                                          t.column("tgt_id").to_pylist(),
                                          t.column("score").to_pylist(),
                                          cfg.prepare.normalize_punctuation))
    return c2s, counts


def pool_labels(split: BuccSplit, src_hash, tgt_hash, punctuation: bool = False) -> np.ndarray:
    """1 for each candidate (sentence ids of the score stage) that some gold pair
    carries (through every BUCC id of its texts), else 0."""
    src_by_hash = ids_by_hash(split.src_ids, split.src_texts, punctuation)
    tgt_by_hash = ids_by_hash(split.tgt_ids, split.tgt_texts, punctuation)
    gold = split.gold or set()
    return np.array([any((a, b) in gold for a in src_by_hash[int(s)] for b in tgt_by_hash[int(t)])
                     for s, t in zip(src_hash, tgt_hash)], dtype=np.float64)


def learn_data(split: BuccSplit, pair: str, cfg: Config, work_dir, encoder=None, executor=None):
    """Mine ``split`` (``mine_split``, no scorer) and return its pooled candidates'
    features (p, f), gold labels (p,) and sentence ids of both sides (p,) each."""
    from miner.score import run_pool_features

    c = copy.deepcopy(cfg)
    c.score.scorer = None
    mine_split(split, pair, c, work_dir, False, encoder, executor)
    src, tgt = split_langs(pair)
    pool, x, src_ids, tgt_ids = run_pool_features(c, work_dir, src, tgt)
    s, t = src_ids[pool.src], tgt_ids[pool.tgt]
    return x, pool_labels(split, s, t, cfg.prepare.normalize_punctuation), s, t


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
    filters: bool = False
    filter_counts: dict | None = None  # with filters: the test split's bitext counts
    scorer: str | None = None  # the learned scorer used (a file), if any
    pairs: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "pairs"}
        return d


def evaluate_bucc(directory: str | Path, pair: str, encoder=None, tune_split: str = "training",
                  test_split: str = "test", *, cfg: Config | None = None, select: bool = False,
                  filters: bool = False, executor=None, learn: str | None = None
                  ) -> BuccResult:
    """Tune the threshold on one split, apply it to another, score against its gold.

    ``cfg``: the mining settings (encoder, k, margin, retrieval, kNN, filters;
    default ``Config()``); its threshold is ignored (it is what is tuned). Each split
    is mined by the stages of ``mine run`` in a temporary run folder
    (``mine_split``); ``filters``: the bitext filters, all but the threshold, drop
    candidates before the threshold is tuned and applied. ``encoder``: a loaded
    encoder to reuse (default: loaded from ``cfg``). With ``select``, also choose the
    margin (ratio or distance) and k (2, 4, 8, 16) with the best F1 on the tune split;
    neighbours are searched again for each k (the knn stage stores each sentence's
    neighbourhood mean over its k), embeddings once. ``learn``: fit a scorer
    (``miner.scorer``) on the tune split's pooled candidates after the margin and k are
    chosen, write it there, tune its threshold through the score stage and score the
    test split with it (``cfg.score.scorer``: evaluate a given scorer instead).
    """
    from miner.executor import executor_for

    cfg = copy.deepcopy(cfg or Config())
    pair = "-".join(split_langs(pair))  # files are named de-en: deu_Latn-eng_Latn finds them
    tune = read_split(directory, pair, tune_split)
    if tune.gold is None:
        raise MinerError(f"{Path(directory) / f'{pair}.{tune_split}.gold'}: no such file "
                         "(the tune split needs gold pairs)")
    test = tune if test_split == tune_split else read_split(directory, pair, test_split)
    choices = [(mg, kk) for mg in SELECT_MARGINS for kk in SELECT_KS] if select \
        else [(cfg.score.margin, cfg.knn.k)]
    mined: dict[tuple[str, str, int], tuple[dict, dict | None]] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mine-eval-bucc-")))
        if executor is None:
            executor = stack.enter_context(executor_for(cfg))

        def candidates(split: BuccSplit, mg: str, kk: int) -> tuple[dict, dict | None]:
            key = (split.name, mg, kk)
            if key not in mined:
                c = copy.deepcopy(cfg)
                c.score.margin, c.knn.k = mg, kk
                mined[key] = mine_split(split, pair, c, tmp / split.name, filters, encoder,
                                        executor)
            return mined[key]

        # k outer: the knn stage reruns once per k, the score stage once per margin
        for mg, kk in sorted(choices, key=lambda c: (c[1], c[0])):
            candidates(tune, mg, kk)
        selection = []
        best = None
        for mg, kk in choices:
            th, f1 = optimize_threshold(candidates(tune, mg, kk)[0], tune.gold)
            selection.append({"margin": mg, "k": kk, "threshold": th, "tune_f1": f1})
            if best is None or f1 > best[3]:
                best = (mg, kk, th, f1)
        mg, kk, th, tune_f1 = best
        scorer_name = cfg.score.scorer
        if learn:
            from miner.scorer import fit_scorer

            c = copy.deepcopy(cfg)
            c.score.margin, c.knn.k = mg, kk
            x, y, _, _ = learn_data(tune, pair, c, tmp / tune.name, encoder, executor)
            if not y.any():
                raise MinerError(f"{pair}.{tune_split}: no gold pair among the candidates: "
                                 "nothing to learn from")
            enc = "sentence-transformers" if c.embed.encoder == "st" else c.embed.encoder
            scorer = fit_scorer(x, y, encoder=enc, model=c.embed.model, margin=mg, k=kk,
                                fitted_on=f"{Path(directory).name}/{pair}.{tune_split}")
            scorer.save(learn)
            # the threshold: tuned on the tune split scored by the stages with the scorer
            c.score.scorer = str(learn)
            c2s, _ = mine_split(tune, pair, c, tmp / tune.name, filters, encoder, executor)
            th, tune_f1 = optimize_threshold(c2s, tune.gold)
            scorer.threshold = float(th) if np.isfinite(th) else 0.0
            scorer.notes = {"tune_f1": tune_f1, "positives": int(y.sum()), "candidates": len(y)}
            scorer.save(learn)
            test_c2s, counts = mine_split(test, pair, c, tmp / test.name, filters, encoder,
                                          executor)
            scorer_name = str(learn)
        elif cfg.score.scorer:
            c = copy.deepcopy(cfg)
            c.score.margin, c.knn.k = mg, kk
            test_c2s, counts = mine_split(test, pair, c, tmp / test.name, filters, encoder,
                                          executor)
        else:
            test_c2s, counts = candidates(test, mg, kk)
    test_pairs = extract(test_c2s, th)
    result = BuccResult(pair, tune_split, test_split, mg, kk, th, tune_f1,
                        n_extracted=len(test_pairs), selection=selection if select else [],
                        filters=filters, filter_counts=counts, pairs=test_pairs,
                        scorer=scorer_name)
    if test.gold is not None:
        result.precision, result.recall, result.f1 = precision_recall_f1(test_pairs, test.gold)
        result.n_gold = len(test.gold)
    return result
