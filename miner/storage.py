"""Where a run's files live: a local directory, or a URL of a pyarrow filesystem.

``--out`` may be a local path or a URL that ``pyarrow.fs.FileSystem.from_uri``
understands: ``s3://bucket/prefix`` (Amazon S3 and S3-compatible stores such as
MinIO or Ceph), ``gs://bucket/prefix`` (Google Cloud Storage), ``hdfs://...``.
Then no stage needs a disk shared between the nodes of a cluster: every task reads
and writes the store directly.

``as_path(p)`` gives a ``pathlib.Path`` for a local path and a ``RemotePath`` for a
URL. ``RemotePath`` has the part of the ``pathlib`` interface the stages use
(``/``, ``name``, ``parent``, ``exists``, ``glob``, ``stat``, ``open``, ``unlink``,
...), so stage code is written once for both. Parquet goes through
``parquet_file`` / ``read_table`` here (pyarrow reads the store itself, with range
requests); writes go through ``miner.io.atomic_path``, which writes a local
temporary file and uploads it whole (an object store shows an object only once its
upload completed, so readers never see half a file).

Credentials and endpoints come from the store's usual settings on every node:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` /
``AWS_ENDPOINT_URL`` (or an instance role) for S3, application default credentials
for GCS.
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Iterator, Union

from miner.errors import MinerError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
_filesystems: dict[str, object] = {}
_lock = threading.Lock()


def is_url(path) -> bool:
    """True for ``scheme://...`` other than ``file://`` (which is a local path)."""
    m = _URL.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def _filesystem(scheme: str, bucket: str):
    """The pyarrow filesystem of ``scheme://bucket``, built once per process."""
    key = f"{scheme}://{bucket}"
    with _lock:
        fs = _filesystems.get(key)
        if fs is None:
            import pyarrow.fs as pafs

            try:
                fs, _ = pafs.FileSystem.from_uri(key)
            except (ValueError, OSError) as e:  # unknown scheme, no S3 support built in, ...
                raise MinerError(f"{key}: not a storage location pyarrow can open ({e})") from None
            _filesystems[key] = fs
        return fs


class _StoreErrors:
    """Turn a store's OSError (network, credentials, a missing bucket) into one
    MinerError line naming the URL; FileNotFoundError passes through (callers expect it)."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, (FileNotFoundError, MinerError)) or not isinstance(e, OSError):
            return False
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MinerError(f"{self.url}: storage error ({first})") from None


class RemotePath:
    """A file or directory in a pyarrow filesystem, named by its URL.

    Immutable and picklable (it pickles as its URL: each process builds its own
    filesystem client from the environment).
    """

    def __init__(self, url: str):
        m = _URL.match(str(url))
        if not m:
            raise MinerError(f"{url}: not a URL")
        self.scheme = m.group(1).lower()
        key = m.group(2).strip("/")
        key = posixpath.normpath(key) if key else ""
        self.key = "" if key == "." else key  # "bucket/prefix/name"

    # -- naming ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __reduce__(self):
        return (RemotePath, (self.url,))

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __lt__(self, other: "RemotePath") -> bool:
        return self.url < other.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __truediv__(self, other) -> "RemotePath":
        return RemotePath(f"{self.scheme}://{posixpath.join(self.key, str(other))}")

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> "RemotePath":
        return RemotePath(f"{self.scheme}://{posixpath.dirname(self.key)}")

    def relative_to(self, other) -> Path:
        other = as_path(other)
        if not isinstance(other, RemotePath) or other.scheme != self.scheme or not (
                self.key == other.key or self.key.startswith(other.key + "/")):
            raise ValueError(f"{self} is not under {other}")
        return Path(posixpath.relpath(self.key, other.key))

    # -- the filesystem ----------------------------------------------------------------
    @property
    def fs(self):
        return _filesystem(self.scheme, self.key.split("/", 1)[0])

    def _info(self):
        with _StoreErrors(self.url):
            return self.fs.get_file_info(self.key)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.Directory

    def stat(self) -> SimpleNamespace:
        """``st_size``, ``st_mtime`` and ``st_mtime_ns`` (object stores: upload time)."""
        info = self._info()
        import pyarrow.fs as pafs

        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(self.url)
        ns = info.mtime_ns or 0
        return SimpleNamespace(st_size=info.size or 0, st_mtime=ns / 1e9, st_mtime_ns=ns)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        with _StoreErrors(self.url):
            self.fs.create_dir(self.key, recursive=True)

    def _list(self, selector) -> list:
        with _StoreErrors(self.url):
            return self.fs.get_file_info(selector)

    def iterdir(self) -> Iterator["RemotePath"]:
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.key, allow_not_found=True, recursive=False)
        for info in sorted(self._list(sel), key=lambda i: i.path):
            yield RemotePath(f"{self.scheme}://{info.path}")

    def glob(self, pattern: str) -> Iterator["RemotePath"]:
        """Entries matching a relative pattern of ``*``/``?``/``[]`` parts (no ``**``)."""
        import pyarrow.fs as pafs

        depth = pattern.count("/") + 1
        sel = pafs.FileSelector(self.key, allow_not_found=True, recursive=depth > 1)
        for info in sorted(self._list(sel), key=lambda i: i.path):
            rel = posixpath.relpath(info.path, self.key)
            if rel.count("/") + 1 == depth and fnmatch.fnmatchcase(rel, pattern):
                yield RemotePath(f"{self.scheme}://{info.path}")

    def rglob(self, pattern: str) -> Iterator["RemotePath"]:
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.key, allow_not_found=True, recursive=True)
        for info in sorted(self._list(sel), key=lambda i: i.path):
            if fnmatch.fnmatchcase(posixpath.basename(info.path), pattern):
                yield RemotePath(f"{self.scheme}://{info.path}")

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            with _StoreErrors(self.url):
                self.fs.delete_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmdir(self) -> None:
        with _StoreErrors(self.url):
            self.fs.delete_dir(self.key)

    def rmtree(self) -> None:
        """Delete this directory and everything under it (no error if absent)."""
        if self.exists():
            with _StoreErrors(self.url):
                self.fs.delete_dir(self.key)

    # -- content -----------------------------------------------------------------------
    def open(self, mode: str = "r", encoding: str = "utf-8", newline=None) -> IO:
        """``rb``/``r``: a seekable reader; ``wb``/``w``: a stream that uploads on close
        (use ``miner.io.atomic_path`` for outputs that readers must never see half)."""
        if mode in ("rb", "r"):
            try:
                with _StoreErrors(self.url):
                    raw = self.fs.open_input_file(self.key)
            except FileNotFoundError:
                raise FileNotFoundError(self.url) from None
        elif mode in ("wb", "w"):
            with _StoreErrors(self.url):
                raw = self.fs.open_output_stream(self.key)
        else:
            raise ValueError(f"unsupported mode {mode!r}")
        if "b" in mode:
            return raw
        return io.TextIOWrapper(io.BufferedReader(raw) if "r" in mode else raw,
                                encoding=encoding, newline=newline)

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        with self.open("wb") as f:
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def upload(self, local: Union[str, os.PathLike]) -> None:
        """Copy the local file ``local`` to this path (one object, seen whole or not at all)."""
        import pyarrow.fs as pafs

        # C++ copy: a Python exception cannot interrupt it between writing and closing
        # the stream (closing completes the upload, so that would publish a cut file)
        with _StoreErrors(self.url):
            pafs.copy_files(os.path.abspath(local), self.key,
                            source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)


AnyPath = Union[Path, RemotePath]


def as_path(path) -> AnyPath:
    """``RemotePath`` for a URL, else a ``pathlib.Path`` (``file://`` URLs included)."""
    if isinstance(path, (Path, RemotePath)):
        return path
    s = os.fspath(path) if not isinstance(path, str) else path
    if is_url(s):
        return RemotePath(s)
    if s.lower().startswith("file://"):
        return Path(s[len("file://"):])
    return Path(s)


def rmtree(path) -> None:
    """Delete a directory tree, local or remote; nothing happens if it is absent."""
    path = as_path(path)
    if isinstance(path, RemotePath):
        path.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _parquet_args(path) -> tuple:
    path = as_path(path)
    if isinstance(path, RemotePath):
        return path.key, {"filesystem": path.fs}
    return str(path), {}


def parquet_file(path, **kwargs):
    """``pyarrow.parquet.ParquetFile`` of a local or remote file."""
    import pyarrow.parquet as pq

    source, extra = _parquet_args(path)
    if extra:
        f = as_path(path).open("rb")
        with _StoreErrors(str(path)):
            return pq.ParquetFile(f, **kwargs)
    return pq.ParquetFile(source, **kwargs)


def read_table(path, **kwargs):
    """``pyarrow.parquet.read_table`` of a local or remote file."""
    import pyarrow.parquet as pq

    source, extra = _parquet_args(path)
    if extra:
        with _StoreErrors(str(path)):
            return pq.read_table(source, **extra, **kwargs)
    return pq.read_table(source, **kwargs)
