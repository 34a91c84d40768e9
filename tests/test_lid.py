"""Language ID: code mapping, model labels, accuracy on real Tatoeba sentences."""

from pathlib import Path

import pytest

from miner.errors import MinerError
from miner.lid import LanguageIdentifier, normalize_lang, to_iso3

TATOEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tatoeba"


@pytest.fixture(scope="module")
def lid():
    return LanguageIdentifier()


def test_codes_map_to_one_scheme():
    for code in ("de", "deu", "ger", "__label__de", "__label__deu_Latn", "de-DE", "DE"):
        assert normalize_lang(code) == "de"
    assert normalize_lang("cmn") == normalize_lang("zho") == normalize_lang("__label__cmn_Hani") == "zh"
    assert normalize_lang("arb_Arab") == "ar"
    assert normalize_lang("gsw") == "gsw"  # no two-letter code: stays three letters
    assert to_iso3("de") == "deu"
    with pytest.raises(MinerError, match="bad language code"):
        normalize_lang("german")


def test_default_model_knows_176_languages(lid):
    assert len(lid.languages) == 176
    assert lid.knows("deu") and lid.knows("cmn") and not lid.knows("xx")
    lang, prob = lid.predict("Das ist ein schönes Haus am See.")
    assert lang == "de" and 0.5 < prob <= 1.0


def test_missing_model_is_an_error(tmp_path):
    with pytest.raises(MinerError, match="no such LID model"):
        LanguageIdentifier(tmp_path / "nope.bin")
    (tmp_path / "bad.bin").write_bytes(b"not a model")
    with pytest.raises(MinerError, match="not a fastText model"):
        LanguageIdentifier(tmp_path / "bad.bin")


@pytest.mark.parametrize("lang", ["deu", "fra", "rus", "cmn", "spa", "ara", "jpn"])
def test_accuracy_on_tatoeba_at_default_threshold(lid, lang):
    path = TATOEBA / f"tatoeba.{lang}-eng.{lang}"
    if not path.exists():
        pytest.skip(f"Tatoeba data not found at {path}")
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    want = normalize_lang(lang)
    kept = sum(1 for l in lines if (p := lid.predict(l))[0] == want and p[1] >= 0.5)
    accuracy = kept / len(lines)
    print(f"LID accuracy {lang}: {accuracy:.3f} ({len(lines)} sentences)")
    assert accuracy >= 0.9
