"""prepare's document prior for short lines (``short_lid_chars``, ``short_lid_threshold``)."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from miner.config import Config
from miner.errors import MinerError
from miner.lid import cached_identifier
from miner.prepare import document_prior, prepare

# a Japanese article with short English lines: LID gives "Live at the BBC." en 0.87,
# "The album was released." en 0.996; "中華人民共和国国務院" zh 0.72, ja 0.28
JA_DOC = ("ビートルズは1962年にレコードデビューしたイギリスのロックバンドである。"
          "Live at the BBC. "
          "彼らはリバプール出身の四人組で、世界中で大きな成功を収めた。"
          "中華人民共和国国務院。"
          "The album was released. "
          "その後、バンドは1970年に解散し、メンバーはそれぞれソロ活動を始めた。")


def texts(out: Path, lang: str) -> list[str]:
    folder = out / "sentences" / lang
    if not folder.is_dir():
        return []
    return [t for p in sorted(folder.glob("part-*.parquet"))
            for t in pq.read_table(p).column("text").to_pylist()]


def run(tmp_path, **settings) -> tuple[dict, Path]:
    src = tmp_path / "ja.txt"
    src.write_text(JA_DOC + "\n", encoding="utf-8")
    cfg = Config()
    cfg.prepare.workers = 1
    for k, v in settings.items():
        setattr(cfg.prepare, k, v)
    cfg.validate()
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    return prepare(cfg, [str(src)], ["ja", "en"], out), out


def test_short_english_line_in_a_japanese_document_is_not_moved_unless_lid_is_very_sure(tmp_path):
    lid = cached_identifier()
    assert 0.5 < lid.predict("Live at the BBC.")[1] < 0.95  # the premise
    counts, out = run(tmp_path)
    # very sure (en 0.996): moved to English; not very sure: not moved, and not
    # Japanese either (no Japanese script), so dropped
    assert texts(out, "en") == ["The album was released."]
    ja = texts(out, "ja")
    assert "Live at the BBC." not in ja
    # a short all-kanji line LID calls Chinese stays in its Japanese document
    assert "中華人民共和国国務院。" in ja
    assert counts["ja"]["wrong_language"] == 1


def test_without_the_prior_short_lines_follow_lid(tmp_path):
    _, out = run(tmp_path, short_lid_chars=0)
    assert texts(out, "en") == ["Live at the BBC.", "The album was released."]
    assert "中華人民共和国国務院。" not in texts(out, "ja")
    # a higher bar moves nothing short
    _, out = run(tmp_path, short_lid_threshold=1.0)
    assert texts(out, "en") == []


def test_document_prior_keeps_lines_in_the_documents_scripts():
    lid = cached_identifier()
    lang, prob = document_prior("中華人民共和国国務院", "ja", lid)
    assert lang == "ja" and 0 < prob < 0.5
    assert document_prior("Cambridge, UK.", "ru", lid) == (None, 0.0)


@pytest.mark.parametrize("setting, value", [("short_lid_chars", -1), ("short_lid_threshold", 1.5)])
def test_short_lid_settings_are_validated(setting, value):
    cfg = Config()
    setattr(cfg.prepare, setting, value)
    with pytest.raises(MinerError, match=setting):
        cfg.validate()
