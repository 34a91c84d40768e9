"""Tatoeba-style evaluation: similarity search error rate (LASER ``xsim``).

For each sentence of one side, is its nearest neighbour on the other side its
translation? ``tatoeba.{xxx}-eng.{xxx}`` and ``tatoeba.{xxx}-eng.eng`` are line
aligned. A neighbour whose text equals the gold translation's text counts as right
(the English side repeats some sentences), as LASER's text-based xsim does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miner.errors import MinerError
from miner.io import read_lines
from miner.knn import knn_search

# Tatoeba codes of the languages USE-multilingual v3 was trained on (English aside).
MUSE_LANGS = ("ara", "cmn", "deu", "fra", "ita", "jpn", "kor", "nld", "pol", "por",
              "rus", "spa", "tha", "tur")


def xsim_error(x: np.ndarray, y: np.ndarray, x_texts: list[str], y_texts: list[str],
               backend: str = "auto") -> tuple[float, float]:
    """Error rates (x->y, y->x) of nearest-neighbour retrieval between aligned rows.

    x, y: (n, d) L2-normalised embeddings where row i of x translates row i of y.
    """
    n = len(x)
    _, fwd = knn_search(x, y, 1, backend=backend)
    _, bwd = knn_search(y, x, 1, backend=backend)
    y_arr = np.asarray(y_texts, dtype=object)
    x_arr = np.asarray(x_texts, dtype=object)
    idx = np.arange(n)
    fwd_ok = (fwd[:, 0] == idx) | (y_arr[fwd[:, 0]] == y_arr)
    bwd_ok = (bwd[:, 0] == idx) | (x_arr[bwd[:, 0]] == x_arr)
    return float(1 - fwd_ok.mean()), float(1 - bwd_ok.mean())


@dataclass
class TatoebaResult:
    lang: str
    n: int
    err_xx_en: float
    err_en_xx: float

    @property
    def err(self) -> float:
        return (self.err_xx_en + self.err_en_xx) / 2


def _language(code: str) -> str | None:
    """The canonical code of a Tatoeba code, None when it is not an ISO 639 code."""
    from miner.langs import normalise_lang

    try:
        return normalise_lang(code)
    except MinerError:
        return None


def tatoeba_code(directory: Path, lang: str) -> str:
    """The Tatoeba file code of ``lang`` in any form: itself when its files exist, else
    the code of the files in ``directory`` of the same language (``de``, ``deu_Latn``
    -> ``deu``; ``zh`` -> ``cmn``)."""
    if (directory / f"tatoeba.{lang}-eng.{lang}").exists():
        return lang
    want = _language(lang)
    for path in sorted(directory.glob("tatoeba.*-eng.eng")):
        code = path.name.split(".")[1].split("-")[0]
        if want is not None and _language(code) == want:
            return code
    return lang  # the caller names the missing file


def evaluate_tatoeba(directory: str | Path, langs: list[str], encoder,
                     backend: str = "auto") -> list[TatoebaResult]:
    """Error rates in both directions for each language against English."""
    from miner.langs import warn_uncovered

    directory = Path(directory)
    if not directory.is_dir():
        raise MinerError(f"{directory}: no such directory")
    langs = [tatoeba_code(directory, lang) for lang in langs]
    warn_uncovered(encoder.name, getattr(encoder, "model_name", None),
                   [lang for lang in langs if _language(lang)])
    results = []
    for lang in langs:
        xx_path = directory / f"tatoeba.{lang}-eng.{lang}"
        en_path = directory / f"tatoeba.{lang}-eng.eng"
        if not xx_path.exists():
            raise MinerError(f"{xx_path}: no such file (no Tatoeba test set for {lang!r})")
        xx = [s.strip() for s in read_lines(xx_path)]
        en = [s.strip() for s in read_lines(en_path)]
        if len(xx) != len(en):
            raise MinerError(f"{xx_path}: {len(xx)} lines but {en_path.name} has {len(en)}")
        e_xx, e_en = xsim_error(encoder.encode(xx), encoder.encode(en), xx, en, backend)
        results.append(TatoebaResult(lang, len(xx), e_xx, e_en))
    return results
