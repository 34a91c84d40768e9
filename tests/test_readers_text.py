"""Plain text, JSONL and Parquet readers, and format detection."""

import bz2
import json
import re

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
    assert [(d.text, d.doc_id, d.url, d.title, d.source) for d in docs] == [
        ("hello", "7", "http://x", None, "a.jsonl"), ("world", "8", None, None, "a.jsonl")]
    with pytest.raises(MinerError, match="no field 'text'"):
        list(open_reader(path))


def test_parquet_title_and_url_columns_are_provenance(tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "title": ["T", ""],
                             "url": ["https://x.org/a", None]}), path)
    docs = list(open_reader(path))
    assert [(d.title, d.url, d.doc_id, d.source) for d in docs] == [
        ("T", "https://x.org/a", "0", "b.parquet"), (None, None, "1", "b.parquet")]


# -- one sentence per line (--format sentences) -----------------------------------------

def sentences_cfg() -> Config:
    cfg = Config()
    cfg.prepare.format = "sentences"
    return cfg


@pytest.mark.parametrize("compress", [None, "gz", "zst", "bz2"])
def test_sentence_lines_are_documents_of_one_sentence(tmp_path, compress):
    import gzip

    import zstandard

    raw = "Dr. Müller kam um 8 Uhr. Er ging gleich wieder.\n\nZweite Zeile! Noch ein Satz.\n"
    pack = {None: lambda b: b, "gz": gzip.compress, "bz2": bz2.compress,
            "zst": zstandard.ZstdCompressor().compress}[compress]
    path = tmp_path / ("lines.txt" + (f".{compress}" if compress else ""))
    path.write_bytes(pack(raw.encode()))
    docs = list(open_reader(path, cfg=sentences_cfg()))
    assert [(d.text, d.doc_id, d.position, d.source) for d in docs] == [
        ("Dr. Müller kam um 8 Uhr. Er ging gleich wieder.", "1", 1, path.name),
        ("Zweite Zeile! Noch ein Satz.", "3", 3, path.name)]


def test_bucc_lines_give_their_ids(tmp_path):
    path = tmp_path / "de-en.sample.de"
    path.write_text("de-000000001\tErster Satz. Mit zwei Teilen.\n"
                    "de-000000002\tZweiter\tSatz mit Tab.\n", encoding="utf-8")
    docs = list(open_reader(path, cfg=sentences_cfg()))
    assert [(d.doc_id, d.text, d.position) for d in docs] == [
        ("de-000000001", "Erster Satz. Mit zwei Teilen.", 1),
        ("de-000000002", "Zweiter\tSatz mit Tab.", 2)]
    path.write_text("de-1\tErster Satz.\nkein Tab hier\n", encoding="utf-8")
    with pytest.raises(MinerError, match=r"de-en.sample.de:2: no tab"):
        list(open_reader(path, cfg=sentences_cfg()))


def test_pieces_of_a_sentence_file_read_as_the_whole_file(tmp_path):
    from miner.prepare import plan_parts

    path = tmp_path / "big.txt"
    path.write_text("".join(f"Satz Nummer {i}. Mit Punkt.\n" for i in range(1, 400)), encoding="utf-8")
    cfg = sentences_cfg()
    cfg.prepare.chunk_size = "1000"
    parts = plan_parts([str(path)], cfg)
    assert len(parts) > 5
    pieces = [(d.doc_id, d.position, d.text) for part in parts
              for d in open_reader(part.path, cfg=cfg, span=part.span)]
    assert pieces == [(d.doc_id, d.position, d.text) for d in open_reader(path, cfg=cfg)]
    assert [p for _, p, _ in pieces] == list(range(1, 400))


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


@pytest.mark.parametrize("fmt", ["auto", "text"])
@pytest.mark.parametrize("ext", ["gz", "bz2", "xz", "zst"])
def test_truncated_compressed_file_is_an_error_not_a_shorter_file(tmp_path, ext, fmt):
    import gzip
    import lzma

    import zstandard

    data = "".join(f"line number {i} of a compressed file\n" for i in range(5000)).encode()
    compress = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
                "zst": zstandard.ZstdCompressor().compress}[ext]
    blob = compress(data)
    path = tmp_path / f"cut.txt.{ext}"
    path.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(MinerError, match=rf"^{re.escape(str(path))}: truncated ") as err:
        list(open_reader(path, fmt))
    assert "\n" not in str(err.value)


def test_zst_of_several_frames_reads_whole(tmp_path):
    import zstandard

    path = tmp_path / "frames.txt.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"one\ntwo\n")
                     + zstandard.ZstdCompressor(write_checksum=True).compress(b"three\n"))
    assert [d.text for d in open_reader(path)] == ["one", "two", "three"]


def test_parquet_text_column_of_integers_is_an_error(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    with pytest.raises(MinerError, match=rf"^{re.escape(str(path))}: column 'text' holds int64, not text"):
        list(open_reader(path))
    dictionary = tmp_path / "dict.parquet"  # dictionary-encoded strings are text
    pq.write_table(pa.table({"text": pa.array(["a", "b"]).dictionary_encode()}), dictionary)
    assert [d.text for d in open_reader(dictionary)] == ["a", "b"]


@pytest.mark.parametrize("fmt, content, message", [
    ("wet", b'{"text": "a JSON line"}\n', "not a WARC/WET file"),
    ("warc", b"plain text\n", "not a WARC/WET file"),
    ("jsonl", bz2.compress(b"<mediawiki><page></page></mediawiki>\n"), "not valid JSON"),
    ("wiki", b'{"text": "a JSON line"}\n', "malformed XML"),
    ("parquet", b'{"text": "a JSON line"}\n', "not a readable Parquet file"),
])
def test_format_that_does_not_match_the_content_is_an_error(tmp_path, fmt, content, message):
    path = tmp_path / "input.data"
    path.write_bytes(content)
    with pytest.raises(MinerError, match=message) as err:
        list(open_reader(path, fmt))
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
