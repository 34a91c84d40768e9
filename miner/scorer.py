"""A learned scorer: logistic regression over cheap features of each candidate pair.

The margin alone ranks candidates by one number; a handful of other signals (do the
numbers, names and punctuation of the two sides agree, are their lengths plausible,
is the pair each other's best) separate translations from near misses further. A
``Scorer`` is a logistic regression over standardised features, fitted on the
candidates of a split with gold pairs (``mine eval bucc --learn FILE``) and stored as
a small JSON file that ``--scorer FILE`` loads (``--scorer default``: the one shipped
for mUSE, fitted on the BUCC training splits of de, fr, ru and zh).

The regression is a few lines of numpy (Newton's method with an L2 penalty): 19
features and a few thousand candidates need no library, and a dependency such as
scikit-learn (tens of MB, compiled) for one ``fit`` would be out of proportion.

Everything here is pure and vectorised over arrays (no Python loop per candidate):
``text_features`` uses pyarrow's string kernels and one ``pandas.factorize`` of the
tokens; ``features`` adds the margins and the neighbour gaps; the score stage
(``miner.score``) does the I/O. The stored score of a candidate is the regression's logit (not a probability:
float64 logits keep the order of the best candidates, probabilities round to 1.0).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from miner.errors import MinerError

FORMAT = "miner-scorer/1"
DEFAULT_NAME = "default"
DEFAULT_PATH = Path(__file__).parent / "data" / "scorer-muse.json"

FEATURES = (
    "cos",              # cosine of the pair
    "ratio",            # ratio margin (run's k)
    "distance",         # distance margin (run's k)
    "mean_src",         # source's neighbourhood mean (its k neighbours among the targets)
    "mean_tgt",         # target's neighbourhood mean
    "mutual",           # each other's best neighbour (retrieved both ways)
    "len_ratio",        # |log char length ratio - the run's median of it|
    "numbers_agree",    # the sets of digit runs are equal (1 when neither has any)
    "numbers_unmatched",  # digit runs of one side found nowhere in the other
    "punct_diff",       # | ? ! ( ) quotes : ; | count differences, summed
    "url_agree",        # both or neither side holds a URL
    "lid_src", "lid_tgt",  # LID probability of each side's expected language
    "lid_min",          # the lower of the two: one side in the wrong language sinks the pair
    "anchor_overlap",   # script-independent tokens (digits, Latin words in non-Latin
                        # text, capitalised names) found on the other side, as a share
    "anchor_any",       # either side has such tokens
    "gap_src",          # cos - the source's best other neighbour (> 0: the pair is its best)
    "gap_tgt",          # cos - the target's best other neighbour
    "ratio_2",          # ratio margin over each side's two best neighbours (k=2)
)

# punctuation classes as UTF-8 byte sequences: ? ! brackets quotes : ;
_PUNCT = (
    (b"?", "？".encode(), "¿".encode()),
    (b"!", "！".encode(), "¡".encode()),
    (b"(", b")", b"[", b"]", "（".encode(), "）".encode()),
    (b'"', "“".encode(), "”".encode(), "„".encode(), "«".encode(), "»".encode(),
     "「".encode(), "」".encode()),
    (b":", "：".encode()),
    (b";", "；".encode()),
)
_URL_MARKS = (b"http", b"www.", b".com", b".org", b".net")
_CHUNK = 1 << 18  # candidates per block: bounds the per-byte arrays
_PRIME = np.uint64(1099511628211)


def _utf8(texts) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes (b,) uint8 and offsets (n+1,) int64 of a string sequence."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else \
        pa.array(texts, pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64)[arr.offset:arr.offset + n + 1] \
        if n else np.zeros(1, np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]:offsets[-1]]
    return data, offsets - offsets[0]


def _seq_at(b: np.ndarray, seq: bytes) -> np.ndarray:
    """(len(b),) bool: ``seq`` starts at each byte."""
    hit = np.zeros(len(b), bool)
    m = len(b) - len(seq) + 1
    if m <= 0:
        return hit
    h = b[:m] == seq[0]
    for i, c in enumerate(seq[1:], 1):
        h &= b[i:i + m] == c
    hit[:m] = h
    return hit


def _count(mask: np.ndarray, offsets: np.ndarray, sparse: bool = True) -> np.ndarray:
    """Per string: how many of its bytes ``mask`` marks (``sparse``: few do)."""
    n = len(offsets) - 1
    if sparse:
        owner = np.searchsorted(offsets, np.flatnonzero(mask), side="right") - 1
        return np.bincount(owner, minlength=n)[:n].astype(np.float64)
    cs = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    return (cs[offsets[1:]] - cs[offsets[:-1]]).astype(np.float64)


def _side(texts) -> dict:
    """Per-string counts and the tokens of a block of strings, from their UTF-8 bytes.

    Tokens are runs of ASCII digits and Latin letters (ASCII and U+00C0-U+024F),
    lower-cased and hashed to uint64. Anchors: digit runs, capitalised words of 2+
    letters, and every Latin word of a string written mostly in another script."""
    b, off = _utf8(texts)
    n = len(off) - 1
    cont = (b & 0xC0) == 0x80
    upper = (b >= 65) & (b <= 90)
    ascii_letter = upper | ((b >= 97) & (b <= 122))
    digit = (b >= 48) & (b <= 57)
    latin_lead = (b >= 0xC3) & (b <= 0xC9)
    prev_latin = np.zeros(len(b), bool)
    prev_latin[1:] = latin_lead[:-1]
    # letters of any script: ASCII ones and the lead bytes of non-ASCII characters but
    # Latin-1 symbols (C2), general punctuation (E2) and full-width forms (EF)
    lead = ~cont & (b >= 0xC3) & (b != 0xE2) & (b != 0xEF)
    out = {"chars": _count(~cont, off, False),
           "letters": _count(ascii_letter | lead, off, False),
           "latin": _count(ascii_letter | latin_lead, off, False)}
    out["punct"] = [_count(np.logical_or.reduce([_seq_at(b, s) for s in cls]), off)
                    for cls in _PUNCT]
    out["url"] = _count(np.logical_or.reduce([_seq_at(b, s) for s in _URL_MARKS]), off) > 0
    # tokens
    tok = ascii_letter | digit | latin_lead | (cont & prev_latin)
    starts = tok.copy()
    starts[1:] &= ~tok[:-1]
    starts[off[:-1][off[:-1] < len(b)]] = tok[off[:-1][off[:-1] < len(b)]]  # no run across strings
    pos = np.flatnonzero(tok)
    start_pos = np.flatnonzero(starts)
    tid = np.cumsum(starts)[pos] - 1
    low = b[pos].astype(np.uint64)
    low[upper[pos]] += np.uint64(32)
    # Latin-1 capitals: C3 80..9E (not the multiplication sign 97) -> +0x20
    cap1 = cont[pos] & (b[pos - 1] == 0xC3) & (b[pos] <= 0x9E) & (b[pos] != 0x97) if len(pos) \
        else np.zeros(0, bool)
    low[cap1] += np.uint64(32)
    rel = pos - start_pos[tid]
    longest = int(rel.max()) + 1 if len(rel) else 1
    powers = np.cumprod(np.full(longest, _PRIME, np.uint64), dtype=np.uint64)
    first = np.searchsorted(pos, start_pos)  # each token's first entry in pos
    with np.errstate(over="ignore"):
        h = np.add.reduceat(low * powers[rel], first) if len(pos) else np.zeros(0, np.uint64)
    n_chars = np.add.reduceat((~cont[pos]).astype(np.int64), first) if len(pos) else h
    n_digit = np.add.reduceat(digit[pos].astype(np.int64), first) if len(pos) else h
    is_digit = n_digit == n_chars
    sb = b[start_pos]
    second = b[np.minimum(start_pos + 1, len(b) - 1)] if len(b) else sb
    is_cap = ((sb >= 65) & (sb <= 90)) | ((sb == 0xC3) & (second >= 0x80) & (second <= 0x9E))
    owner = np.searchsorted(off, start_pos, side="right") - 1
    foreign = out["latin"] * 2 < out["letters"]
    keep = is_digit | (n_chars >= 2)
    anchor = is_digit | (is_cap & (n_chars >= 2)) | foreign[owner]
    out.update(n=n, owner=owner[keep], hash=h[keep], digit=is_digit[keep], anchor=anchor[keep])
    return out


def _per_candidate(index: np.ndarray, n: int, weights=None) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=n)[:n].astype(np.float64)


def _mixed(owner: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One uint64 key per (candidate, token)."""
    with np.errstate(over="ignore"):
        return h * np.uint64(0x9E3779B97F4A7C15) + owner.astype(np.uint64) * _PRIME


def _matched(own: dict, other_keys: np.ndarray, which: np.ndarray, n: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: distinct tokens ``which`` selects, and how many of them the other
    side holds."""
    keys = _mixed(own["owner"][which], own["hash"][which])
    order = np.argsort(keys)
    keys = keys[order]
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    owner = own["owner"][which][order[first]]
    keys = keys[first]
    # other_keys sorted once by the caller: a binary search per key
    at = np.searchsorted(other_keys, keys)
    hit = other_keys[np.minimum(at, len(other_keys) - 1)] == keys if len(other_keys) \
        else np.zeros(len(keys), bool)
    return _per_candidate(owner, n), _per_candidate(owner, n, hit)


def _block_features(src_texts, tgt_texts) -> dict[str, np.ndarray]:
    s, t = _side(src_texts), _side(tgt_texts)
    n = s["n"]
    out: dict[str, np.ndarray] = {}
    out["log_len_ratio"] = np.log((s["chars"] + 1) / (t["chars"] + 1))
    out["punct_diff"] = sum(np.minimum(np.abs(a - b), 3) for a, b in zip(s["punct"], t["punct"]))
    out["url_agree"] = (s["url"] == t["url"]).astype(np.float64)
    ks, kt = np.sort(_mixed(s["owner"], s["hash"])), np.sort(_mixed(t["owner"], t["hash"]))
    a_s, h_s = _matched(s, kt, s["anchor"], n)
    a_t, h_t = _matched(t, ks, t["anchor"], n)
    n_anchor = a_s + a_t
    out["anchor_overlap"] = np.where(n_anchor > 0, (h_s + h_t) / np.maximum(n_anchor, 1), 0.0)
    out["anchor_any"] = (n_anchor > 0).astype(np.float64)
    d_s, m_s = _matched(s, kt, s["digit"], n)
    d_t, m_t = _matched(t, ks, t["digit"], n)
    miss = (d_s - m_s) + (d_t - m_t)
    out["numbers_unmatched"] = np.minimum(miss, 5)
    out["numbers_agree"] = (miss == 0).astype(np.float64)
    return out


def text_features(src_texts, tgt_texts) -> dict[str, np.ndarray]:
    """The text features of candidate pairs: two sequences of p strings (lists, numpy
    object arrays or pyarrow string arrays) -> name: (p,) float64. Vectorised over the
    UTF-8 bytes (numpy), in blocks of 2^18 candidates."""
    import pyarrow as pa

    s = src_texts if isinstance(src_texts, (pa.Array, pa.ChunkedArray)) else \
        pa.array(list(src_texts) if not isinstance(src_texts, np.ndarray) else src_texts,
                 pa.large_string())
    t = tgt_texts if isinstance(tgt_texts, (pa.Array, pa.ChunkedArray)) else \
        pa.array(list(tgt_texts) if not isinstance(tgt_texts, np.ndarray) else tgt_texts,
                 pa.large_string())
    if len(s) != len(t):
        raise ValueError("text_features: as many source as target texts")
    blocks = [_block_features(s[i:i + _CHUNK], t[i:i + _CHUNK])
              for i in range(0, max(len(s), 1), _CHUNK)]
    out = {k: np.concatenate([b[k] for b in blocks])[:len(s)] for k in blocks[0]}
    # centred on the run's median: zh-en sides differ 3x in length, de-en do not
    lr = out.pop("log_len_ratio")
    out["len_ratio"] = np.abs(lr - (np.median(lr) if len(lr) else 0.0))
    return out


def _rival(cos: np.ndarray, top: np.ndarray) -> np.ndarray:
    """A side's best neighbour other than the pair's: its second best when the pair is
    its best (within float32 rounding), else its best."""
    return np.where(cos >= top[:, 0] - 1e-5, top[:, 1], top[:, 0])


def features(cos, mean_src, mean_tgt, mutual, src_texts, tgt_texts, lid_src, lid_tgt,
             top_src=None, top_tgt=None) -> np.ndarray:
    """The feature matrix (p, len(FEATURES)) float64 of p candidates: their cosines,
    both sides' neighbourhood means, whether they are mutual best neighbours, texts,
    and LID probabilities (all (p,)); ``top_src``, ``top_tgt`` (p, 2): each side's two
    best neighbour similarities (None: the pair's cosine twice)."""
    cos = np.asarray(cos, np.float64)
    tops = [np.column_stack([cos, cos]) if t is None else np.asarray(t, np.float64)
            for t in (top_src, top_tgt)]
    # a side without neighbours (an approximate index found none): no gap
    tops = [np.where(np.isfinite(t), t, cos[:, None]) for t in tops]
    denom2 = (tops[0].mean(axis=1) + tops[1].mean(axis=1)) / 2 if len(cos) else cos
    denom = (np.asarray(mean_src, np.float64) + np.asarray(mean_tgt, np.float64)) / 2
    cols = {"cos": cos, "ratio": cos / np.where(denom == 0, 1e-9, denom),
            "distance": cos - denom, "mean_src": np.asarray(mean_src, np.float64),
            "mean_tgt": np.asarray(mean_tgt, np.float64),
            "mutual": np.asarray(mutual, np.float64),
            "lid_src": np.asarray(lid_src, np.float64), "lid_tgt": np.asarray(lid_tgt, np.float64),
            "lid_min": np.minimum(np.asarray(lid_src, np.float64), np.asarray(lid_tgt, np.float64)),
            "gap_src": cos - _rival(cos, tops[0]) if len(cos) else cos,
            "gap_tgt": cos - _rival(cos, tops[1]) if len(cos) else cos,
            "ratio_2": cos / np.where(denom2 == 0, 1e-9, denom2),
            **text_features(src_texts, tgt_texts)}
    return np.column_stack([cols[name] for name in FEATURES]) if len(cos) else \
        np.zeros((0, len(FEATURES)))


# -- the model -----------------------------------------------------------------------------

@dataclass
class Scorer:
    """A fitted logistic regression and what it was fitted with."""

    features: list[str]
    weights: list[float]
    bias: float
    mean: list[float]
    scale: list[float]
    threshold: float
    encoder: str
    model: Optional[str]
    margin: str
    k: int
    l2: float = 1.0
    fitted_on: str = ""
    notes: dict = field(default_factory=dict)
    path: str = field(default="", compare=False, repr=False)
    digest: str = field(default="", compare=False, repr=False)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(p, f) features -> (p,) float64 logits."""
        if x.shape[1] != len(self.features):
            raise MinerError(f"scorer {self.name}: {len(self.features)} features, got {x.shape[1]}")
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.weights, np.float64) + self.bias

    @property
    def name(self) -> str:
        return self.path or "(in memory)"

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["path"], d["digest"]
        return {"format": FORMAT, **d}

    def save(self, path: str | Path) -> None:
        from miner.io import atomic_open

        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    def check_encoder(self, encoder: str, model: Optional[str]) -> None:
        """Refuse, with one line, a run whose encoder is not the one fitted with."""
        enc = "sentence-transformers" if encoder == "st" else encoder
        if (self.encoder, self.model or None) != (enc, model or None):
            mine = enc + (f" ({model})" if model else "")
            theirs = self.encoder + (f" ({self.model})" if self.model else "")
            raise MinerError(f"scorer {self.name}: fitted with encoder {theirs}, "
                             f"this run uses {mine}; fit one for it (mine eval bucc --learn)")


def resolve(path: str) -> Path:
    """``default`` -> the shipped scorer; anything else is a path."""
    return DEFAULT_PATH if path == DEFAULT_NAME else Path(path)


def load_scorer(path: str) -> Scorer:
    """Read a scorer file (``default``: the shipped one); one-line errors."""
    p = resolve(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise MinerError(f"{p}: no such scorer file") from None
    except OSError as e:
        raise MinerError(f"{p}: cannot read the scorer file ({e.strerror or e})") from None
    try:
        d = json.loads(raw)
        if d.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        s = Scorer(**d)
        if list(s.features) != list(FEATURES):
            raise ValueError("features " + ", ".join(s.features) + " are not this miner's")
        if not (len(s.weights) == len(s.mean) == len(s.scale) == len(s.features)):
            raise ValueError("weights, mean and scale must have one value per feature")
        if not all(math.isfinite(v) for v in [*s.weights, *s.mean, *s.scale, s.bias,
                                              s.threshold]) or min(s.scale) <= 0:
            raise ValueError("weights, standardisation and threshold must be finite numbers")
    except (ValueError, TypeError, AttributeError) as e:
        raise MinerError(f"{p}: not a scorer file ({e})") from None
    s.path = str(path) if path == DEFAULT_NAME else str(p)
    s.digest = hashlib.sha256(raw).hexdigest()[:16]
    return s


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50
                 ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression on standardised features by Newton's method.

    x (n, f), y (n,) in {0, 1} -> weights (f,), bias, mean (f,), scale (f,). The
    penalty ``l2 * |w|^2 / 2`` spares the bias; a constant feature gets scale 1 and
    weight 0."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1]), mean, scale


def fit_scorer(x: np.ndarray, y: np.ndarray, *, encoder: str, model: Optional[str],
               margin: str, k: int, l2: float = 1.0, fitted_on: str = "") -> Scorer:
    """A Scorer fitted on features ``x`` and labels ``y``; its threshold is 0 (p = 0.5)
    until one is tuned (``mine eval bucc --learn`` tunes it by F1)."""
    w, b, mean, scale = fit_logistic(x, y, l2)
    return Scorer(list(FEATURES), [float(v) for v in w], b, [float(v) for v in mean],
                  [float(v) for v in scale], 0.0, encoder, model, margin, k, l2, fitted_on)


# -- candidates of a run: the pool, its features, the learned retrieval -------------------

def pool_candidates(fwd_best: np.ndarray, fwd_score: np.ndarray, bwd_best: np.ndarray,
                    bwd_score: np.ndarray):
    """Every pair some sentence retrieved as its best (``miner.margin.direction_best``
    of both directions), once each, with its margin and direction (a mutual pair is
    ``BOTH``): what ``max`` retrieval chooses from, before its one-to-one pass."""
    from miner.margin import BOTH, Candidates, combine

    both = combine(fwd_best, fwd_score, bwd_best, bwd_score, "fwd"), \
        combine(fwd_best, fwd_score, bwd_best, bwd_score, "bwd")
    fwd, bwd = both
    bwd = bwd.take(bwd.direction != BOTH)  # a mutual pair is in fwd already
    pool = Candidates(np.concatenate([fwd.src, bwd.src]), np.concatenate([fwd.tgt, bwd.tgt]),
                      np.concatenate([fwd.score, bwd.score]),
                      np.concatenate([fwd.direction, bwd.direction]))
    order = np.lexsort((pool.tgt, pool.src))
    return pool.take(order)


def cosines(score: np.ndarray, denom: np.ndarray, margin: str) -> np.ndarray:
    """The cosine behind a margin score (``miner.margin.apply_margin`` inverted)."""
    if margin == "ratio":
        return score * denom
    if margin == "distance":
        return score + denom
    return np.asarray(score, np.float64)


def lid_probs(texts, lang: str, model_path: Optional[str] = None) -> np.ndarray:
    """Probability that each text is in ``lang`` (fastText LID, 5 best labels), for
    sentence shards written without LID (``mine pair``, ``mine eval``)."""
    from miner.lid import cached_identifier, normalize_lang

    ident = cached_identifier(model_path)
    lang = normalize_lang(lang)
    cache: dict[str, float] = {}
    out = np.zeros(len(texts))
    for i, text in enumerate(texts):
        if text not in cache:
            cache[text] = next((p for l, p in ident.predict_top(text or " ", 5) if l == lang), 0.0)
        out[i] = cache[text]
    return out


def learned_retrieval(scorer: Scorer, pool, x: np.ndarray, retrieval: str):
    """The pool rescored with the scorer's logits and retrieved: ``max`` keeps the best
    pair of each sentence by the learned score (the greedy one-to-one pass), the others
    keep their direction's pairs; best first."""
    from miner.margin import BOTH, BWD, FWD, argsort_desc, greedy_one_to_one

    pool = pool.take(np.arange(len(pool)))
    pool.score = scorer.logits(x)
    if retrieval == "max":
        return pool.take(greedy_one_to_one(pool.src, pool.tgt, pool.score))
    keep = {"fwd": (FWD, BOTH), "bwd": (BWD, BOTH), "intersect": (BOTH,)}[retrieval]
    pool = pool.take(np.isin(pool.direction, keep))
    return pool.take(argsort_desc(pool.score))
