"""One ``mine`` process per run folder at a time, and what an interrupted one left.

Two runs writing into the same ``--out`` would overwrite each other's shards and
manifest records. Every command that writes into a run folder therefore holds its
lock while it works::

    with RunLock(out_dir):
        cleanup_temp(out_dir)   # temporary files of a run that was killed
        ...                     # the stages

The lock is the file ``{root}/.lock``, created atomically (``O_CREAT | O_EXCL``) and
holding JSON: ``pid``, ``host``, ``started`` (ISO time), ``command`` (the command
line), ``starttime`` (the holder's start time in clock ticks from
``/proc/{pid}/stat``, so that a recycled pid is not mistaken for the holder) and a
random ``token``. A second run finds the lock and stops with one line naming the
holder. A lock whose holder is gone (same host: no such pid, a zombie, or another
process under the same pid) or whose file is unreadable is taken over with a
warning. A lock written on another host cannot be checked and counts as held; the
message says how to remove it when that run is gone.

The lock is re-entrant within one thread (a command that holds it may call code that
takes it again); another thread of the same process is refused like another process.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from typing import Optional

from miner.errors import MinerError
from miner.storage import AnyPath, RemotePath, as_path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
TAKEOVER_NAME = ".lock.takeover"  # held for a moment while a stale lock is removed
TEMP_PATTERN = ".*.tmp"  # miner.io.atomic_path: .{name}.XXXXXXXX.tmp beside the target

# a lock file younger than this that does not parse may be one being written
_YOUNG_S = 2.0
# a takeover marker older than this belongs to a process that died while taking over
_TAKEOVER_STALE_S = 10.0
# object stores: the wait between writing the lock and reading it back
_REMOTE_SETTLE_S = 0.2

_held: dict[str, list] = {}  # key -> [thread id, depth]: the locks this process holds
_held_lock = threading.Lock()


def _key(root: AnyPath) -> str:
    return root.url if isinstance(root, RemotePath) else os.path.realpath(root)


def _proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """``(state, starttime)`` of ``pid`` from ``/proc/{pid}/stat``; None without one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)


def _has_proc() -> bool:
    return sys.platform.startswith("linux") and os.path.exists("/proc/self/stat")


def process_alive(pid: int, starttime: Optional[int] = None) -> bool:
    """True when ``pid`` runs on this host (not a zombie) and, when ``starttime`` is
    given and ``/proc`` can tell, is the process that started then."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    except OSError:
        return False
    if not _has_proc():
        return True
    stat = _proc_stat(pid)
    if stat is None:  # it ended in between
        return False
    state, start = stat
    if state in ("Z", "X"):
        return False
    return starttime is None or start == starttime


class RunLock:
    """The lock of the run folder ``root`` (a local path or a URL); see the module.

    ``create=False``: a missing ``root`` is not created and nothing is locked (the
    stage commands that read a finished run report a missing folder themselves).

    For a URL (an object store such as ``s3://``) the lock is best effort: object
    stores give no atomic create-if-absent, so it is written when absent, read back
    after a moment and its token compared. Two runs starting within that moment can
    both believe they hold it; a run that starts later is refused as usual.
    """

    def __init__(self, root, *, create: bool = True):
        self.root: AnyPath = as_path(root)
        self.path: AnyPath = self.root / LOCK_NAME
        self.create = create
        self.info: dict = {}
        self._key = _key(self.root)
        self._nested = False
        self._locked = False  # True when this object wrote the lock file

    # -- the lock's content ------------------------------------------------------
    def _new_info(self) -> dict:
        stat = _proc_stat(os.getpid()) if _has_proc() else None
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(sys.argv),
            "starttime": stat[1] if stat else None,
            "token": uuid.uuid4().hex,
        }

    @staticmethod
    def _parse(raw: bytes) -> tuple[Optional[dict], str]:
        """The lock's dict, or None and why it is not one."""
        try:
            info = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return None, f"not JSON: {e}" if raw.strip() else "empty"
        if not isinstance(info, dict):
            return None, "not a JSON object"
        pid = info.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None, "no pid"
        if not isinstance(info.get("host"), str):
            return None, "no host"
        start = info.get("starttime")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            return None, "bad starttime"
        return info, ""

    @staticmethod
    def _holder(info: dict) -> str:
        return (f"pid {info['pid']} on {info['host']} "
                f"since {info.get('started') or 'an unknown time'}")

    def _busy(self, info: dict) -> MinerError:
        if info["host"] != socket.gethostname():
            return MinerError(
                f"{self.root}: in use by another mine run ({self._holder(info)}, another host: "
                f"cannot check that it still runs); wait for it or use another --out, or if "
                f"that run is gone, delete {self.path}")
        return MinerError(f"{self.root}: in use by another mine run ({self._holder(info)}); "
                          f"wait for it or use another --out")

    def _held_by_other(self, info: dict) -> bool:
        """True unless the lock's holder is known to be gone (checkable on this host only)."""
        if info["host"] != socket.gethostname():
            return True
        return process_alive(info["pid"], info.get("starttime"))

    def _warn_stale(self, info: Optional[dict], why: str) -> None:
        if info is None:
            log.warning("%s: the lock file %s is unreadable (%s); taking it over",
                        self.root, self.path, why)
        else:
            log.warning("%s: taking over the lock of mine run pid %d on %s (started %s), "
                        "which is no longer running", self.root, info["pid"], info["host"],
                        info.get("started") or "at an unknown time")

    # -- acquire / release -------------------------------------------------------
    def acquire(self) -> "RunLock":
        with _held_lock:
            entry = _held.get(self._key)
            if entry is not None and entry[0] == threading.get_ident():
                entry[1] += 1
                self._nested = True
                return self
        if not self.create and not self.root.exists():
            log.debug("%s does not exist: nothing to lock", self.root)
        elif isinstance(self.root, RemotePath):
            self._acquire_remote()
        else:
            self._acquire_local()
        with _held_lock:
            _held[self._key] = [threading.get_ident(), 1]
        return self

    def _acquire_local(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        info = self._new_info()
        content = (json.dumps(info, indent=2) + "\n").encode("utf-8")
        deadline = time.monotonic() + 30
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                try:
                    # no fsync (40 ms a stage here): a lock a crash leaves empty or
                    # torn does not parse and is taken over as stale, as any dead one
                    os.write(fd, content)
                finally:
                    os.close(fd)
                self.info, self._locked = info, True
                return
            if time.monotonic() > deadline:
                raise MinerError(f"{self.root}: cannot take the lock {self.path}; if no mine run "
                                 "uses this folder, delete it")
            try:
                raw = self.path.read_bytes()
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:  # released in between
                continue
            other, why = self._parse(raw)
            if other is None and age < _YOUNG_S:  # perhaps being written right now
                time.sleep(0.05)
                continue
            if other is not None and self._held_by_other(other):
                raise self._busy(other)
            if self._remove_stale_local(raw):
                self._warn_stale(other, why)

    def _remove_stale_local(self, raw: bytes) -> bool:
        """Delete the lock file if it still holds ``raw``, guarded so that two runs
        taking over the same stale lock cannot delete the lock one of them just made."""
        guard = self.root / TAKEOVER_NAME
        try:
            fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > _TAKEOVER_STALE_S:
                    guard.unlink(missing_ok=True)  # its process died while taking over
            except FileNotFoundError:
                pass
            time.sleep(0.05)
            return False
        try:
            try:
                if self.path.read_bytes() != raw:
                    return False
            except FileNotFoundError:
                return False
            self.path.unlink()
            return True
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)

    def _acquire_remote(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            other, why = self._parse(raw)
            if other is not None and self._held_by_other(other):
                raise self._busy(other)
            self._warn_stale(other, why)
        info = self._new_info()
        self.path.write_text(json.dumps(info, indent=2) + "\n")
        time.sleep(_REMOTE_SETTLE_S)
        try:
            back, _ = self._parse(self.path.read_bytes())
        except FileNotFoundError:
            back = None
        if back is None or back.get("token") != info["token"]:
            if back is not None:
                raise self._busy(back)
            raise MinerError(f"{self.root}: another mine run took the lock {self.path} at the "
                             "same time; use another --out or try again")
        self.info, self._locked = info, True

    def release(self) -> None:
        """Remove the lock file if it is still ours (a lock taken over by another run
        after ours was judged stale is left alone)."""
        if self._nested:
            with _held_lock:
                _held[self._key][1] -= 1
            self._nested = False
            return
        with _held_lock:
            _held.pop(self._key, None)
        if not self._locked:
            return
        self._locked = False
        try:
            current, _ = self._parse(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, MinerError) as e:
            log.warning("%s: cannot read the lock to release it (%s)", self.root, e)
            return
        if current is None or current.get("token") != self.info.get("token"):
            log.warning("%s: the lock is no longer ours; left in place", self.root)
            return
        try:
            self.path.unlink(missing_ok=True)
        except (OSError, MinerError) as e:
            log.warning("%s: cannot remove the lock (%s)", self.root, e)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holds_lock(root) -> bool:
    """True when this process holds the lock of ``root`` (``with RunLock(root):``)."""
    with _held_lock:
        return _key(as_path(root)) in _held


def cleanup_temp(root) -> int:
    """Delete the temporary files of atomic writes (``.*.tmp``, see
    ``miner.io.atomic_path``) anywhere under ``root`` that an interrupted run left;
    returns how many. Only while holding ``RunLock(root)``: another run's temporary
    files are files it is writing."""
    root = as_path(root)
    if not holds_lock(root):
        raise RuntimeError(f"cleanup_temp({root}) outside `with RunLock({root}):`")
    removed = 0
    if isinstance(root, RemotePath):
        if not root.is_dir():
            return 0
        for path in root.rglob(TEMP_PATTERN):
            path.unlink(missing_ok=True)
            removed += 1
    else:
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                if fnmatch.fnmatchcase(name, TEMP_PATTERN):
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
                    except FileNotFoundError:
                        pass
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", root, removed)
    return removed
