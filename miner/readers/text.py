"""Plain text, sentence-per-line, JSONL and Parquet readers.

Plain text is a document per line, or with ``paragraphs`` a document per block of
non-blank lines. Sentence-per-line files (``--format sentences``) are a sentence per
line, never split: LASER/Tatoeba files, or BUCC's ``ID<TAB>sentence``. Text files must
be valid UTF-8 and have no line over ``miner.io.MAX_LINE_BYTES``; both are MinerErrors
naming the file and line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, Optional

from miner.errors import MinerError
from miner.io import MAX_LINE_BYTES, MAX_LINE_CHARS
from miner.readers import (DECOMPRESS_ERRORS, Document, decompress_error, open_binary, open_raw,
                           sniff, source_name)
from miner.storage import as_path, parquet_file


Span = tuple[int, int, int]  # (start byte, stop byte, number of the first line) of a piece


def _lines(path, span: Optional[Span] = None) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline), checked for UTF-8 and length.

    With ``span`` only the lines that start in bytes [start, stop) of an uncompressed
    file, numbered from its third element: the pieces of a file read in turn give
    exactly the lines of the whole file.
    """
    start, stop, first = span or (0, None, 1)
    try:
        with (open_binary(path) if span is None else open_raw(path)) as f:
            if start:
                f.seek(start - 1)
                if f.read(1) != b"\n":  # the line at ``start`` began before it
                    while True:
                        piece = f.readline(MAX_LINE_BYTES)
                        if not piece or piece.endswith(b"\n"):
                            break
            lineno = first - 1
            while stop is None or f.tell() < stop:
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                lineno += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise MinerError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES} bytes")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise MinerError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
                yield lineno, line.rstrip("\r\n")
    except DECOMPRESS_ERRORS as e:
        raise decompress_error(path, e) from None


def count_line_starts(path, start: int, stop: int) -> int:
    """How many lines of an uncompressed file start in bytes [start, stop)."""
    with open_raw(path) as f:
        size = f.seek(0, 2)
        n = 1 if start == 0 and size > 0 else 0
        # a line starts after every newline at q with start <= q + 1 < min(stop, size)
        lo, hi = max(start - 1, 0), min(stop, size) - 1
        f.seek(lo)
        while lo < hi:
            block = f.read(min(8 << 20, hi - lo))
            if not block:
                break
            n += block.count(b"\n")
            lo += len(block)
    return n


def read_text(path: str | Path, paragraphs: bool = False,
              span: Optional[Span] = None) -> Iterator[Document]:
    """Documents of a plain-text file (or of the piece ``span``: lines only); ``doc_id``
    is the first line number."""
    path = as_path(path)
    source = source_name(path)
    if span is not None and paragraphs:
        raise ValueError("paragraph documents cannot be read by byte range")
    if not paragraphs:
        for lineno, line in _lines(path, span):
            if line.strip():
                yield Document(line, str(lineno), source)
        return
    block: list[str] = []
    start = 0
    size = 0
    for lineno, line in _lines(path):
        if line.strip():
            if not block:
                start = lineno
            block.append(line)
            size += len(line)
            if size > MAX_LINE_CHARS * 8:  # len() of decoded lines: characters
                raise MinerError(f"{path}:{start}: paragraph longer than {MAX_LINE_CHARS * 8} characters")
        elif block:
            yield Document("\n".join(block), str(start), source)
            block, size = [], 0
    if block:
        yield Document("\n".join(block), str(start), source)


# BUCC's "de-000000001<TAB>sentence": an id without spaces, a tab, the sentence
_ID_LINE = re.compile(r"^[^\s]{1,200}\t\S")


def read_sentence_lines(path: str | Path, span: Optional[Span] = None) -> Iterator[Document]:
    """One single-sentence Document per non-blank line (or per line of the piece
    ``span``): ``position`` and, by default, ``doc_id`` are the 1-based line number.

    A file whose first line is ``ID<TAB>sentence`` (BUCC) is read that way throughout:
    ``doc_id`` is the ID, the text what follows the first tab; a line without a tab
    is then a MinerError naming it.
    """
    path = as_path(path)
    source = source_name(path)
    try:
        head = sniff(path, 64 << 10).decode("utf-8", errors="replace")
    except MinerError:
        head = ""  # the reader below names the problem with its line number
    first = next((l for l in head.splitlines() if l.strip()), "")
    with_ids = bool(_ID_LINE.match(first))
    for lineno, line in _lines(path, span):
        if not line.strip():
            continue
        doc_id = str(lineno)
        if with_ids:
            doc_id, tab, line = line.partition("\t")
            if not tab:
                raise MinerError(f"{path}:{lineno}: no tab: the file's first line is "
                                 "ID<TAB>sentence, so every line must be")
        yield Document(line, doc_id, source, position=lineno)


def read_jsonl(path: str | Path, text_field: str = "text",
               id_field: Optional[str] = None, span: Optional[Span] = None) -> Iterator[Document]:
    """Documents of a JSON-lines file (or of the piece ``span``): ``text_field`` is the
    text, ``id_field`` the id (default: the line number). ``url`` and ``title`` fields,
    when present, fill ``url`` and ``title``."""
    path = as_path(path)
    source = source_name(path)
    for lineno, line in _lines(path, span):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MinerError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or text_field not in obj:
            raise MinerError(f"{path}:{lineno}: no field {text_field!r} (set --text-field)")
        text = obj[text_field]
        if not isinstance(text, str):
            raise MinerError(f"{path}:{lineno}: field {text_field!r} is not a string")
        doc_id = str(obj.get(id_field, lineno)) if id_field else str(lineno)
        if id_field and id_field not in obj:
            raise MinerError(f"{path}:{lineno}: no field {id_field!r} (set --id-field)")
        yield Document(text, doc_id, source, title=_field(obj.get("title")),
                       url=_field(obj.get("url")))


def read_parquet(path: str | Path, text_field: str = "text",
                 id_field: Optional[str] = None, batch_size: int = 1024,
                 span: Optional[Span] = None) -> Iterator[Document]:
    """Documents of a Parquet file, read a batch of rows at a time; ``span`` is
    (first row group, stop row group, number of the first row) of a piece."""
    import pyarrow as pa

    path = as_path(path)
    try:
        pf = parquet_file(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise MinerError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    for name in (text_field, id_field):
        if name and name not in names:
            raise MinerError(f"{path}: no column {name!r} (columns: {', '.join(names)})")
    kind = pf.schema_arrow.field(text_field).type
    if not _is_text_type(kind):  # integers read as text would be skipped, or worse, kept
        raise MinerError(f"{path}: column {text_field!r} holds {kind}, not text (set --text-field)")
    extra = [c for c in ("url", "title") if c in names]
    source = source_name(path)
    columns = [text_field] + ([id_field] if id_field else []) + extra
    groups = None if span is None else range(span[0], span[1])
    row = 0 if span is None else span[2]
    try:
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns, row_groups=groups):
            cols = batch.to_pydict()
            for i, text in enumerate(cols[text_field]):
                row += 1
                if text is None:  # a null: no document (the column's type is text)
                    continue
                doc_id = str(cols[id_field][i]) if id_field else str(row - 1)
                where = {c: _field(cols[c][i]) for c in extra}
                yield Document(text, doc_id, source, **where)
    except (pa.ArrowInvalid, OSError) as e:
        raise MinerError(f"{path}: corrupt Parquet file ({e})") from None


def _field(value) -> Optional[str]:
    """A provenance field as text; None when absent or empty."""
    return None if value is None or value == "" else str(value)


def _is_text_type(kind) -> bool:
    """A Parquet column type that holds strings (dictionary-encoded ones too)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind))
