"""Corrupt inputs: a truncated or damaged file is one MinerError line, never a shorter read.

For each compressed or archive format the readers take (gzip, bzip2, xz, zstd, WET
plain and gzipped), a real file built from examples/ is cut at a few hundred random
places and has single bytes flipped (seeded), and each damaged copy is read through
``open_reader``, as ``mine prepare`` reads it. Each read must either raise a one-line
MinerError naming the file or yield exactly the documents of the undamaged file.

What cannot be told apart, and is allowed:
- a WET cut exactly between two records (plain: in the blank lines after a record;
  gzipped: at a gzip member boundary) is a valid, shorter WET: WARC has no record
  count. The read must then give exactly the documents of the records before the cut.
- a plain WET has no checksum that warcio checks (the readers do not verify
  WARC-Block-Digest), so a flipped byte in its stored text is valid text: plain WET is
  cut only, never flipped; its gzipped form is flipped too (gzip's CRC).
- zstd detects a flipped byte only with a frame checksum (``zstd`` writes one by
  default; ``zstandard``'s default does not): the zstd file is written with one.

A real Wikipedia dump (../shared/data/wikipedia, skipped when absent) is damaged the
same way. The excerpts cut in the middle of their XML (``*-truncated-100k.xml.xz``)
keep their tolerance: the XML ends early inside a whole xz stream, which yields every
complete page and one warning (tests/test_readers_wiki.py); cutting the xz stream
itself is an error (slow: the excerpts are 10-19 MB of XML).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
from io import BytesIO
from pathlib import Path

import pytest
import zstandard
from warcio.warcwriter import WARCWriter

from conftest import EXAMPLES, shared_data
from miner.errors import MinerError
from miner.readers import open_reader

SEED = 14
CUTS = 200  # truncations per format
FLIPS = 200  # single-byte flips per compressed format


def _text_bytes() -> bytes:
    return b"".join((EXAMPLES / f"corpus.{lang}.txt").read_bytes() for lang in ("en", "de", "fr"))


COMPRESSORS = {
    "gz": lambda b: gzip.compress(b, mtime=0),
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
}


def _read(path: Path, fmt: str = "auto"):
    """The documents of ``path`` as comparable tuples, or the MinerError, checked for
    being one line that names the file."""
    try:
        docs = [(d.text, d.doc_id, d.url_or_title) for d in open_reader(path, fmt)]
    except MinerError as e:
        message = str(e)
        assert "\n" not in message, message
        assert message.startswith(str(path)), message
        return e
    return docs


def _damaged(data: bytes, rng: random.Random, cuts: int, flips: int):
    """(label, damaged bytes): ``cuts`` truncations, then ``flips`` single-byte flips."""
    for _ in range(cuts):
        n = rng.randrange(0, len(data))
        yield f"cut at {n}", data[:n]
    for _ in range(flips):
        i = rng.randrange(len(data))
        bit = 1 << rng.randrange(8)
        yield f"flip bit {bit:#x} of byte {i}", data[:i] + bytes([data[i] ^ bit]) + data[i + 1:]


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_damaged_compressed_text_fails_or_reads_whole(tmp_path, ext):
    plain = tmp_path / "corpus.txt"
    plain.write_bytes(_text_bytes())
    expected = _read(plain)
    assert isinstance(expected, list) and len(expected) > 100
    data = COMPRESSORS[ext](plain.read_bytes())
    whole = tmp_path / f"whole.txt.{ext}"
    whole.write_bytes(data)
    assert _read(whole) == expected
    rng = random.Random(f"{SEED}-{ext}")
    failed = 0
    for i, (label, blob) in enumerate(_damaged(data, rng, CUTS, FLIPS)):
        path = tmp_path / f"damaged-{i}.txt.{ext}"
        path.write_bytes(blob)
        got = _read(path, "text")  # as --format text: no detection to stop at an empty head
        if isinstance(got, MinerError):
            failed += 1
        else:
            assert got == expected, f"{ext} {label}: {len(got)} documents, not the {len(expected)} of the file"
        path.unlink()
    assert failed >= CUTS  # every cut of a one-stream file is an error


# -- WET ------------------------------------------------------------------------------

def _pages() -> list[tuple[str, str]]:
    pages = []
    for lang in ("en", "de", "fr"):
        for line in (EXAMPLES / "articles" / f"{lang}.jsonl").read_text("utf-8").splitlines():
            obj = json.loads(line)
            pages.append((f"https://example.org/{lang}/{obj['id']}", obj["text"]))
    return pages


def _wet(gzipped: bool) -> tuple[bytes, list[int]]:
    """A WET file in Common Crawl's layout (warcinfo, then a conversion record per
    page) and the offset where each record ends (its blank lines included)."""
    out = BytesIO()
    writer = WARCWriter(out, gzip=gzipped)
    ends = []
    writer.write_record(writer.create_warcinfo_record("test.warc.wet", {"isPartOf": "CC-TEST"}))
    ends.append(out.tell())
    for i, (url, text) in enumerate(_pages()):
        writer.write_record(writer.create_warc_record(
            url, "conversion", payload=BytesIO(text.encode()),
            warc_headers_dict={"Content-Type": "text/plain",
                               "WARC-Date": f"2024-01-{1 + i % 28:02d}T00:00:00Z"}))
        ends.append(out.tell())
    return out.getvalue(), ends


def _prefix_docs(expected: list, ends: list[int], n: int, gzipped: bool):
    """The documents a WET cut at ``n`` may validly give: those of the records before
    the cut when it falls between two records (plain: in the CRLF CRLF after a
    record; gzipped: on a member boundary), else None (the cut must be an error)."""
    for k, end in enumerate(ends):
        if end == n or (not gzipped and end - 4 <= n <= end):
            return expected[:k]  # record 0 is the warcinfo: k conversion records
    return None


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
def test_damaged_wet_fails_or_reads_whole(tmp_path, gzipped):
    data, ends = _wet(gzipped)
    name = "crawl.warc.wet" + (".gz" if gzipped else "")
    whole = tmp_path / name
    whole.write_bytes(data)
    expected = _read(whole)
    assert isinstance(expected, list) and len(expected) == len(_pages()) == len(ends) - 1
    rng = random.Random(f"{SEED}-wet-{gzipped}")
    outcomes = {"error": 0, "whole": 0, "between records": 0}
    for i, (label, blob) in enumerate(_damaged(data, rng, CUTS + 100, FLIPS if gzipped else 0)):
        path = tmp_path / f"damaged-{i}-{name}"
        path.write_bytes(blob)
        got = _read(path, "wet")
        if isinstance(got, MinerError):
            outcomes["error"] += 1
        elif got == expected:
            outcomes["whole"] += 1
        else:
            allowed = _prefix_docs(expected, ends, len(blob), gzipped) if label.startswith("cut") else None
            assert allowed is not None and got == allowed, (
                f"{name} {label}: {len(got)} documents, not the {len(expected)} of the file")
            outcomes["between records"] += 1
        path.unlink()
    assert outcomes["error"] > CUTS, outcomes


def test_wet_cut_between_records_reads_the_records_before(tmp_path):
    """The one cut no reader can tell: exactly on a record boundary."""
    data, ends = _wet(gzipped=True)
    path = tmp_path / "cut.warc.wet.gz"
    path.write_bytes(data[:ends[3]])
    assert [d[2] for d in _read(path)] == [u for u, _ in _pages()[:3]]


# -- real Wikipedia dumps -------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["bz2", "zst"])
def test_damaged_wikipedia_dump_fails_or_reads_whole(tmp_path, ext):
    source = shared_data("wikipedia", "enwiki-table-markup.xml.bz2")
    xml = bz2.decompress(source.read_bytes())
    data = source.read_bytes() if ext == "bz2" else COMPRESSORS[ext](xml)
    whole = tmp_path / f"enwiki.xml.{ext}"
    whole.write_bytes(data)
    expected = _read(whole)
    assert isinstance(expected, list) and expected
    rng = random.Random(f"{SEED}-wiki-{ext}")
    for i, (label, blob) in enumerate(_damaged(data, rng, 100, 100)):
        path = tmp_path / f"damaged-{i}.xml.{ext}"
        path.write_bytes(blob)
        got = _read(path, "wiki")
        assert isinstance(got, MinerError) or got == expected, f"{ext} {label}: {len(got)} articles"
        path.unlink()


@pytest.mark.slow
def test_cut_xz_stream_of_a_truncated_excerpt_is_an_error(tmp_path):
    wiki = shared_data("wikipedia")
    source = sorted(wiki.glob("*wiki-truncated-100k.xml.xz"))[0]
    data = source.read_bytes()
    rng = random.Random(f"{SEED}-excerpt")
    for n in sorted(rng.randrange(len(data) // 10, len(data)) for _ in range(3)):
        path = tmp_path / f"cut-{n}.xml.xz"
        path.write_bytes(data[:n])
        got = _read(path, "wiki")
        assert isinstance(got, MinerError) and "truncated xz" in str(got), f"cut at {n}"
