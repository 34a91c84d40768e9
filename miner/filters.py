"""Filters over scored sentence pairs, each a small step that counts what it drops.

A batch of pairs is a pandas DataFrame with the columns of the scores Parquet
(``src_text``, ``tgt_text``, ``score``, ``src_id``, ``tgt_id``, ``src_doc_id``, ...),
best first. Each filter has a stable ``name`` (the reason its drops are counted
under) and ``keep(df) -> bool mask``. Filters that need to remember earlier batches
(pair dedup, one-to-one, the per-document cap) keep that state in the object, so a
``FilterPipeline`` can be fed the candidates batch by batch, best first, and gives
the same result as on one big batch. The stateful ones (``StatefulStep``) decide on
a few keys per pair (``keys(df)``, e.g. hashes of the sides), so the stateless work
and the keys can be computed per scores part anywhere and the stateful pass run
once over the keys (``FilterPipeline.split``, ``run_stateless``, ``stateful_keys``,
``run_stateful``, ``record``; see ``miner.outputs``).

The pipeline runs them in this fixed order (cheap and stateless first, LID late
because it is the slowest, the stateful ones last so that they only see pairs that
survived everything else):

    below_threshold, junk, boilerplate, copy, length_ratio, script_mismatch,
    number_mismatch, lid_mismatch, duplicate_pair, not_one_to_one, doc_pair_cap

See ``docs/outputs.md`` for the defaults and why.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Iterable, Optional, Protocol

import numpy as np
import pandas as pd

from miner.config import Config
from miner.errors import MinerError
from miner.lid import normalize_lang
from miner.scripts import script_share
from miner.sentences import sentence_hashes

REASONS = ("below_threshold", "junk", "boilerplate", "copy", "length_ratio",
           "script_mismatch", "number_mismatch", "lid_mismatch", "duplicate_pair",
           "not_one_to_one", "doc_pair_cap")

# Default threshold per (encoder, margin) when none is given. mUSE ratio-margin scores
# that maximise F1 on BUCC training are 1.31-1.36 (zh..fr; docs/outputs.md);
# 1.30 keeps a little more recall and leaves the precision work to the other filters.
# LASER's WikiMatrix used 1.04-1.06 for its own embeddings, which would keep nearly
# every mUSE candidate. Unknown combinations get no threshold (all candidates kept).
DEFAULT_THRESHOLDS = {("muse", "ratio"): 1.30}

# Character length ratio src/tgt allowed by default, and the factor by which the bound
# on a side is widened when that side is written with far more information per
# character (BUCC zh-en: English sides are 1.7-4.6x as long as the Chinese, median 3x).
DEFAULT_LENGTH_RATIO = (0.5, 2.0)
COMPACT_LANGS = {"zh": 4.0, "yue": 4.0, "wuu": 4.0, "ja": 3.0, "th": 1.5}


class Step(Protocol):
    name: str

    def keep(self, df: pd.DataFrame) -> np.ndarray: ...


# --- text helpers (pure) -----------------------------------------------------------

_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|edu|gov|info|io|co|"
                  r"de|fr|ru|cn|jp|uk|es|it|nl|pl|br|in|eu)(?:/\S*)?\b", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# a number: digits in any script, with thousands/decimal separators between digit runs;
# "40 000" (space-grouped thousands) is one number
_NUMBER = re.compile(r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?!\d)"
                     r"|\d+(?:[.,'\u00a0\u202f\u066b\u066c]\d+)*")


def compare_key(text: str) -> str:
    """Text reduced for "is this the same sentence": NFKC, casefolded, letters and digits only."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if ch.isalnum())


def numbers(text: str) -> Counter:
    """Multiset of the numbers in ``text`` as ASCII digit strings.

    Digits of any script (Arabic-Indic, Devanagari, full-width, ...) become ASCII via
    ``unicodedata.decimal``; separators inside a number are dropped, so "2,000",
    "2.000", "2 000" and "2000" are one number, and "1,5" equals "1.5". Leading zeros
    go ("02:30" and "2 h 30" hold the same numbers).
    """
    out: Counter = Counter()
    for m in _NUMBER.finditer(text):
        digits = "".join(str(unicodedata.decimal(ch)) for ch in m.group() if ch.isdecimal())
        out[digits.lstrip("0") or "0"] += 1
    return out


def _significant(number: str) -> str:
    """A number without trailing zeros: "77000" and "77" (7.7万 ~ 77,000), "1500000"
    and "15" (1.5 million ~ 1,500,000) are the same digits at another scale."""
    return number.rstrip("0") or "0"


def numbers_agree(src: str, tgt: str, strict: bool = False, min_digits: int = 3) -> bool:
    """Whether the numbers of two sides are consistent.

    Numbers are compared whole, after ``numbers`` has made their digits ASCII.
    ``strict``: the multisets of numbers are equal. Otherwise (the default) a number
    missing on one side is forgiven, a different number is not: the pair disagrees
    when, after pairing off equal numbers, *both* sides keep a number of at least
    ``min_digits`` digits ("born in 1950" !~ "born in 1960", "1260 dinars" !~ "1.79
    florins to 1 USD"). Numbers equal up to trailing zeros are equal (a scale word
    beside them: "7.7万" ~ "77,000", "1.5 million" ~ "1,500,000"). Shorter numbers
    never disagree: they differ in honest translations (units "27 ºC" ~ "80 °F",
    clocks "20 h 30" ~ "8:30 p.m.", decades "70er" ~ "1970s", ordinals). A side
    without numbers may spell them out and never disagrees.
    """
    a, b = numbers(src), numbers(tgt)
    if strict:
        return a == b
    if not a or not b:
        return True
    a, b = a - b, b - a  # numbers equal on both sides pair off

    def different(xs: Counter, ys: Counter) -> bool:
        """Whether a long number of ``xs`` has no equal-up-to-scale one in ``ys``."""
        scaled = Counter(_significant(y) for y in ys.elements())
        for x in sorted(xs.elements(), key=len):
            if scaled[_significant(x)]:
                scaled[_significant(x)] -= 1
            elif len(x) >= min_digits:
                return True
        return False

    return not (different(a, b) and different(b, a))


def is_junk(text: str) -> bool:
    """True when a line is only URLs, e-mail addresses, punctuation, symbols or numbers."""
    rest = _URL.sub(" ", _EMAIL.sub(" ", text))
    return not any(unicodedata.category(ch).startswith("L") for ch in rest)


# rules for boilerplate, in the spirit of OpusFilter (RepetitionFilter,
# AlphabetRatioFilter) and bicleaner-hardrules (c_no_urls, c_no_literals,
# c_no_breadcrumbs, c_no_escaped_unicode): neither library is a dependency (OpusFilter
# pulls in ~14 packages incl. a 300 MB language detector; bicleaner-hardrules needs a
# cyhunspell that does not install on Python 3.11), these few rules are all we use.
# the same word (or run of up to 3 words) four times in a row: "Home Home Home Home"
_REPEATED_WORDS = re.compile(r"(?:^|\s)((?:\S+\s+){0,2}?\S+)(?:\s+\1){3,}(?=\s|$)")
# one punctuation or symbol character 5+ times: "!!!!!", "-----", "....."
_REPEATED_CHAR = re.compile(r"([^\w\s])\1{4,}")
# wiki/HTML/template leftovers, escapes, printf slots
_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|\|-|</?[a-zA-Z][^<>]{0,40}>"
                     r"|&(?:[a-zA-Z]{2,8}|#\d{2,5});|\\u[0-9a-fA-F]{4}|%[sd]\b|^\s*[=*#:;!|]"
                     r"|\b(?:thumb|thumbnail|px|upright)\s*\||'{2,}")
# breadcrumbs and menus: "a | b | c", "Home • News", "Home > News"; "»" only where
# it is no closing quote (« ... » in French, Russian), "·" never (Chinese names)
_SEPARATORS = re.compile(r"[|•►▶◄]|\s>\s")
_GUILLEMET_MENU = re.compile(r"\s[»›]\s")
# no sentence: starts with punctuation that continues or closes one (", where the"),
# or is one bracketed aside ("（ラブコミュニティ）", "(See also ...)")
_FRAGMENT = re.compile(r"^\s*(?:[,;:!?、。，．；：！？)\]}）】」』〕》〉]|\.(?!\.))"
                       r"|^\s*[(\[（【][^()\[\]（）【】]*[)\]）】]\s*[.。]?\s*$")


def boilerplate_reason(text: str, min_letter_share: float = 0.5,
                       max_url_share: float = 0.5) -> Optional[str]:
    """Why a line looks like boilerplate rather than a sentence, or None.

    ``"urls"``: more than ``max_url_share`` of its non-space characters are URLs or
    e-mail addresses; ``"few_letters"``: less than ``min_letter_share`` of them are
    letters (tables, lists of numbers, codes); ``"repetition"``: a word or short run
    of words four times in a row, or one punctuation character five times; ``"markup"``: wiki or
    HTML markup, entities, escapes or template slots; ``"menu"``: two or more menu or
    breadcrumb separators (``|``, ``•``, `` > ``, `` » `` where no ``«`` opens a quote);
    ``"fragment"``: it starts with punctuation that continues or closes a sentence
    (``, where the``) or is one bracketed aside (``（ラブコミュニティ）``).
    """
    chars = sum(1 for ch in text if not ch.isspace())
    if not chars:
        return None
    urls = sum(len(m.group()) for m in _URL.finditer(text)) + sum(
        len(m.group()) for m in _EMAIL.finditer(text))
    if urls > max_url_share * chars:
        return "urls"
    letters = sum(1 for ch in text if ch.isalpha())
    if letters < min_letter_share * chars:
        return "few_letters"
    if _REPEATED_WORDS.search(text) or _REPEATED_CHAR.search(text):
        return "repetition"
    if _MARKUP.search(text):
        return "markup"
    if _FRAGMENT.search(text):
        return "fragment"
    separators = len(_SEPARATORS.findall(text))
    if "«" not in text and "‹" not in text:
        separators += len(_GUILLEMET_MENU.findall(text))
    if separators >= 2:
        return "menu"
    return None


def length_bounds(src_lang: str, tgt_lang: str, min_ratio: Optional[float] = None,
                  max_ratio: Optional[float] = None) -> tuple[float, float]:
    """Allowed ``len(src) / len(tgt)`` in characters for a language pair.

    Default 0.5-2.0; when exactly one side is Chinese, Japanese or Thai, the bound on
    that side is widened by the language's factor (zh 4, ja 3, th 1.5), so zh-en
    allows 0.125-2.0 and en-zh 0.5-8.0. Given values replace the defaults.
    """
    lo, hi = DEFAULT_LENGTH_RATIO
    s, t = COMPACT_LANGS.get(normalize_lang(src_lang)), COMPACT_LANGS.get(normalize_lang(tgt_lang))
    if s and not t:
        lo = lo / s
    elif t and not s:
        hi = hi * t
    lo = lo if min_ratio is None else min_ratio
    hi = hi if max_ratio is None else max_ratio
    if not 0 < lo <= hi:
        raise MinerError(f"bad length ratio bounds {lo}-{hi}: need 0 < min <= max")
    return lo, hi


def _texts(df: pd.DataFrame, column: str) -> list[str]:
    return df[column].astype(object).where(df[column].notna(), "").tolist()


# --- filters -----------------------------------------------------------------------


class Threshold:
    """Drop pairs scoring below the margin threshold (NaN scores too)."""

    name = "below_threshold"

    def __init__(self, threshold: float):
        self.threshold = threshold

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return (df["score"].to_numpy(dtype=np.float64) >= self.threshold)


class Junk:
    """Drop pairs where either side is only URLs, e-mails, punctuation or numbers."""

    name = "junk"

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return np.array([not (is_junk(s) or is_junk(t))
                         for s, t in zip(_texts(df, "src_text"), _texts(df, "tgt_text"))],
                        dtype=bool)


class Boilerplate:
    """Drop pairs where either side looks like boilerplate (``boilerplate_reason``):
    mostly URLs, too few letters, repetition, markup, menus."""

    name = "boilerplate"

    def __init__(self, min_letter_share: float = 0.5, max_url_share: float = 0.5):
        self.min_letter_share, self.max_url_share = min_letter_share, max_url_share

    def noisy(self, text: str) -> bool:
        return boilerplate_reason(text, self.min_letter_share, self.max_url_share) is not None

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return np.array([not (self.noisy(s) or self.noisy(t))
                         for s, t in zip(_texts(df, "src_text"), _texts(df, "tgt_text"))],
                        dtype=bool)


class ScriptMismatch:
    """Drop pairs where a side is not mostly written in the scripts of its language.

    ``miner.scripts``: a side keeps at least ``min_share`` of its letters (Han, kana
    and Hangul weigh three) in its language's scripts, e.g. "Cambridge, UK." is no
    Japanese side. Digits, punctuation and Common-script letters do not count; a
    language without a script entry, or a side without letters, is not judged.
    """

    name = "script_mismatch"

    def __init__(self, src_lang: str, tgt_lang: str, min_share: float = 0.5):
        self.src_lang, self.tgt_lang = normalize_lang(src_lang), normalize_lang(tgt_lang)
        self.min_share = min_share

    def fits(self, text: str, lang: str) -> bool:
        share = script_share(text, lang)
        return share is None or share >= self.min_share

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return np.array([self.fits(s, self.src_lang) and self.fits(t, self.tgt_lang)
                         for s, t in zip(_texts(df, "src_text"), _texts(df, "tgt_text"))],
                        dtype=bool)


class Copy:
    """Drop pairs whose sides are equal after normalisation (copies, untranslated text)."""

    name = "copy"

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return np.array([compare_key(s) != compare_key(t)
                         for s, t in zip(_texts(df, "src_text"), _texts(df, "tgt_text"))],
                        dtype=bool)


class LengthRatio:
    """Drop pairs whose character length ratio src/tgt is outside ``[lo, hi]``."""

    name = "length_ratio"

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        s = df["src_text"].fillna("").str.len().to_numpy(dtype=np.float64)
        t = df["tgt_text"].fillna("").str.len().to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = s / t
        return (r >= self.lo) & (r <= self.hi)


class NumberMismatch:
    """Drop pairs whose numbers disagree (``numbers_agree``; ``strict``: multisets differ)."""

    name = "number_mismatch"

    def __init__(self, strict: bool = False, min_digits: int = 3):
        self.strict, self.min_digits = strict, min_digits

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return np.array([numbers_agree(s, t, self.strict, self.min_digits)
                         for s, t in zip(_texts(df, "src_text"), _texts(df, "tgt_text"))],
                        dtype=bool)


class LidAgreement:
    """Drop pairs where fastText LID, run again on each side, names another language.

    ``identifier`` has ``predict_top(text, k) -> [(lang, prob), ...]``
    (``miner.lid.LanguageIdentifier``). A side disagrees when LID is sure of another
    language (top probability at least ``min_prob``) and gives the expected language
    less than ``min_expected`` probability. ``min_expected=1`` is the strict "top
    label must match"; the default 0.04 forgives lid.176's habit of calling Chinese
    sentences Japanese or Wu (it gives zh 0.05-0.48 there) while a German sentence on
    the English side (en ~0.0004) still disagrees; ``min_prob`` spares short lines
    that LID cannot place at all.
    """

    name = "lid_mismatch"
    top_k = 5

    def __init__(self, src_lang: str, tgt_lang: str, identifier=None, min_prob: float = 0.5,
                 min_expected: float = 0.04):
        if identifier is None:
            from miner.lid import cached_identifier

            identifier = cached_identifier()
        self.identifier = identifier
        self.src_lang, self.tgt_lang = normalize_lang(src_lang), normalize_lang(tgt_lang)
        self.min_prob, self.min_expected = min_prob, min_expected

    def agrees(self, text: str, lang: str) -> bool:
        top = self.identifier.predict_top(text, self.top_k)
        if not top or top[0][1] < self.min_prob or normalize_lang(top[0][0]) == lang:
            return True
        return any(normalize_lang(label) == lang and p >= self.min_expected for label, p in top)

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return np.array([self.agrees(s, self.src_lang) and self.agrees(t, self.tgt_lang)
                         for s, t in zip(_texts(df, "src_text"), _texts(df, "tgt_text"))],
                        dtype=bool)


def _as_list(values) -> list:
    """Python objects of a column, array or list (numpy ints become Python ints)."""
    if hasattr(values, "to_pylist"):  # pyarrow
        return values.to_pylist()
    if hasattr(values, "tolist"):  # numpy, pandas
        return values.tolist()
    return list(values)


class StatefulStep:
    """A filter that remembers the pairs it kept (in earlier batches too).

    Its decision needs only a few keys per pair, not the texts: ``keys(df)`` computes
    them (stateless, so it can run anywhere, e.g. in a task per scores part) and
    ``keep_keys(*keys)`` runs the stateful pass over them in order (best first).
    ``keep(df)`` is the two together.
    """

    name = "stateful"

    def keys(self, df: pd.DataFrame) -> tuple:
        raise NotImplementedError

    def keep_keys(self, *keys) -> np.ndarray:
        raise NotImplementedError

    def keep(self, df: pd.DataFrame) -> np.ndarray:
        return self.keep_keys(*self.keys(df))


class PairDedup(StatefulStep):
    """Drop a pair whose (src, tgt) was seen before (the best-scoring one stays).

    Sides are compared by ``sentence_hash(compare_key(text))``: pairs differing only
    in case, punctuation or spacing are duplicates.
    """

    name = "duplicate_pair"

    def __init__(self):
        self.seen: set[tuple[int, int]] = set()

    def keys(self, df: pd.DataFrame) -> tuple:
        """uint64 hashes of the normalised source and target sides."""
        return tuple(sentence_hashes([compare_key(x) for x in _texts(df, col)])
                     for col in ("src_text", "tgt_text"))

    def keep_keys(self, src_keys, tgt_keys) -> np.ndarray:
        src_keys, tgt_keys = _as_list(src_keys), _as_list(tgt_keys)
        mask = np.zeros(len(src_keys), dtype=bool)
        for i, key in enumerate(zip(src_keys, tgt_keys)):
            if key not in self.seen:
                self.seen.add(key)
                mask[i] = True
        return mask


class OneToOne(StatefulStep):
    """Keep each source and each target sentence in at most one pair (greedy, best first)."""

    name = "not_one_to_one"

    def __init__(self):
        self.src_used: set = set()
        self.tgt_used: set = set()

    def keys(self, df: pd.DataFrame) -> tuple:
        return df["src_id"].to_numpy(), df["tgt_id"].to_numpy()

    def keep_keys(self, src_ids, tgt_ids) -> np.ndarray:
        src_ids, tgt_ids = _as_list(src_ids), _as_list(tgt_ids)
        mask = np.zeros(len(src_ids), dtype=bool)
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
            if s not in self.src_used and t not in self.tgt_used:
                self.src_used.add(s)
                self.tgt_used.add(t)
                mask[i] = True
        return mask


class DocPairCap(StatefulStep):
    """Keep at most ``cap`` pairs per (source document, target document), best first."""

    name = "doc_pair_cap"

    def __init__(self, cap: int):
        if cap < 1:
            raise MinerError(f"max_pairs_per_doc must be at least 1, got {cap}")
        self.cap = cap
        self.counts: Counter = Counter()

    def keys(self, df: pd.DataFrame) -> tuple:
        return df["src_doc_id"].tolist(), df["tgt_doc_id"].tolist()

    def keep_keys(self, src_docs, tgt_docs) -> np.ndarray:
        src_docs, tgt_docs = _as_list(src_docs), _as_list(tgt_docs)
        mask = np.zeros(len(src_docs), dtype=bool)
        for i, key in enumerate(zip(src_docs, tgt_docs)):
            if self.counts[key] < self.cap:
                self.counts[key] += 1
                mask[i] = True
        return mask


# --- pipeline ----------------------------------------------------------------------


def default_threshold(cfg: Config) -> Optional[float]:
    """``score.threshold`` if set, else the default for the encoder and margin, or None."""
    if cfg.score.threshold is not None:
        return cfg.score.threshold
    if cfg.score.scorer:  # a learned scorer's scores: its own threshold
        from miner.scorer import load_scorer

        return load_scorer(cfg.score.scorer).threshold
    return DEFAULT_THRESHOLDS.get((cfg.embed.encoder, cfg.score.margin))


class FilterPipeline:
    """Filters run in a fixed order over batches of pairs, best first, with drop counts.

    ``filter(df)`` returns the kept rows (order preserved) and that batch's counts;
    ``counts`` holds the totals over every batch so far.
    """

    def __init__(self, steps: Iterable[Step]):
        self.steps = list(steps)
        self.counts = {"candidates": 0, "kept": 0, "dropped": {s.name: 0 for s in self.steps}}

    @classmethod
    def from_config(cls, cfg: Config, src_lang: str, tgt_lang: str, identifier=None,
                    threshold: Optional[float] = None, use_threshold: bool = True
                    ) -> "FilterPipeline":
        """The steps switched on in ``cfg.filters`` (and the threshold) for one pair.

        ``threshold`` overrides the configured/default one; ``use_threshold=False``
        leaves the threshold out (the BUCC benchmark tunes it afterwards).
        """
        f = cfg.filters
        steps: list[Step] = []
        if use_threshold:
            th = threshold if threshold is not None else default_threshold(cfg)
            if th is not None:
                steps.append(Threshold(th))
        if f.drop_junk:
            steps.append(Junk())
        if f.drop_boilerplate:
            steps.append(Boilerplate(f.boilerplate_min_letter_share, f.boilerplate_max_url_share))
        if f.drop_copies:
            steps.append(Copy())
        if f.length_ratio:
            steps.append(LengthRatio(*length_bounds(src_lang, tgt_lang, f.min_length_ratio,
                                                    f.max_length_ratio)))
        if f.script_agreement:
            steps.append(ScriptMismatch(src_lang, tgt_lang, f.script_min_share))
        if f.number_mismatch:
            steps.append(NumberMismatch(f.strict_numbers, f.number_min_digits))
        if f.lid_agreement:
            lid = identifier
            if lid is None:
                from miner.lid import cached_identifier

                lid = cached_identifier(cfg.prepare.lid_model)
            steps.append(LidAgreement(src_lang, tgt_lang, lid, f.lid_agreement_min_prob,
                                      f.lid_agreement_min_expected))
        if f.pair_dedup:
            steps.append(PairDedup())
        if f.one_to_one:
            steps.append(OneToOne())
        if f.max_pairs_per_doc is not None:
            steps.append(DocPairCap(f.max_pairs_per_doc))
        return cls(steps)

    @property
    def threshold(self) -> Optional[float]:
        return next((s.threshold for s in self.steps if isinstance(s, Threshold)), None)

    def step(self, name: str):
        return next((s for s in self.steps if s.name == name), None)

    def split(self) -> tuple[list[Step], list[StatefulStep]]:
        """The stateless steps and, after them, the stateful ones (``StatefulStep``).

        ``write_bitext`` runs the first list in a task per scores part and the second
        in one global pass over the keys; that needs every stateful step last.
        """
        i = next((i for i, s in enumerate(self.steps) if isinstance(s, StatefulStep)),
                 len(self.steps))
        stateless, stateful = self.steps[:i], self.steps[i:]
        if not all(isinstance(s, StatefulStep) for s in stateful):
            raise ValueError("a stateless filter after a stateful one cannot run per part: "
                             f"{[s.name for s in self.steps]}")
        return stateless, stateful

    @staticmethod
    def _apply(steps, df: pd.DataFrame, counts: dict, dropped: Optional[dict] = None,
               limit: int = 0) -> pd.DataFrame:
        for step in steps:
            if not len(df):
                counts["dropped"][step.name] = 0
                continue
            mask = np.asarray(step.keep(df), dtype=bool)
            counts["dropped"][step.name] = int(len(mask) - mask.sum())
            if dropped is not None and not mask.all():
                dropped[step.name] = df.index[~mask][:limit].tolist()
            df = df[mask]
        return df

    def run_stateless(self, df: pd.DataFrame, dropped: Optional[dict] = None,
                      limit: int = 3) -> tuple[pd.DataFrame, dict]:
        """The stateless steps alone: their survivors and counts (``kept`` = survivors).

        Touches neither the totals (``record`` adds them) nor any state. ``dropped``, if
        given, receives for each step that dropped rows the index labels of its first
        ``limit`` drops (the report's examples per reason).
        """
        counts = {"candidates": len(df), "kept": 0, "dropped": {}}
        df = self._apply(self.split()[0], df, counts, dropped, limit)
        counts["kept"] = len(df)
        return df, counts

    def stateful_keys(self, df: pd.DataFrame) -> list[tuple]:
        """``step.keys(df)`` of each stateful step, in order (no state touched)."""
        return [step.keys(df) for step in self.split()[1]]

    def run_stateful(self, keys: list[tuple], n: int, dropped: Optional[dict] = None,
                     limit: int = 3) -> tuple[np.ndarray, dict]:
        """The stateful pass over the keys of ``n`` pairs, best first (``keys`` as from
        ``stateful_keys``): the keep mask over the ``n`` pairs and the drop counts.
        Updates the steps' state, not the totals. ``dropped``: as for
        ``run_stateless``, positions among the ``n`` pairs."""
        counts = {"candidates": n, "kept": 0, "dropped": {}}
        rows = np.arange(n)
        for step, step_keys in zip(self.split()[1], keys):
            if not len(rows):
                counts["dropped"][step.name] = 0
                continue
            step_keys = [np.asarray(_as_list(k), dtype=object)[rows] for k in step_keys]
            mask = np.asarray(step.keep_keys(*step_keys), dtype=bool)
            counts["dropped"][step.name] = int(len(mask) - mask.sum())
            if dropped is not None and not mask.all():
                dropped[step.name] = rows[~mask][:limit].tolist()
            rows = rows[mask]
        keep = np.zeros(n, dtype=bool)
        keep[rows] = True
        counts["kept"] = int(keep.sum())
        return keep, counts

    def record(self, counts: dict) -> None:
        """Add one batch's ``candidates``, ``kept`` and ``dropped`` counts to the totals."""
        self.counts["candidates"] += counts["candidates"]
        self.counts["kept"] += counts["kept"]
        for name, n in counts["dropped"].items():
            self.counts["dropped"][name] += n

    def filter(self, df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        counts = {"candidates": len(df), "kept": 0, "dropped": {}}
        df = self._apply(self.steps, df, counts)
        counts["kept"] = len(df)
        self.record(counts)
        return df, counts

