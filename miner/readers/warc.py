"""WARC files with warcio: Common Crawl WET ``conversion`` records (plain text) and
WARC ``response`` records holding HTML, whose main text trafilatura extracts.

Web pages are often mis-encoded; their bytes are decoded as UTF-8 with replacement
characters rather than failing the whole file. A corrupt archive is a MinerError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from miner.errors import MinerError
from miner.readers import DECOMPRESS_ERRORS, Document, decompress_error, open_binary, source_name
from miner.storage import as_path

MAX_RECORD_BYTES = 50 << 20  # larger records are skipped, not read into memory


def read_warc(path: str | Path, html: bool = True) -> Iterator[Document]:
    """Yield one Document per ``conversion`` record, and per HTML ``response`` record
    when ``html`` is true.

    ``doc_id`` and ``revision`` are ``WARC-Record-ID`` (this capture of the page),
    ``url`` is ``WARC-Target-URI``, ``source`` the file name (``source_name``); ``meta``
    holds ``date`` (``WARC-Date``), ``lang`` (``WARC-Identified-Content-Language``, when
    present) and ``refers_to`` (``WARC-Refers-To``).

    Every record must hold exactly its ``Content-Length`` bytes followed by the blank
    lines that end it: a record cut by the end of the file (a truncated archive, or a
    Content-Length that overruns the bytes present) or one whose Content-Length runs
    into the next record is a MinerError naming the file and the record. A document is
    yielded only once the record after it has started where it should, so no record is
    credited with the bytes of another. A record cut exactly between two records is a
    shorter valid archive: WARC has no record count to tell.
    """
    path = as_path(path)
    try:
        # warcio's own gzip reader prints and swallows an error in the middle of a
        # member, silently ending the file there; Python's decompressors raise instead
        with open_binary(path) as f:
            head = f.read(64)
        if not head.lstrip(b"\r\n").startswith(b"WARC/"):
            raise MinerError(f"{path}: not a WARC/WET file (it starts with {head[:16]!r}, "
                             "not 'WARC/'); check --format")
        with open_binary(path) as f:
            stream = _ErrorKeepingStream(f)
            pending = None
            kinds = {"conversion": 0, "response": 0}
            for record in _StrictArchiveIterator(stream):
                # warcio has read the record before this one to its end: it was whole
                if pending is not None:
                    yield pending
                if record.rec_type in kinds:
                    kinds[record.rec_type] += 1
                pending = _record_document(record, path, html)
            if stream.error is not None:  # warcio ended the iteration quietly
                raise stream.error
            if pending is not None:
                yield pending
            if not html and not kinds["conversion"] and kinds["response"]:
                raise MinerError(f"{path}: a WARC of {kinds['response']} response records and "
                                 "no WET conversion records: use --format warc")
    except _BadRecord as e:
        raise MinerError(f"{path}: record {e.name}: {e.problem}") from None
    except ArchiveLoadFailed as e:
        raise MinerError(f"{path}: not a valid WARC file ({_first_line(e)})") from None
    except DECOMPRESS_ERRORS as e:
        raise decompress_error(path, e, " WARC archive") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class _BadRecord(Exception):
    """A record whose bytes do not match its Content-Length."""

    def __init__(self, record, problem: str):
        headers = record.rec_headers
        rec_id = headers.get_header("WARC-Record-ID")
        uri = headers.get_header("WARC-Target-URI")
        self.name = " ".join(x for x in (rec_id, f"({uri})" if uri and rec_id else uri) if x) or "?"
        self.problem = problem
        super().__init__(f"{self.name}: {problem}")


class _StrictArchiveIterator(ArchiveIterator):
    """warcio's iterator, checking each WARC record against its Content-Length: a
    record the file ends inside, or one not followed by a blank line (its
    Content-Length is wrong), raises ``_BadRecord`` rather than a warning on stderr and
    a record that takes the bytes of the next ones."""

    def __init__(self, fileobj):
        super().__init__(fileobj)
        self.known_format = "warc"  # no ARC records in the middle of a WARC

    def _next_record(self, next_line):
        record = super()._next_record(next_line)
        length = (record.rec_headers.get_header("Content-Length") or "").strip()
        if not length.isdigit():
            raise _BadRecord(record, f"no valid Content-Length ({length or 'missing'})")
        return record

    def read_to_end(self, record=None):
        current = None if self.member_info else self.record
        super().read_to_end(record)
        left = getattr(getattr(current, "raw_stream", None), "limit", 0)
        if current is not None and left > 0:
            length = current.rec_headers.get_header("Content-Length")
            raise _BadRecord(current, f"the file ends {left} bytes before the end of the "
                             f"record (Content-Length {length}): truncated file or wrong "
                             "Content-Length")

    def _consume_blanklines(self):
        # a record ends with two blank lines (CRLF CRLF); a Content-Length that is
        # too short leaves text here, one 2 or 3 bytes too long eats a blank line
        empty_size = 0
        blank = 0
        while True:
            line = self.reader.readline()
            if not line:
                return None, empty_size
            if line.strip():
                if blank < 2 and self.record is not None:
                    length = self.record.rec_headers.get_header("Content-Length")
                    raise _BadRecord(self.record, f"Content-Length {length} does not end at "
                                     f"the end of the record (then {line[:40]!r})")
                return line, empty_size
            empty_size += len(line)
            blank += 1


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
    url = headers.get_header("WARC-Target-URI") or None
    rec_id = headers.get_header("WARC-Record-ID") or None
    if kind == "conversion":
        text = record.content_stream().read().decode("utf-8", errors="replace")
    else:
        if not html or record.http_headers is None:
            return None
        ctype = (record.http_headers.get_header("Content-Type") or "").lower()
        if "html" not in ctype:
            return None
        text = html_to_text(record.content_stream().read(), url or "")
    if not text or not text.strip():
        return None
    return Document(text=text, doc_id=rec_id or url or "", source=source_name(path), url=url,
                    revision=rec_id, meta=meta)


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
