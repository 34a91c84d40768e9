"""One typed configuration filled by TOML files and flags with the same names."""

import pytest

from miner.config import Config, parse_memory, parse_pair
from miner.errors import MinerError


def test_toml_sections_and_flat_names(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('out = "w"\npairs = ["de-en"]\ninputs = ["a.xml", "/abs/b.txt"]\n'
                 'min_chars = 5\n[knn]\nk = 8\n[score]\nthreshold = 1\n')
    cfg = Config.from_toml(f)
    assert cfg.knn.k == 8 and cfg.prepare.min_chars == 5
    assert cfg.score.threshold == 1.0 and isinstance(cfg.score.threshold, float)
    assert cfg.inputs == [str(tmp_path / "a.xml"), "/abs/b.txt"]
    assert cfg.parsed_pairs() == [("de", "en")]


def test_flags_override_file_and_none_keeps_value(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text("[knn]\nk = 8\n")
    cfg = Config.from_toml(f).update({"k": None, "margin": "distance", "max-chars": 300})
    assert cfg.knn.k == 8 and cfg.score.margin == "distance" and cfg.prepare.max_chars == 300


@pytest.mark.parametrize("text,msg", [
    ("[knn]\nkk = 1\n", "kk"), ("k = 'four'\n", "integer"), ("nope = 1\n", "nope"),
    ("[knn\n", "TOML"),
])
def test_bad_config_is_a_user_error(tmp_path, text, msg):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(MinerError, match=msg):
        Config.from_toml(f)


def test_stage_hash_changes_with_its_settings_only():
    a = Config()
    b = Config().update({"k": 8})
    assert a.stage_hash("embed") == b.stage_hash("embed")
    assert a.stage_hash("knn") != b.stage_hash("knn")


def test_parsers():
    assert parse_memory("8G") == 8 << 30 and parse_memory("512M") == 512 << 20
    assert parse_pair("fr-en") == ("fr", "en")
    for bad in ("de", "de-de", "de-en-fr"):
        with pytest.raises(MinerError):
            parse_pair(bad)
    with pytest.raises(MinerError):
        parse_memory("lots")
