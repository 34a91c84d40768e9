"""WARC readers: a WET file in Common Crawl's layout, and HTML response records."""

from io import BytesIO

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from miner.errors import MinerError
from miner.readers import detect_format, open_reader

PAGES = [
    ("https://example.de/wetter", "deu", "Heute regnet es in Berlin. Morgen scheint die Sonne."),
    ("https://example.fr/meteo", "fra,eng", "Il pleut à Paris aujourd'hui.\nDemain il fera beau."),
    ("https://example.com/nolang", None, "A page whose language Common Crawl did not identify."),
]


def write_wet(path):
    """A WET file as Common Crawl writes it: warcinfo, then one conversion record per page."""
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        info = writer.create_warcinfo_record(path.name, {
            "Software-Info": "ia-web-commons.1.1.10-SNAPSHOT",
            "Extracted-Date": "Mon, 01 Jan 2024 00:00:00 GMT",
            "robots": "checked via crawler-commons",
            "isPartOf": "CC-MAIN-2024-01",
            "operator": "Common Crawl Admin (info@commoncrawl.org)",
            "description": "Wide crawl of the web",
            "publisher": "Common Crawl",
        })
        writer.write_record(info)
        for i, (url, lang, text) in enumerate(PAGES):
            headers = {
                "WARC-Target-URI": url,
                "WARC-Date": f"2024-01-0{i + 1}T10:00:00Z",
                "WARC-Refers-To": f"<urn:uuid:00000000-0000-0000-0000-00000000000{i}>",
                "WARC-Block-Digest": "sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "Content-Type": "text/plain",
            }
            if lang:
                headers["WARC-Identified-Content-Language"] = lang
            record = writer.create_warc_record(url, "conversion", payload=BytesIO(text.encode()),
                                               warc_headers_dict=headers)
            writer.write_record(record)


def test_wet_in_common_crawl_layout_reads_back(tmp_path):
    path = tmp_path / "CC-MAIN-test.warc.wet.gz"
    write_wet(path)
    assert detect_format(path) == "wet"
    docs = list(open_reader(path))
    assert [d.url for d in docs] == [u for u, _, _ in PAGES]
    assert all(d.revision == d.doc_id and d.title is None and d.source == path.name for d in docs)
    assert [d.text for d in docs] == [t for _, _, t in PAGES]
    assert [d.meta.get("lang") for d in docs] == [l for _, l, _ in PAGES]
    assert docs[0].meta["date"] == "2024-01-01T10:00:00Z"
    assert docs[1].meta["refers_to"].startswith("<urn:uuid:")
    assert all(d.doc_id.startswith("<urn:uuid:") for d in docs)


def test_warc_html_responses_are_extracted(tmp_path):
    path = tmp_path / "crawl.warc.gz"
    body = ("<html><head><title>T</title></head><body><nav>Home | About</nav><article>"
            "<h1>Weather report</h1><p>It is raining heavily in London today, and the wind "
            "is strong along the river.</p><p>Tomorrow the sun will shine again over the "
            "whole of the south of England.</p></article><footer>(c) 2024</footer>"
            "</body></html>").encode()
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")],
                                protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("https://example.org/a", "response",
                                                      payload=BytesIO(body), http_headers=http))
        img = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("https://example.org/b.png", "response",
                                                      payload=BytesIO(b"\x89PNG"), http_headers=img))
    assert detect_format(path) == "warc"
    docs = list(open_reader(path))
    assert len(docs) == 1 and docs[0].url == "https://example.org/a"
    assert docs[0].revision.startswith("<urn:uuid:")
    assert "raining heavily in London" in docs[0].text
    assert "Home | About" not in docs[0].text


def test_corrupt_warc_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.warc.wet.gz"
    write_wet(path)
    data = path.read_bytes()
    path.write_bytes(data[:200] + b"\x00" * 100 + data[300:])
    with pytest.raises(MinerError, match="bad.warc.wet.gz"):
        list(open_reader(path, "wet"))


def write_plain_wet(path):
    """The WET of PAGES uncompressed, with the offset of each record's Content-Length."""
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=False)
        for url, _, text in PAGES:
            writer.write_record(writer.create_warc_record(
                url, "conversion", payload=BytesIO(text.encode()),
                warc_headers_dict={"Content-Type": "text/plain"}))
    return path.read_bytes()


def _set_length(data: bytes, record: int, delta: int) -> bytes:
    """``data`` with the Content-Length of record number ``record`` changed by ``delta``."""
    at = -1
    for _ in range(record + 1):
        at = data.index(b"Content-Length: ", at + 1)
    end = data.index(b"\r\n", at)
    return data[:at + 16] + str(int(data[at + 16:end]) + delta).encode() + data[end:]


def _record_error(path, data, fmt="wet"):
    path.write_bytes(data)
    with pytest.raises(MinerError) as err:
        list(open_reader(path, fmt))
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("fmt", ["auto", "wet"])
def test_truncated_plain_wet_names_the_file_and_the_record(tmp_path, fmt):
    data = write_plain_wet(tmp_path / "whole.warc.wet")
    message = _record_error(tmp_path / "cut.warc.wet", data[:-30], fmt)
    assert "https://example.com/nolang" in message and "<urn:uuid:" in message
    assert "the file ends" in message


def test_truncated_gzipped_wet_is_an_error(tmp_path):
    write_wet(tmp_path / "whole.warc.wet.gz")
    data = (tmp_path / "whole.warc.wet.gz").read_bytes()
    message = _record_error(tmp_path / "cut.warc.wet.gz", data[:len(data) - 40])
    assert "truncated gzip WARC archive" in message


def test_content_length_overrun_names_the_record_and_credits_no_text(tmp_path):
    data = write_plain_wet(tmp_path / "whole.warc.wet")
    # into the next record: its text must not be read as the first page's
    message = _record_error(tmp_path / "over.warc.wet", _set_length(data, 0, 120))
    assert "https://example.de/wetter" in message and "does not end at the end of the record" in message
    # past the end of the file
    message = _record_error(tmp_path / "past.warc.wet", _set_length(data, 0, 100000))
    assert "https://example.de/wetter" in message and "the file ends" in message
    # too short: the rest of the text is not a record
    message = _record_error(tmp_path / "short.warc.wet", _set_length(data, 1, -5))
    assert "https://example.fr/meteo" in message


def test_wet_format_on_a_warc_of_responses_is_an_error(tmp_path):
    path = tmp_path / "responses.warc"
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=False)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(
            "https://example.org/a", "response", payload=BytesIO(b"<p>Hi</p>"), http_headers=http))
    assert "use --format warc" in _record_error(path, path.read_bytes(), "wet")


def test_wet_format_on_jsonl_is_an_error(tmp_path):
    path = tmp_path / "docs.jsonl"
    message = _record_error(path, b'{"text": "one document"}\n{"text": "two"}\n', "wet")
    assert "not a WARC/WET file" in message


@pytest.mark.parametrize("ext", ["bz2", "xz", "zst"])
def test_wet_in_other_compressions_reads_back(tmp_path, ext):
    import bz2
    import lzma

    import zstandard

    data = write_plain_wet(tmp_path / "whole.warc.wet")
    compress = {"bz2": bz2.compress, "xz": lzma.compress,
                "zst": zstandard.ZstdCompressor().compress}[ext]
    path = tmp_path / f"crawl.warc.wet.{ext}"
    path.write_bytes(compress(data))
    assert [d.text for d in open_reader(path)] == [t for _, _, t in PAGES]
