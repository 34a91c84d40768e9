"""Sentences: split a document per language, normalise, filter by length, hash.

- ``split_sentences(text, lang)``: sentencex per paragraph (``"\\n"``-separated);
  Thai, which marks sentence ends with a space rather than punctuation, is split
  further at spaces.
- ``normalize_text(text, punctuation=False)``: Unicode NFC, control and zero-width
  characters removed, whitespace runs collapsed to one space; optionally the
  Moses ``normalize-punctuation.perl`` rules (``normalize_punctuation``).
- ``length_reason(text, min_chars, max_chars)``: too short, too long, or a fragment
  (``is_fragment``: leading punctuation, unbalanced brackets or quotes, few letters),
  which counts as too short.
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
        for sentence in _rejoin(segment(lang, paragraph), lang):
            if lang == "th":
                yield from (s for s in sentence.split() if s)
            elif sentence.strip():
                yield sentence


# sentencex cuts where these are not sentence ends: after a closing quote or bracket in
# Chinese and Japanese (「ぼく、何歳？」「彼女、どこ行くの？」のように... is one sentence),
# and after an initial or one-letter abbreviation outside the Latin script (Marathi
# इ.स., पु.ल., Cyrillic А. С. Пушкин, Greek Ι. Καποδίστριας)
_CJK = {"ja", "zh", "yue", "wuu", "lzh"}
_CJK_CLOSER = re.compile(r"[」』）)】〕〉》”’\"]\s*$")
_LAST_TOKEN = re.compile(r"([^\s.(]+)\.\s*$")


def _is_initial(text: str) -> bool:
    """``text`` ends with one letter (with its combining marks) and a full stop, in a
    script without case (Devanagari, Bengali, ...) or as a non-Latin capital."""
    m = _LAST_TOKEN.search(text)
    if not m:
        return False
    token = m.group(1)
    if not unicodedata.category(token[0]).startswith("L") or \
            any(not unicodedata.category(c).startswith("M") for c in token[1:]):
        return False
    first = token[0]
    return not first.isascii() and (first.isupper() or unicodedata.category(first) == "Lo")


def _rejoin(pieces, lang: str) -> Iterator[str]:
    """sentencex's pieces of one paragraph, a piece glued to the next where it did not
    end a sentence (see ``_CJK_CLOSER``, ``_is_initial``)."""
    held = ""
    for piece in pieces:
        held += piece
        if (lang in _CJK and _CJK_CLOSER.search(held)) or _is_initial(held):
            continue
        yield held
        held = ""
    if held:
        yield held


def sentence_hash(text: str) -> int:
    """64-bit id of an (already normalised) sentence: xxh64 of its UTF-8, seed 0."""
    return xxhash.xxh64_intdigest(text.encode("utf-8"))


def sentence_hashes(texts: list[str]) -> np.ndarray:
    """``sentence_hash`` of each text, shape (n,), dtype uint64."""
    return np.fromiter((sentence_hash(t) for t in texts), dtype=np.uint64, count=len(texts))


# A fragment is not a sentence, however long: what sentence splitting or removed markup
# leaves (", where the blue-skinned ...", ") son organitzacions", "1) Cognitive
# function", half a quotation). Rules, on the normalised text:
# - it starts with punctuation no sentence starts with (a comma, closing bracket or
#   quote, CJK comma or full stop, a lone apostrophe or quote before punctuation, an
#   equals sign or list star left from markup);
# - a bracket or CJK quote is opened and not closed or closed and not opened (half- and
#   full-width brackets count as one kind: writers mix them), or it holds an odd number
#   of straight double quotes;
# - it has fewer than FRAGMENT_MIN_LETTERS letters ("76.875 (2004)", "39 (1), pp 105-111").
FRAGMENT_MIN_LETTERS = 4
_FRAGMENT_START = re.compile(r"^(?:[,;:!?)\]}»=*、。，．：；！？）」』】》〉〕]|\.(?!\w)|'(?!\w)|\"[,.;:)])")
_BRACKETS = [("(（", ")）"), ("[", "]"), ("{", "}"), ("「", "」"), ("『", "』"), ("《", "》"),
             ("【", "】"), ("〔", "〕"), ("«", "»")]
_LETTER = re.compile(r"[^\W\d_]")


def is_fragment(text: str) -> bool:
    """True when the (normalised) ``text`` is a fragment by the rules above."""
    if _FRAGMENT_START.match(text) or text.count('"') % 2:
        return True
    for opens, closes in _BRACKETS:
        if sum(text.count(c) for c in opens) != sum(text.count(c) for c in closes):
            return True
    return len(_LETTER.findall(text)) < FRAGMENT_MIN_LETTERS


def length_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    """``"too_short"``, ``"too_long"`` or None, by length in characters; a fragment
    (``is_fragment``) of any length is ``"too_short"`` too: it is not a whole sentence."""
    n = len(text)
    if n < min_chars or (n <= max_chars and is_fragment(text)):
        return "too_short"
    if n > max_chars:
        return "too_long"
    return None
