"""Small I/O helpers shared by every stage: atomic writes and text input.

Outputs are written under a temporary name in the same directory and renamed into
place, so a crash never leaves a half-written file where a finished one should be,
and a rerun can trust any file that exists.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import IO, Iterator

from miner.errors import MinerError

# A line longer than this is not a sentence; reading it whole could exhaust memory.
# ``read_lines`` reads in text mode, so it counts characters (decoded str length).
MAX_LINE_CHARS = 1 << 20
# The same limit for readers that read raw bytes (``miner.readers.text._lines``), where
# it really counts bytes.
MAX_LINE_BYTES = MAX_LINE_CHARS


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    For a URL (``miner.storage``) the temporary file is local and is uploaded whole
    on success: object stores show an object only once its upload is complete.
    """
    from miner.storage import RemotePath, as_path

    path = as_path(path)
    if isinstance(path, RemotePath):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp_name)
            path.upload(tmp_name)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600; finished outputs get the usual umask-based mode
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        # a full disk while writing names the file being written, not its temporary
        if e.filename is None or str(e.filename) == str(tmp):
            e.filename = str(path)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it into place on success.

    A path ending in ``.gz`` is gzip-compressed (with mtime 0, so reruns are
    byte-identical).
    """
    with atomic_path(path) as tmp:
        if str(path).endswith(".gz"):
            raw = open(tmp, "wb")
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            try:
                if "b" in mode:
                    yield gz
                else:
                    import io as _io

                    with _io.TextIOWrapper(gz, encoding=kwargs.get("encoding", "utf-8"),
                                           newline=kwargs.get("newline")) as text:
                        yield text
                        text.flush()
            finally:
                gz.close()
                raw.close()
        else:
            with open(tmp, mode, **kwargs) as f:
                yield f


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a UTF-8 text file, plain or gzip, raising MinerError if it is missing."""
    path = Path(path)  # inputs are local files
    if not path.exists():
        raise MinerError(f"{path}: no such file")
    if path.is_dir():
        raise MinerError(f"{path}: is a directory, expected a file")
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, "r", encoding="utf-8", newline="\n")


def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a one-item-per-line text file (plain or .gz) into a list of stripped lines.

    Raises MinerError naming the file on a missing or empty file, broken UTF-8, a
    corrupt gzip stream or a line over ``MAX_LINE_CHARS`` characters.
    """
    lines: list[str] = []
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(iter(lambda: f.readline(MAX_LINE_CHARS + 1), ""), 1):
                if len(line) > MAX_LINE_CHARS:
                    raise MinerError(f"{path}:{lineno}: line longer than {MAX_LINE_CHARS} characters")
                lines.append(line.rstrip("\r\n"))
    except UnicodeDecodeError as e:
        raise MinerError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise MinerError(f"{path}: cannot read ({e})") from None
    if not lines:
        raise MinerError(f"{path}: file is empty")
    return lines
