"""Readers: one streamed generator of ``Document`` per input file.

``open_reader(path, fmt, cfg)`` picks the reader from ``fmt`` (``cfg.prepare.format``
unless given) or, with ``"auto"``, from the file name and the first bytes after
decompression. Every reader streams: memory does not grow with the size of the input.

Formats: ``wiki`` (MediaWiki XML dumps and bare ``<page>`` fragments), ``wet``
(Common Crawl WET), ``warc`` (WARC with HTML ``response`` records), ``text``,
``sentences`` (one sentence per line, never split), ``jsonl``, ``parquet``. Compression (gzip, bzip2 incl. multistream, xz, zstd) is
detected from the magic bytes, whatever the file is called.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Optional

from miner.config import FORMATS  # noqa: F401 - re-exported, defined once there
from miner.errors import MinerError
from miner.storage import AnyPath, RemotePath, as_path


_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bz2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


@dataclass
class Document:
    """One document of an input: its text and where it came from.

    ``source``: the input's file name (or URL for a remote input, ``source_name``);
    ``title``, ``url``, ``revision`` (a Wikipedia revision id, a WARC record id): None
    where the input has none. ``position``: set when the document is one sentence that
    is not to be split (``--format sentences``: its 1-based line number).
    """

    text: str
    doc_id: str
    source: str
    title: Optional[str] = None
    url: Optional[str] = None
    revision: Optional[str] = None
    meta: dict[str, Any] = field(default_factory=dict)
    position: Optional[int] = None

    @property
    def url_or_title(self) -> str:
        """The URL, else the title (one string naming the document for messages)."""
        return self.url or self.title or ""


def source_name(path) -> str:
    """What the ``source`` column says about an input: its file name, or its URL when it
    is remote (``s3://bucket/dump.xml.bz2``); never a local directory path."""
    path = as_path(path)
    return str(path) if isinstance(path, RemotePath) else path.name


def check_file(path: str | Path) -> AnyPath:
    """The path, or a MinerError if it is missing, a directory or empty (a URL of a
    pyarrow filesystem such as ``s3://bucket/dump.xml.bz2`` works too)."""
    path = as_path(path)
    if not path.exists():
        raise MinerError(f"{path}: no such file")
    if path.is_dir():
        raise MinerError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise MinerError(f"{path}: file is empty")
    return path


def compression_of(path: str | Path) -> Optional[str]:
    """``"gzip"``, ``"bz2"``, ``"xz"``, ``"zstd"`` from the magic bytes, or None."""
    with open_raw(path) as f:
        head = f.read(8)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def open_raw(path: str | Path) -> IO[bytes]:
    """The file's bytes as stored (local file or URL), unbuffered by us."""
    path = as_path(path)
    if isinstance(path, RemotePath):
        return io.BufferedReader(path.open("rb"), 1 << 20)
    return open(path, "rb")


def open_binary(path: str | Path, parallel: bool = True) -> IO[bytes]:
    """Open a file for reading, decompressing it as its magic bytes say.

    bzip2 multistream files (Wikipedia's ``pages-articles-multistream``) read as one
    stream. A local bzip2 file is decompressed by ``indexed_bzip2`` on the usable
    cores when it is installed (``parallel_bz2_available``; ``parallel=False``: the
    standard library's ``bz2`` on this thread, for a short look at the first bytes).
    """
    kind = compression_of(path)
    local = isinstance(as_path(path), Path)
    if local:
        source = path  # the openers below open (and close) a local file themselves
    else:
        source = open_raw(path)  # a remote file: closed when garbage-collected
    if kind == "gzip":
        return gzip.open(source, "rb")
    if kind == "bz2":
        if parallel and local and parallel_bz2_available():
            return io.BufferedReader(_ParallelBz2Reader(path), 1 << 20)
        return bz2.open(source, "rb")
    if kind == "xz":
        return lzma.open(source, "rb")
    if kind == "zstd":
        return io.BufferedReader(_ZstdReader(open_raw(path)), 1 << 20)
    return open_raw(path)


TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"


class _ZstdReader(io.RawIOBase):
    """The zstd frames of a file, end to end, decompressed.

    ``zstandard``'s ``stream_reader`` reads a file that ends inside a frame as a
    shorter file; this one raises ``EOFError`` there, as gzip, bz2 and lzma do.
    """

    def __init__(self, raw: IO[bytes]):
        import zstandard

        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None  # the decompressor of the frame being read
        self._buf = b""
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            if self._done:
                return 0
            self._fill()
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def _fill(self) -> None:
        data = b""
        if self._frame is not None and self._frame.eof:  # a frame ended: the next one
            data = self._frame.unused_data
            self._frame = None
        data = data or self._raw.read(1 << 16)
        self._buf, self._pos = b"", 0
        if not data:
            if self._frame is not None:  # the file ends inside a frame
                raise EOFError(TRUNCATED)
            self._done = True
            return
        if self._frame is None:
            self._frame = self._dctx.decompressobj()
        self._buf = self._frame.decompress(data)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


# bzip2's end-of-stream marker (the 48 bits of sqrt(pi)); a 32-bit CRC and 0-7 bits of
# padding follow it at the end of every stream
_BZ2_EOS = 0x177245385090


def parallel_bz2_available() -> bool:
    """Whether bzip2 files are decompressed in parallel: ``indexed_bzip2`` is installed
    and not switched off (``MINER_BZ2=builtin``: the standard library's ``bz2``, e.g.
    to compare the two, ``benchmarks/prepare.py``)."""
    if os.environ.get("MINER_BZ2", "").lower() == "builtin":
        return False
    try:
        import indexed_bzip2  # noqa: F401
    except ImportError:
        return False
    return True


def ends_with_bz2_eos(path) -> bool:
    """Whether the file's last bytes are a bzip2 end-of-stream marker (with its CRC and
    padding): false for a file cut anywhere before its end, or with bytes after it."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 11))
        tail = f.read()
    if len(tail) < 10:
        return False
    bits = int.from_bytes(tail, "big")
    return any((bits >> (32 + pad)) & ((1 << 48) - 1) == _BZ2_EOS for pad in range(8))


class _ParallelBz2Reader(io.RawIOBase):
    """A local bzip2 file decompressed by ``indexed_bzip2`` on the usable cores: a
    single-stream dump too (the standard library's ``bz2`` uses one core and holds this
    thread; here the blocks decode on other threads while the XML is parsed).

    Errors are those of ``bz2``, for ``decompress_error`` to word: indexed_bzip2 says
    ``std::exception`` on a file cut short, and reads a file cut right after its
    header as empty. So a failed read whose file does not end with an end-of-stream
    marker is ``EOFError`` (truncated), any other failure ``OSError`` with its message;
    an end of data where the file does not end with the marker (cut, or bytes after
    the last stream, which ``bz2`` ignores) is checked by ``bz2`` reading the file
    once more, whose error, if any, is raised.
    """

    def __init__(self, path):
        self._path = str(path)
        self._file = None  # opened at the first read, as bz2.open reads nothing before
        self._end_checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            if self._file is None:
                import indexed_bzip2

                from miner.executor import cores_per_worker

                self._file = indexed_bzip2.open(self._path, parallelization=cores_per_worker())
            n = self._file.readinto(b)
        except (RuntimeError, ValueError, OSError) as e:
            if not ends_with_bz2_eos(self._path):
                raise EOFError(TRUNCATED) from None
            message = str(e).strip()
            raise OSError("invalid bzip2 data" if message in ("", "std::exception")
                          else message) from None
        if n == 0 and len(b) and not self._end_checked:
            self._end_checked = True
            if not ends_with_bz2_eos(self._path):
                with bz2.open(self._path, "rb") as f:  # raises what bz2 finds wrong
                    while f.read(1 << 20):
                        pass
        return n

    def close(self) -> None:
        if not self.closed and self._file is not None:
            try:
                self._file.close()
            except (RuntimeError, OSError):  # pragma: no cover - nothing left to read
                pass
        super().close()


# errors a broken compressed stream raises while reading
DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError,
                                                      gzip.BadGzipFile, zlib.error, ValueError)
try:  # pragma: no cover - zstandard is optional at import time
    import zstandard as _zstd

    DECOMPRESS_ERRORS = DECOMPRESS_ERRORS + (_zstd.ZstdError,)
except ImportError:  # pragma: no cover
    pass


def decompress_error(path, e: BaseException, what: str = "") -> MinerError:
    """The one-line MinerError for an error raised while decompressing ``path``: a
    stream that ends early is a truncated file, never a clean end."""
    kind = compression_of(path) or "file"
    if isinstance(e, EOFError):
        return MinerError(f"{path}: truncated {kind}{what} (the compressed stream ends "
                          "before its end-of-stream marker)")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return MinerError(f"{path}: corrupt or unreadable {kind}{what} ({first})")


def sniff(path: str | Path, n: int = 4096) -> bytes:
    """The first ``n`` decompressed bytes of a file; MinerError if it cannot be read."""
    try:
        with open_binary(path, parallel=False) as f:
            return f.read(n)
    except DECOMPRESS_ERRORS as e:
        raise decompress_error(path, e) from None


def detect_format(path: str | Path) -> str:
    """Choose a reader from the file name and the first decompressed bytes."""
    path = as_path(path)
    name = path.name.lower()
    with open_raw(path) as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    if name.endswith(".parquet"):
        return "parquet"
    head = sniff(path)
    if not head:
        raise MinerError(f"{path}: file is empty after decompression")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"WARC/"):
        return "wet" if b"WARC-Type: conversion" in head or ".wet" in name else "warc"
    if text.startswith((b"<mediawiki", b"<page", b"<?xml")) or ".xml" in name:
        return "wiki"
    if ".jsonl" in name or ".ndjson" in name or text.startswith(b"{"):
        return "jsonl"
    return "text"


def open_reader(path: str | Path, fmt: Optional[str] = None, cfg=None,
                span: Optional[tuple[int, int, int]] = None) -> Iterator[Document]:
    """A generator of Documents from ``path``.

    ``fmt`` is one of FORMATS or ``"auto"`` (default: ``cfg.prepare.format``);
    ``cfg`` is a ``miner.config.Config`` (default settings if None); ``span`` names a
    piece of the file (``miner.prepare.plan_parts``: text/JSONL byte ranges, Parquet
    row groups, multistream bzip2 dumps by stream).
    """
    from miner.config import Config

    cfg = cfg or Config()
    path = check_file(path)
    fmt = (fmt or cfg.prepare.format or "auto").lower()
    if fmt == "auto":
        fmt = detect_format(path)
    if span is not None and fmt not in ("text", "sentences", "jsonl", "parquet", "wiki"):
        raise ValueError(f"{fmt} files are read whole, not in pieces")
    if fmt == "wiki":
        from miner.readers.wiki import read_wiki

        return read_wiki(path, span=span)
    if fmt in ("wet", "warc"):
        from miner.readers.warc import read_warc

        return read_warc(path, html=(fmt == "warc"))
    if fmt == "text":
        from miner.readers.text import read_text

        return read_text(path, paragraphs=cfg.prepare.paragraphs, span=span)
    if fmt == "sentences":
        from miner.readers.text import read_sentence_lines

        return read_sentence_lines(path, span=span)
    if fmt == "jsonl":
        from miner.readers.text import read_jsonl

        return read_jsonl(path, cfg.prepare.text_field, cfg.prepare.id_field, span=span)
    if fmt == "parquet":
        from miner.readers.text import read_parquet

        return read_parquet(path, cfg.prepare.text_field, cfg.prepare.id_field, span=span)
    raise MinerError(f"unknown format {fmt!r}: expected auto or one of {', '.join(FORMATS)}")
