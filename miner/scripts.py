"""Which Unicode scripts a language is written in, and how much of a text is in them.

``LANG_SCRIPTS`` maps a language (``miner.lid.normalize_lang`` codes) to the scripts
its ordinary text uses: Japanese Han + Hiragana + Katakana, Chinese Han, Russian
Cyrillic, Korean Hangul + Han, most European languages Latin, ... ``script_share(text,
lang)`` is the share of the text's letters written in those scripts; letters of the
Common and Inherited scripts (the Japanese prolonged sound mark, combining marks),
digits, punctuation and symbols are not counted. Scripts come from the Unicode
Script property through the ``regex`` module (``\\p{Script=Han}``).

A language missing from the table has no expectation (``script_share`` returns None),
so nothing is decided for it. Han, kana and Hangul characters weigh three letters
(``WIDE_WEIGHT``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import regex

_LATIN = ("Latin",)
_TABLE: dict[tuple[str, ...], str] = {
    _LATIN: """
        af ak an ast ay az bar bcl br bs ca ceb ch co cs cy da de dsb ee en eo es et eu
        ff fi fj fo fr fur fy ga gd gl gn gsw gv ha haw hif hr hsb ht hu ia id ie ig ilo
        io is it jbo jv kg ki kl kw la lb lg li lij lmo ln lt lu lv mg mh mi min ms mt
        mwl nah nap nb nds nl nn no nrm nso ny oc om pam pap pl pms pt qu rm rn ro rw sc
        scn sco se sg sh sk sl sm sn so sq ss st su sv sw szl tet tk tl tn to tpi tr ts
        tw ty uz ve vec vi vls vo wa war wo xh yo za zu
    """,
    ("Cyrillic",): "ab av ba be bg ce cv kk kv ky mk mn os ru sah tg tt tyv udm uk",
    ("Cyrillic", "Latin"): "sr",
    ("Greek",): "el",
    ("Armenian",): "hy",
    ("Georgian",): "ka",
    ("Hebrew",): "he yi",
    ("Arabic",): "ar arz ckb fa ps sd ug ur azb mzn pnb",
    ("Devanagari",): "hi mr ne sa mai bh bih bho new gom",
    ("Bengali",): "bn as bpy",
    ("Gurmukhi",): "pa",
    ("Gujarati",): "gu",
    ("Oriya",): "or",
    ("Tamil",): "ta",
    ("Telugu",): "te",
    ("Kannada",): "kn",
    ("Malayalam",): "ml",
    ("Sinhala",): "si",
    ("Thai",): "th",
    ("Lao",): "lo",
    ("Khmer",): "km",
    ("Myanmar",): "my",
    ("Tibetan",): "bo dz",
    ("Ethiopic",): "am ti",
    ("Thaana",): "dv",
    ("Hangul", "Han"): "ko",
    ("Han",): "zh yue wuu gan",
    ("Han", "Hiragana", "Katakana"): "ja",
}
LANG_SCRIPTS: dict[str, tuple[str, ...]] = {
    lang: scripts for scripts, langs in _TABLE.items() for lang in langs.split()}

# a letter of a real script: not Common (Zyyy) or Inherited (Zinh)
_SCRIPT_LETTER = regex.compile(r"(?V1)[\p{L}--\p{Zyyy}--\p{Zinh}]")
# A Han, kana or Hangul character carries about as much as three letters of an
# alphabet (BUCC zh-en: English sides are ~3x as long in characters; the length-ratio
# filter widens its bound by the same factor), so it weighs three in the shares: a
# Chinese sentence naming "Ballynagard Crescent" is still mostly Chinese.
WIDE_WEIGHT = 3
_WIDE = regex.compile(r"[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]")


@lru_cache(maxsize=None)
def _expected(scripts: tuple[str, ...]):
    return regex.compile("(?V1)[" + "".join(rf"\p{{Script={s}}}" for s in scripts)
                         + r"--\p{Zyyy}--\p{Zinh}]")


def expected_scripts(lang: str) -> Optional[tuple[str, ...]]:
    """The scripts of ``lang`` (a ``normalize_lang`` code), or None when unknown."""
    return LANG_SCRIPTS.get(lang)


def _weight(letters: list[str]) -> int:
    wide = sum(1 for ch in letters if _WIDE.match(ch))
    return len(letters) - wide + WIDE_WEIGHT * wide


def script_letters(text: str) -> int:
    """Weighted number of letters of ``text`` that belong to a script (not
    Common/Inherited); Han, kana and Hangul weigh ``WIDE_WEIGHT``."""
    return _weight(_SCRIPT_LETTER.findall(text))


def script_share(text: str, lang: str) -> Optional[float]:
    """Share of the (weighted) script letters of ``text`` written in the scripts of
    ``lang``.

    None when ``lang`` is not in the table or the text has no script letters (only
    digits, punctuation, symbols): there is nothing to decide then.
    """
    scripts = LANG_SCRIPTS.get(lang)
    if scripts is None:
        return None
    total = script_letters(text)
    if not total:
        return None
    return _weight(_expected(scripts).findall(text)) / total


def in_scripts_of(text: str, lang: str, min_share: float = 0.5) -> bool:
    """Whether ``text`` is mostly (``min_share`` of its letters) in the scripts of
    ``lang``; True when that cannot be decided (unknown language, no letters)."""
    share = script_share(text, lang)
    return share is None or share >= min_share
