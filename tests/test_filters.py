"""Each filter on hand-built pairs, and the pipeline's order, counts and state."""

import numpy as np
import pandas as pd
import pytest

from miner.config import Config
from miner.errors import MinerError
from miner.filters import (REASONS, Copy, DocPairCap, FilterPipeline, Junk, LengthRatio,
                           LidAgreement, NumberMismatch, OneToOne, PairDedup, Threshold,
                           compare_key, default_threshold, is_junk, length_bounds, numbers,
                           numbers_agree)


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
    assert agree("um 27 ºC", "around 80s")  # units: short numbers only explain
    assert agree("drei Leute", "3 people")  # spelled out on one side
    assert agree("Im Jahr १९९९", "In 1999")  # Devanagari digits
    assert not agree("Im Jahr १९९९", "In 1998")
    assert not agree("um 27 ºC", "around 80s", strict=True)


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
        ("Berlin Berlin", "berlin, berlin", 1.6),  # copy
        ("Ja.", "Yes, that is absolutely and certainly correct.", 1.6),  # length
        ("Er wurde 1950 geboren.", "He was born in 1960.", 1.6),  # numbers
        ("Bonjour tout le monde", "Hello everyone", 1.6),  # LID
        ("Das Auto ist rot.", "The house is big.", 1.4),  # target used: not one-to-one
    ], tgt_lid_prob=0.9)
    df["tgt_id"] = [1, 1, 2, 3, 4, 5, 6, 7, 1]
    df["src_id"] = [11, 11, 12, 13, 14, 15, 16, 17, 18]
    pipe = FilterPipeline.from_config(cfg, "de", "en", identifier=lid)
    assert [s.name for s in pipe.steps] == list(REASONS)
    kept, counts = pipe.filter(df)
    assert kept["src_text"].tolist() == ["Das Haus ist groß."]
    assert counts["dropped"] == {"below_threshold": 1, "junk": 1, "copy": 1, "length_ratio": 1,
                                 "number_mismatch": 1, "lid_mismatch": 1, "duplicate_pair": 1,
                                 "not_one_to_one": 1, "doc_pair_cap": 0}
    assert counts["candidates"] == 9 and counts["kept"] == 1
    assert pipe.counts == counts


def test_pipeline_switches_and_batches_give_the_same_result_as_one_batch():
    cfg = Config()
    cfg.filters.lid_agreement = False
    cfg.filters.number_mismatch = False
    cfg.filters.length_ratio = False
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
