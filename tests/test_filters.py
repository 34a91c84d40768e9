"""Each filter on hand-built pairs, and the pipeline's order, counts and state."""

import numpy as np
import pandas as pd
import pytest

from miner.config import Config
from miner.errors import MinerError
from miner.filters import (REASONS, Boilerplate, Copy, DocPairCap, FilterPipeline, Junk,
                           LengthRatio, LidAgreement, NumberMismatch, OneToOne, PairDedup,
                           ScriptMismatch, Threshold, boilerplate_reason, compare_key,
                           default_threshold, is_junk, length_bounds, numbers, numbers_agree)
from miner.scripts import LANG_SCRIPTS, script_share


def pairs(rows, **cols):
    """A scores-layout frame from (src, tgt) or (src, tgt, score) tuples."""
    rows = [r if len(r) == 3 else (*r, 1.5) for r in rows]
    n = len(rows)
    df = pd.DataFrame({
        "src_text": [r[0] for r in rows], "tgt_text": [r[1] for r in rows],
        "score": [float(r[2]) for r in rows],
        "src_id": np.arange(n, dtype=np.uint64), "tgt_id": np.arange(100, 100 + n, dtype=np.uint64),
        "src_doc_id": ["d"] * n, "tgt_doc_id": ["e"] * n,
    })
    for k, v in cols.items():
        df[k] = v
    return df


class FakeLid:
    """predict_top by a lookup table; LID is unsure of any other text."""

    def __init__(self, table):
        self.table = table

    def predict_top(self, text, k=5):
        return self.table.get(text, [("und", 0.1)])[:k]

    def predict(self, text):
        return self.predict_top(text, 1)[0]


# --- threshold ---------------------------------------------------------------------

def test_threshold_keeps_scores_at_or_above_and_drops_nan():
    df = pairs([("a", "b", 1.4), ("a", "b", 1.3), ("a", "b", 1.2), ("a", "b", float("nan"))])
    assert Threshold(1.3).keep(df).tolist() == [True, True, False, False]


def test_default_threshold_per_encoder_and_margin():
    cfg = Config()
    assert default_threshold(cfg) == 1.30  # muse + ratio
    cfg.score.margin = "distance"
    assert default_threshold(cfg) is None
    cfg.score.threshold = 0.1
    assert default_threshold(cfg) == 0.1


# --- length ratio ------------------------------------------------------------------

def test_length_ratio_default_bounds():
    lo, hi = length_bounds("de", "en")
    assert (lo, hi) == (0.5, 2.0)
    df = pairs([("a" * 10, "b" * 10), ("a" * 10, "b" * 21), ("a" * 21, "b" * 10),
                ("a" * 10, "b" * 20), ("", "b")])
    assert LengthRatio(lo, hi).keep(df).tolist() == [True, False, False, True, False]


def test_length_ratio_is_wider_for_chinese_japanese_thai():
    zh_en = pairs([("伊拉克研究小组今天提交了报告。",
                    "The Iraq Study Group handed in its report today at noon GMT.")])
    r = len(zh_en.src_text[0]) / len(zh_en.tgt_text[0])
    assert r < 0.5  # would fail the default bounds
    assert LengthRatio(*length_bounds("zh", "en")).keep(zh_en).tolist() == [True]
    assert not LengthRatio(*length_bounds("de", "en")).keep(zh_en)[0]
    # the other direction widens the upper bound
    en_zh = pairs([(zh_en.tgt_text[0], zh_en.src_text[0])])
    assert LengthRatio(*length_bounds("en", "zh")).keep(en_zh).tolist() == [True]
    assert length_bounds("en", "ja")[1] > 2.0 and length_bounds("th", "en")[0] < 0.5
    assert length_bounds("zh", "ja") == (0.5, 2.0)  # both compact: default
    assert length_bounds("zh-Hans", "en") == length_bounds("zh", "en")


def test_length_ratio_explicit_bounds_win_and_are_checked():
    assert length_bounds("zh", "en", 0.3, 3.0) == (0.3, 3.0)
    with pytest.raises(MinerError):
        length_bounds("de", "en", 2.0, 1.0)


# --- LID agreement -----------------------------------------------------------------

def test_lid_agreement_drops_pairs_with_a_side_in_another_language():
    lid = FakeLid({"Guten Tag": [("de", 0.9)], "Bonjour": [("fr", 0.95)],
                   "Hi": [("de", 0.3), ("en", 0.2)], "Heute": [("de", 0.9)]})
    df = pairs([("Guten Tag", "Good day"), ("Bonjour", "Good day"), ("Guten Tag", "Heute"),
                ("Guten Tag", "Hi")])
    keep = LidAgreement("de", "en", lid, min_prob=0.5, min_expected=1.0).keep(df)
    # wrong source; wrong target; unsure LID on a short line is no evidence
    assert keep.tolist() == [True, False, False, True]


def test_lid_agreement_forgives_confusions_that_keep_some_probability():
    lid = FakeLid({"随后她被扣留在德克萨斯州。": [("ja", 0.52), ("zh", 0.45), ("wuu", 0.01)],
                   "Das Wetter ist schön.": [("de", 0.99), ("en", 0.0004)]})
    df = pairs([("随后她被扣留在德克萨斯州。", "She was detained in Texas.")])
    assert LidAgreement("zh", "en", lid, min_expected=1.0).keep(df).tolist() == [False]
    assert LidAgreement("zh", "en", lid).keep(df).tolist() == [True]
    df = pairs([("Das Wetter ist schön.", "Das Wetter ist schön.")])
    assert LidAgreement("de", "en", lid).keep(df).tolist() == [False]


def test_lid_agreement_with_the_real_fasttext_model():
    df = pairs([("Das ist ein ganz normaler deutscher Satz über das Wetter.",
                 "This is a perfectly normal English sentence about the weather."),
                ("Das ist ein ganz normaler deutscher Satz über das Wetter.",
                 "Das Wetter ist heute in ganz Deutschland sonnig und warm.")])
    assert LidAgreement("de", "en").keep(df).tolist() == [True, False]


# --- copies, numbers, junk ---------------------------------------------------------

def test_copy_drops_sides_equal_after_normalisation():
    df = pairs([("Hello, World!", "hello world"), ("ＡＢＣ　１２３", "abc 123"),
                ("Hallo Welt", "Hello world")])
    assert Copy().keep(df).tolist() == [False, False, True]
    assert compare_key("Straße!") == compare_key("STRASSE")


def test_numbers_normalise_other_scripts_and_separators():
    assert numbers("٣ and ۴ and ३ and ３ and ๓") == {"3": 4, "4": 1}
    assert numbers("2,000 vs 2.000 vs 2 000 vs 2000") == {"2000": 4}
    assert numbers("at 02:30") == numbers("at 2 h 30")
    assert numbers("no digits here") == {}


def test_number_mismatch_strict_compares_multisets():
    df = pairs([("Im Jahr ٢٠١٩ kamen 3 Leute", "In 2019, 3 people came"),
                ("Im Jahr 2019 kamen 3 Leute", "In 2018, 3 people came"),
                ("3 und 3", "3"),
                ("drei Leute", "3 people")])
    assert NumberMismatch(strict=True).keep(df).tolist() == [True, False, False, False]


def test_number_mismatch_default_is_lenient_about_honest_differences():
    agree = numbers_agree
    assert agree("geboren 1950", "born in 1950")
    assert not agree("geboren 1950", "born in 1960")
    assert not agree("Einwohner: 1.234 (2010)", "population 5,678 (2010)")
    assert agree("in den 70er Jahren", "in the 1970s")  # contained
    assert agree("浏览量高达7.7万次", "77,000 views")  # Chinese 万 scaling
    assert agree("從20世紀60年代起", "Since the 1960s")
    assert agree("um 27 ºC", "around 80s")  # units: short numbers never disagree
    assert agree("drei Leute", "3 people")  # spelled out on one side
    assert agree("Im Jahr १९९९", "In 1999")  # Devanagari digits
    assert not agree("Im Jahr १९९९", "In 1998")
    assert not agree("um 27 ºC", "around 80s", strict=True)


def test_numbers_are_compared_whole_not_as_digit_substrings():
    agree = numbers_agree
    # a one-digit number no longer explains a longer one that contains its digit
    assert not agree("1ドル＝1260新ディナールであった。",
                     "The rate was 1.79 florins to 1 USD.")
    assert not agree("Oktober 2005 bis 2011 war er Bürgermeister.",
                     "In May 1963 he became mayor.")
    # a number missing on one side is forgiven, equal ones pair off
    assert agree("Er wurde 1950 geboren.", "He was born in 1950 and died in 1995.")
    assert agree("Von 1990 bis 1995.", "From 1990 to 95.")  # 95: short
    # the same digits at another scale (a scale word beside them)
    assert agree("人口は1200万人である。", "The population is 12,000,000.")
    assert agree("1,5 Millionen Einwohner", "1,500,000 inhabitants")
    assert agree("in den 50ern des 18. Jahrhunderts", "in the 1850s")
    # digits of other scripts: Arabic-Indic, full-width
    assert agree("عام ٢٠١٩", "in 2019") and not agree("عام ٢٠١٩", "in 2018")
    assert agree("２０１９年に", "in 2019") and not agree("２０１９年に", "in 2018")


def test_number_mismatch_drops_the_issue_examples():
    df = pairs([("東ドイツマルクは1260新ディナールに相当した。",
                 "The exchange rate was 1.79 florins to 1 USD."),
                ("Von Oktober 2005 bis 2011 leitete er das Institut.",
                 "In May 1963 he took over the institute."),
                ("Von Oktober 2005 bis 2011 leitete er das Institut.",
                 "From October 2005 to 2011 he led the institute.")])
    assert NumberMismatch().keep(df).tolist() == [False, False, True]


# --- scripts -----------------------------------------------------------------------

def test_script_table_and_share():
    assert LANG_SCRIPTS["ja"] == ("Han", "Hiragana", "Katakana")
    assert LANG_SCRIPTS["zh"] == ("Han",) and LANG_SCRIPTS["ru"] == ("Cyrillic",)
    assert LANG_SCRIPTS["en"] == ("Latin",) and LANG_SCRIPTS["de"] == ("Latin",)
    assert script_share("Cambridge, UK.", "ja") == 0.0
    assert script_share("東京大学に入学した。", "ja") == 1.0
    assert script_share("ラーメン", "ja") == 1.0  # ー (Common) is not counted
    assert script_share("1962, 12:30 !", "ja") is None  # nothing to decide
    assert script_share("Hello", "xyz") is None  # unknown language
    assert script_share("Привет, world", "ru") == 6 / 11


def test_script_mismatch_drops_a_side_in_another_script():
    df = pairs([("Cambridge, UK.", "Cambridge, UK."),
                ("ケンブリッジ大学（イギリス）。", "University of Cambridge (UK)."),
                # names in Latin letters inside a Chinese/Japanese sentence are fine
                ("根据官方的工商记录，他是 Adriftmorn Limited 的经理。",
                 "According to official records, he is the director of Adriftmorn Limited."),
                ("ビートルズはLiverpoolで結成された。", "The Beatles were formed in Liverpool."),
                ("1962年", "1962"),
                ("東京タワー", "Токийская башня")])
    keep = ScriptMismatch("ja", "en").keep(df).tolist()
    assert keep == [False, True, True, True, True, False]
    ru = pairs([("Это предложение по-русски.", "This is a Russian sentence."),
                ("This is not Russian at all.", "This is a Russian sentence.")])
    assert ScriptMismatch("ru", "en").keep(ru).tolist() == [True, False]
    # a language without a script entry (Meadow Mari; "xx" is no language code now)
    assert ScriptMismatch("mhr", "en").keep(pairs([("東京", "Tokyo")])).tolist() == [True]


# --- boilerplate --------------------------------------------------------------------

def test_boilerplate_rules():
    reason = boilerplate_reason
    assert reason("See http://example.com/a/very/long/path/page.html and www.example.org") == "urls"
    assert reason("| 1990 | 23.5 | 45.1 | 12 |") == "few_letters"
    assert reason("12 34 56 78 9a 10 11 12") == "few_letters"
    assert reason("Home Home Home Home") == "repetition"
    assert reason("click here click here click here click here") == "repetition"
    assert reason("Wow!!!!!! This is great") == "repetition"
    assert reason("Die Stadt liegt am Rhein {{Coord|50|N}} und ist alt.") == "markup"
    assert reason("The city is on the Rhine &nbsp; and is old.") == "markup"
    assert reason("The city is on the <b>Rhine</b> river.") == "markup"
    assert reason("thumb|200px|The city hall in the old town") == "markup"
    assert reason("Home » News » Sport » Football results") == "menu"
    assert reason(", where the") == "fragment"
    assert reason("）と呼ばれる。") == "fragment"
    assert reason("（ラブコミュニティ）") == "fragment"
    assert reason("(See also the picture theory of language.)") == "fragment"
    # ordinary sentences, with a number, a URL or a repeated word or two
    for ok in ["Er wurde 1950 in Berlin geboren.", "The population was 12,345 in 2010.",
               "Details are on https://example.com for those interested in the topic.",
               "It is very, very good.", "Bora Bora is an island.", "x < y and y > z holds.",
               "東京は日本の首都である。", "New York, New York is a song.",
               "Il n’est pas « satisfait » et a proposé « autre chose ».",
               "警察局长钱德拉·谢卡尔·索兰基说。", "NOOOOOOO, he said.",
               "(Reuters) Shares rose on Monday.", "「彼女、どこ行くの？」と聞いた。",
               "¿Dónde está?", "...and then it rained."]:
        assert reason(ok) is None, ok


def test_boilerplate_drops_pairs_with_a_noisy_side():
    df = pairs([("Home » News » Sport", "Startseite » Nachrichten » Sport"),
                ("Das Haus ist groß.", "The house is big. {{citation needed}}"),
                ("Das Haus ist groß.", "The house is big.")])
    assert Boilerplate().keep(df).tolist() == [False, False, True]


def test_junk_drops_url_email_punctuation_and_number_lines():
    assert is_junk("https://example.com/page?id=3")
    assert is_junk("mail@example.org")
    assert is_junk("--- !!! ---")
    assert is_junk("12.05.2019 | 14:00")
    assert is_junk("www.example.com, 2019")
    assert not is_junk("Siehe https://example.com für mehr.")
    assert not is_junk("东京")
    df = pairs([("https://a.de", "https://a.de/en"), ("Hallo", "..."), ("Hallo", "Hello")])
    assert Junk().keep(df).tolist() == [False, False, True]


# --- stateful: dedup, one-to-one, doc cap -------------------------------------------

def test_pair_dedup_keeps_the_first_best_pair_and_ignores_case_and_punctuation():
    df = pairs([("Hallo Welt.", "Hello world."), ("hallo welt", "Hello, world!"),
                ("Hallo Welt", "Hi world")])
    assert PairDedup().keep(df).tolist() == [True, False, True]


def test_one_to_one_uses_each_sentence_once_across_batches():
    step = OneToOne()
    a = pairs([("a", "x"), ("b", "y")])
    a["src_id"], a["tgt_id"] = [1, 2], [10, 20]
    b = pairs([("a", "z"), ("c", "y"), ("c", "z")])
    b["src_id"], b["tgt_id"] = [1, 3, 3], [30, 20, 30]
    assert step.keep(a).tolist() == [True, True]
    assert step.keep(b).tolist() == [False, False, True]


def test_doc_pair_cap_keeps_the_best_n_per_document_pair():
    df = pairs([("a", "b")] * 4, src_doc_id=["d1", "d1", "d2", "d1"],
               tgt_doc_id=["e1", "e1", "e1", "e1"])
    assert DocPairCap(2).keep(df).tolist() == [True, True, True, False]
    with pytest.raises(MinerError):
        DocPairCap(0)


# --- pipeline ----------------------------------------------------------------------

def test_pipeline_runs_in_fixed_order_and_counts_every_reason():
    cfg = Config()
    cfg.filters.one_to_one = True
    cfg.filters.max_pairs_per_doc = 100
    lid = FakeLid({"Bonjour tout le monde": [("fr", 0.99)]})
    df = pairs([
        ("Das Haus ist groß.", "The house is big.", 1.5),
        ("Das Haus ist groß.", "The house is big.", 1.45),  # duplicate pair
        ("Das Haus ist alt.", "The house is old.", 1.1),  # below threshold
        ("http://x.de", "http://x.com", 1.6),  # junk
        ("Start » Sport » Fußball", "Home » Sport » Football", 1.6),  # boilerplate
        ("Berlin Berlin", "berlin, berlin", 1.6),  # copy
        ("Ja.", "Yes, that is absolutely and certainly correct.", 1.6),  # length
        ("Москва, Россия.", "Moscow, Russia.", 1.6),  # script
        ("Er wurde 1950 geboren.", "He was born in 1960.", 1.6),  # numbers
        ("Bonjour tout le monde", "Hello everyone", 1.6),  # LID
        ("Das Auto ist rot.", "The house is big.", 1.4),  # target used: not one-to-one
    ], tgt_lid_prob=0.9)
    df["tgt_id"] = [1, 1, 2, 3, 31, 4, 5, 51, 6, 7, 1]
    df["src_id"] = [11, 11, 12, 13, 131, 14, 15, 151, 16, 17, 18]
    pipe = FilterPipeline.from_config(cfg, "de", "en", identifier=lid)
    assert [s.name for s in pipe.steps] == list(REASONS)
    kept, counts = pipe.filter(df)
    assert kept["src_text"].tolist() == ["Das Haus ist groß."]
    assert counts["dropped"] == {"below_threshold": 1, "junk": 1, "boilerplate": 1, "copy": 1,
                                 "length_ratio": 1, "script_mismatch": 1, "number_mismatch": 1,
                                 "lid_mismatch": 1, "duplicate_pair": 1, "not_one_to_one": 1,
                                 "doc_pair_cap": 0}
    assert counts["candidates"] == 11 and counts["kept"] == 1
    assert pipe.counts == counts


def test_pipeline_switches_and_batches_give_the_same_result_as_one_batch():
    cfg = Config()
    cfg.filters.lid_agreement = False
    cfg.filters.number_mismatch = False
    cfg.filters.length_ratio = False
    cfg.filters.drop_boilerplate = False
    cfg.filters.script_agreement = False
    cfg.score.threshold = 1.0
    pipe = FilterPipeline.from_config(cfg, "de", "en")
    assert [s.name for s in pipe.steps] == ["below_threshold", "junk", "copy", "duplicate_pair"]
    rows = [(f"Satz {i % 7}", f"Sentence {i % 5}", 2.0 - i / 100) for i in range(40)]
    whole, _ = FilterPipeline.from_config(cfg, "de", "en").filter(pairs(rows))
    df = pairs(rows)
    parts = [pipe.filter(df.iloc[i:i + 7])[0] for i in range(0, 40, 7)]
    assert pd.concat(parts)["src_text"].tolist() == whole["src_text"].tolist()
    assert pipe.counts["kept"] == len(whole)
    # order preserved (best first)
    assert whole["score"].is_monotonic_decreasing


def test_new_filters_are_on_by_default_and_each_has_a_setting_to_turn_it_off(tmp_path):
    names = [s.name for s in FilterPipeline.from_config(Config(), "ja", "en", identifier=FakeLid({})).steps]
    assert "boilerplate" in names and "script_mismatch" in names
    toml = tmp_path / "c.toml"
    toml.write_text("[filters]\ndrop_boilerplate = false\nscript_agreement = false\n"
                    "script_min_share = 0.3\n", encoding="utf-8")
    cfg = Config.from_toml(toml)
    assert cfg.filters.script_min_share == 0.3
    names = [s.name for s in FilterPipeline.from_config(cfg, "ja", "en", identifier=FakeLid({})).steps]
    assert "boilerplate" not in names and "script_mismatch" not in names


@pytest.mark.parametrize("setting", ["script_min_share", "boilerplate_min_letter_share",
                                     "boilerplate_max_url_share"])
def test_new_filter_shares_are_validated(setting):
    cfg = Config()
    setattr(cfg.filters, setting, 1.5)
    with pytest.raises(MinerError, match=setting):
        cfg.validate()


def test_bitext_flags_switch_the_new_filters_off():
    from click.testing import CliRunner

    from miner.cli import main

    result = CliRunner().invoke(main, ["bitext", "--help"])
    assert "--keep-boilerplate" in result.output and "--no-script-agreement" in result.output
    result = CliRunner().invoke(main, ["prepare", "--help"])
    assert "--short-lid-chars" in result.output and "--short-lid-threshold" in result.output
