"""Sentences: split a document per language, normalise, filter by length, hash.

- ``split_sentences(text, lang)``: sentencex per paragraph (``"\\n"``-separated);
  Thai, which marks sentence ends with a space rather than punctuation, is split
  further at spaces.
- ``normalize_text(text, punctuation=False)``: Unicode NFC, control and zero-width
  characters removed, whitespace runs collapsed to one space; optionally the
  Moses ``normalize-punctuation.perl`` rules (``normalize_punctuation``).
- ``sentence_hash(text)``: 64-bit xxhash of the normalised UTF-8, the sentence id
  used for dedup here and for pair dedup later.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterator

import numpy as np
import xxhash

# Zero-width and invisible characters dropped outright. ZWNJ/ZWJ (U+200C/U+200D) are
# kept: Persian and Indic scripts need them to spell words correctly.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad\u180e\u200e\u200f\u202a\u202b"
                                    "\u202c\u202d\u202e\u2066\u2067\u2068\u2069"), None)
# C0/C1 controls except tab/newline/CR (those become spaces below)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str, punctuation: bool = False) -> str:
    """NFC, without control or zero-width characters, single spaces, stripped."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text.translate(_INVISIBLE))
    if punctuation:
        text = normalize_punctuation(text)
    return _SPACE.sub(" ", text).strip()


# Moses normalize-punctuation.perl (the language-independent rules)
_PUNCT_RULES = [(re.compile(p), r) for p, r in [
    (r"\r", ""), (r"\(", " ("), (r"\)", ") "), (r" +", " "), (r"\) ([.!:?;,])", r")\1"),
    (r"\( ", "("), (r" \)", ")"), (r"(\d) %", r"\1%"), (r" :", ":"), (r" ;", ";"),
    (r"`", "'"), (r"''", ' " '), (r"„", '"'), (r"“", '"'), (r"”", '"'), (r"–", "-"),
    (r"—", " - "), (r" +", " "), (r"´", "'"), (r"([a-zA-Z])‘([a-zA-Z])", r"\1'\2"),
    (r"([a-zA-Z])’([a-zA-Z])", r"\1'\2"), (r"‘", "'"), (r"‚", "'"), (r"’", "'"),
    (r"''", '"'), (r"´´", '"'), (r"…", "..."), (r" « ", ' "'), (r"« ", '"'), (r"«", '"'),
    (r" » ", '" '), (r" »", '"'), (r"»", '"'), (r" %", "%"), (r"nº ", "nº "), (r" :", ":"),
    (r" ºC", " ºC"), (r" cm", " cm"), (r" \?", "?"), (r" !", "!"), (r" ;", ";"),
    (r", ", ", "), (r" +", " "),
    # English-style quotes with punctuation inside
    (r'"([,.]+)', r'\1"'),
    # fullwidth and other punctuation to ASCII
    (r"，", ","), (r"。 *", ". "), (r"、", ","), (r"”", '"'), (r"“", '"'), (r"∶", ":"),
    (r"：", ":"), (r"？", "?"), (r"《", '"'), (r"》", '"'), (r"）", ")"), (r"！", "!"),
    (r"（", "("), (r"；", ";"), (r"」", '"'), (r"「", '"'), (r"０", "0"), (r"１", "1"),
    (r"２", "2"), (r"３", "3"), (r"４", "4"), (r"５", "5"), (r"６", "6"), (r"７", "7"),
    (r"８", "8"), (r"９", "9"), (r" +", " "),
]]


def normalize_punctuation(text: str) -> str:
    """Moses-style punctuation normalisation (quotes, dashes, spacing, full-width forms).

    Meant for languages written with Latin, Greek or Cyrillic script: it turns CJK
    full-width punctuation into ASCII.
    """
    for pattern, repl in _PUNCT_RULES:
        text = pattern.sub(repl, text)
    return text


def split_sentences(text: str, lang: str) -> Iterator[str]:
    """Raw sentences of ``text`` (paragraphs separated by newlines) in language ``lang``
    (a ``normalize_lang`` code). Sentences are not normalised."""
    from sentencex import segment

    for paragraph in text.split("\n"):
        if not paragraph.strip():
            continue
        for sentence in segment(lang, paragraph):
            if lang == "th":
                yield from (s for s in sentence.split() if s)
            elif sentence.strip():
                yield sentence


def sentence_hash(text: str) -> int:
    """64-bit id of an (already normalised) sentence: xxh64 of its UTF-8, seed 0."""
    return xxhash.xxh64_intdigest(text.encode("utf-8"))


def sentence_hashes(texts: list[str]) -> np.ndarray:
    """``sentence_hash`` of each text, shape (n,), dtype uint64."""
    return np.fromiter((sentence_hash(t) for t in texts), dtype=np.uint64, count=len(texts))


def length_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    """``"too_short"``, ``"too_long"`` or None, by length in characters."""
    n = len(text)
    if n < min_chars:
        return "too_short"
    if n > max_chars:
        return "too_long"
    return None
