"""Fragment rules and sentence rejoining in miner.sentences (issue 16)."""

from miner.sentences import is_fragment, length_reason, split_sentences


def test_fragments_are_dropped_as_too_short():
    for text in ["', where the", ", ঢাকার রাস্তাগুলো বাঁধানো ছিলো।", ") son organitzacions independents.",
                 "1) Cognitive function", "Moreover, they were meant to be invitations.\".",
                 "76.875 (2004)", "39 (1), pp 105-111 (1938)", "= 'masculine', fem.",
                 "「彼女、どこ行くの？", "Το «τζε» συμβόλιζε ένα «σπαθί«."]:
        assert is_fragment(text), text
        assert length_reason(text, 5, 500) == "too_short", text
    for text in ["Albedo is the diffuse reflectivity of a surface.", "パリ（白浜温泉）は町である。",
                 ".NET is a framework.", "'Twas the night before Christmas.",
                 "He said \"Hello\" (twice) [sic] and «left»."]:
        assert not is_fragment(text), text
        assert length_reason(text, 5, 500) is None, text


def test_quotes_in_cjk_and_non_latin_initials_do_not_end_sentences():
    ja = "「ぼく、何歳？」「彼女、どこ行くの？」のように転用する。次の文です。"
    assert list(split_sentences(ja, "ja")) == ["「ぼく、何歳？」「彼女、どこ行くの？」のように転用する。", "次の文です。"]
    assert list(split_sentences("Поэт А. С. Пушкин родился в Москве. Он писал стихи.", "uk")) == [
        "Поэт А. С. Пушкин родился в Москве. ", "Он писал стихи."]
    assert list(split_sentences("पु.ल. देशपांडे यांचा जन्म झाला. त्यांनी इ.स. १९४४ साली लिहिले.", "mr")) == [
        "पु.ल. देशपांडे यांचा जन्म झाला. ", "त्यांनी इ.स. १९४४ साली लिहिले."]
    assert list(split_sentences("У 1990 р. відбулося. Він спав.", "uk")) == ["У 1990 р. відбулося. ", "Він спав."]
