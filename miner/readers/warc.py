"""WARC files with warcio: Common Crawl WET ``conversion`` records (plain text) and
WARC ``response`` records holding HTML, whose main text trafilatura extracts.

Web pages are often mis-encoded; their bytes are decoded as UTF-8 with replacement
characters rather than failing the whole file. A corrupt archive is a MinerError.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterator

from miner.errors import MinerError
from miner.readers import DECOMPRESS_ERRORS, Document, open_raw
from miner.storage import as_path

MAX_RECORD_BYTES = 50 << 20  # larger records are skipped, not read into memory


def read_warc(path: str | Path, html: bool = True) -> Iterator[Document]:
    """Yield one Document per ``conversion`` record, and per HTML ``response`` record
    when ``html`` is true.

    ``doc_id`` is ``WARC-Record-ID``, ``url_or_title`` is ``WARC-Target-URI``; ``meta``
    holds ``date`` (``WARC-Date``), ``lang`` (``WARC-Identified-Content-Language``, when
    present) and ``refers_to`` (``WARC-Refers-To``).
    """
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    path = as_path(path)
    try:
        # warcio's own gzip reader prints and swallows an error in the middle of a
        # member, silently ending the file there; Python's gzip raises instead
        with open_raw(path) as raw:
            magic = raw.read(2)
        with open_raw(path) as raw, (gzip.open(raw, "rb") if magic == b"\x1f\x8b" else raw) as f:
            stream = _ErrorKeepingStream(f)
            for record in ArchiveIterator(stream):
                doc = _record_document(record, path, html)
                if doc is not None:
                    yield doc
            if stream.error is not None:  # warcio ended the iteration quietly
                raise stream.error
    except ArchiveLoadFailed as e:
        raise MinerError(f"{path}: not a valid WARC file ({str(e).splitlines()[0]})") from None
    except DECOMPRESS_ERRORS as e:
        raise MinerError(f"{path}: corrupt WARC archive ({e})") from None


class _ErrorKeepingStream:
    """A file wrapper that remembers a read error, which warcio may swallow."""

    def __init__(self, f):
        self._f = f
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._f.read(size)
        except DECOMPRESS_ERRORS as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _record_document(record, path: Path, html: bool):
    headers = record.rec_headers
    kind = record.rec_type
    if kind not in ("conversion", "response"):
        return None
    length = int(headers.get_header("Content-Length") or 0)
    if length > MAX_RECORD_BYTES:
        return None
    meta = {"date": headers.get_header("WARC-Date") or ""}
    lang = headers.get_header("WARC-Identified-Content-Language")
    if lang:
        meta["lang"] = lang
    refers = headers.get_header("WARC-Refers-To")
    if refers:
        meta["refers_to"] = refers
    url = headers.get_header("WARC-Target-URI") or ""
    rec_id = headers.get_header("WARC-Record-ID") or url
    if kind == "conversion":
        text = record.content_stream().read().decode("utf-8", errors="replace")
    else:
        if not html or record.http_headers is None:
            return None
        ctype = (record.http_headers.get_header("Content-Type") or "").lower()
        if "html" not in ctype:
            return None
        text = html_to_text(record.content_stream().read(), url)
    if not text or not text.strip():
        return None
    return Document(text=text, doc_id=rec_id, url_or_title=url, source=str(path), meta=meta)


def html_to_text(html: bytes, url: str = "") -> str:
    """Main text of an HTML page (trafilatura), paragraphs separated by newlines."""
    import trafilatura

    try:
        text = trafilatura.extract(html.decode("utf-8", errors="replace"), url=url or None,
                                   include_comments=False, include_tables=False,
                                   favor_precision=True)
    except Exception:  # trafilatura raises a zoo of parser errors on broken pages
        return ""
    return text or ""
