"""Sentence splitting, normalisation, length rules and the sentence hash."""

import numpy as np
import xxhash

from miner.sentences import (length_reason, normalize_punctuation, normalize_text,
                             sentence_hash, sentence_hashes, split_sentences)


def test_split_per_language_including_cjk_and_thai():
    assert list(split_sentences("Dr. Smith came. He left!\nNew line.", "en")) == [
        "Dr. Smith came. ", "He left!", "New line."]
    assert list(split_sentences("これはペンです。あれは本です。", "ja")) == ["これはペンです。", "あれは本です。"]
    assert list(split_sentences("我很好！谢谢。", "zh")) == ["我很好！", "谢谢。"]
    assert list(split_sentences("วันนี้อากาศดี พรุ่งนี้ฝนตก", "th")) == ["วันนี้อากาศดี", "พรุ่งนี้ฝนตก"]


def test_normalize_nfc_controls_zero_width_whitespace():
    decomposed = "Cafe\u0301"
    assert normalize_text(f"  {decomposed}\u200b\tau\x07  lait\ufeff \n") == "Café au lait"
    assert normalize_text("می\u200cخواهم") == "می\u200cخواهم"  # ZWNJ kept: Persian needs it


def test_moses_punctuation_is_optional():
    text = "«Bonjour» — dit-il… “ok”"
    assert normalize_text(text) == text
    assert normalize_punctuation(text) == '"Bonjour" - dit-il... "ok"'
    assert normalize_text(text, punctuation=True) == '"Bonjour" - dit-il... "ok"'


def test_length_rules():
    assert length_reason("short", 10, 500) == "too_short"
    assert length_reason("x" * 501, 10, 500) == "too_long"
    assert length_reason("just right", 10, 500) is None


def test_sentence_hash_is_xxh64_of_utf8():
    assert sentence_hash("Grüße") == xxhash.xxh64_intdigest("Grüße".encode("utf-8"))
    assert 0 <= sentence_hash("a") < 2**64
    hashes = sentence_hashes(["a", "b", "a"])
    assert hashes.dtype == np.uint64 and hashes[0] == hashes[2] != hashes[1]
