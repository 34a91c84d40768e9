"""Plain text, JSONL and Parquet readers, and format detection."""

import bz2
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from miner.config import Config
from miner.errors import MinerError
from miner.io import MAX_LINE_BYTES
from miner.readers import detect_format, open_reader


def test_text_is_a_document_per_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first doc\n\nsecond doc\n", encoding="utf-8")
    docs = list(open_reader(path))
    assert [(d.text, d.doc_id) for d in docs] == [("first doc", "1"), ("second doc", "3")]


def test_paragraphs_are_blank_line_separated(tmp_path):
    path = tmp_path / "a.txt.bz2"
    path.write_bytes(bz2.compress(b"one\ntwo\n\n\nthree\n"))
    cfg = Config()
    cfg.prepare.paragraphs = True
    docs = list(open_reader(path, cfg=cfg))
    assert [d.text for d in docs] == ["one\ntwo", "three"]


def test_jsonl_fields(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in [
        {"body": "hello", "key": 7, "url": "http://x"}, {"body": "world", "key": 8}]))
    cfg = Config()
    cfg.prepare.text_field, cfg.prepare.id_field = "body", "key"
    assert detect_format(path) == "jsonl"
    docs = list(open_reader(path, cfg=cfg))
    assert [(d.text, d.doc_id, d.url_or_title) for d in docs] == [("hello", "7", "http://x"), ("world", "8", "")]
    with pytest.raises(MinerError, match="no field 'text'"):
        list(open_reader(path))


def test_parquet_columns(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None], "doc": ["x", "y", "z"]}), path)
    cfg = Config()
    cfg.prepare.id_field = "doc"
    assert detect_format(path) == "parquet"
    assert [(d.text, d.doc_id) for d in open_reader(path, cfg=cfg)] == [("a", "x"), ("b", "y")]
    cfg.prepare.text_field = "nope"
    with pytest.raises(MinerError, match="no column 'nope'"):
        list(open_reader(path, cfg=cfg))


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"good line\nbad \xff\xfe line\n", "not valid UTF-8"),
    (b"x" * (MAX_LINE_BYTES + 10) + b"\n", "line longer than"),
])
def test_bad_text_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(MinerError, match=message) as err:
        list(open_reader(path))
    assert "bad.txt" in str(err.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(MinerError, match="no such file"):
        open_reader(tmp_path / "nope.txt")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(MinerError, match="unknown format"):
        open_reader(tmp_path / "a.txt", "docx")
