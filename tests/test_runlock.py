"""The run lock (miner.runlock): one mine run per --out, stale locks taken over,
temporary files of a killed run removed, pool workers dying with a killed run."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from miner.errors import MinerError
from miner.runlock import RunLock, cleanup_temp, holds_lock, process_alive

from conftest import EXAMPLES, REPO

MINE = [sys.executable, "-m", "miner"]


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    p = subprocess.Popen(["sleep", "0"])
    p.wait()
    return p.pid


def write_lock(root: Path, **fields) -> Path:
    info = {"pid": dead_pid(), "host": socket.gethostname(),
            "started": "2024-01-01T00:00:00+00:00", "command": "mine run", "starttime": 1,
            "token": "theirs"}
    info.update(fields)
    root.mkdir(parents=True, exist_ok=True)
    (root / ".lock").write_text(json.dumps(info))
    return root / ".lock"


# -- RunLock -----------------------------------------------------------------------------

def test_lock_file_names_the_holder_and_goes_on_release(tmp_path):
    root = tmp_path / "run"
    with RunLock(root) as lock:
        info = json.loads((root / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["started"] and info["command"] and info["token"] == lock.info["token"]
        if sys.platform.startswith("linux"):
            assert isinstance(info["starttime"], int)
        assert holds_lock(root)
    assert not (root / ".lock").exists() and not holds_lock(root)


def test_second_acquire_fails_with_one_line_naming_the_holder(tmp_path):
    root = tmp_path / "run"
    with RunLock(root) as lock:
        errors = []
        t = threading.Thread(target=lambda: _acquire_into(root, errors))  # another thread
        t.start()
        t.join()
        assert len(errors) == 1
        msg = str(errors[0])
        assert "\n" not in msg
        assert msg.startswith(f"{root}: in use by another mine run")
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg
        assert lock.info["started"] in msg and "another --out" in msg
    assert not (root / ".lock").exists()


def _acquire_into(root, errors):
    try:
        with RunLock(root):
            pass
    except MinerError as e:
        errors.append(e)


def test_live_holder_in_another_process_is_refused(tmp_path):
    root = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from miner.runlock import RunLock\n"
                               "with RunLock(sys.argv[1]):\n"
                               "    print('held', flush=True); time.sleep(60)", str(root)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MinerError, match=f"pid {holder.pid} on "):
            RunLock(root).acquire()
        assert json.loads((root / ".lock").read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # now that it is dead, its lock is stale
    with RunLock(root) as lock:
        assert json.loads((root / ".lock").read_text())["token"] == lock.info["token"]


def test_reentrant_in_one_thread(tmp_path):
    root = tmp_path / "run"
    with RunLock(root):
        with RunLock(root):
            assert (root / ".lock").exists()
        assert (root / ".lock").exists() and holds_lock(root)
    assert not (root / ".lock").exists()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_warning(tmp_path, caplog):
    root = tmp_path / "run"
    pid = dead_pid()
    write_lock(root, pid=pid, starttime=None)
    assert not process_alive(pid)
    with caplog.at_level(logging.WARNING, logger="miner.runlock"):
        with RunLock(root) as lock:
            assert json.loads((root / ".lock").read_text())["pid"] == os.getpid()
            assert lock.info["pid"] == os.getpid()
    assert any(f"pid {pid}" in r.getMessage() and "no longer running" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    assert not (root / ".lock").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_recycled_pid_is_not_the_holder(tmp_path, caplog):
    """Our own pid with another start time: the pid was reused, the holder is gone."""
    root = tmp_path / "run"
    write_lock(root, pid=os.getpid(), starttime=1)
    with caplog.at_level(logging.WARNING, logger="miner.runlock"):
        with RunLock(root):
            pass
    assert any("no longer running" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"pid": "x"}',
                                     b"\xff\xfe garbage"])
def test_garbage_lock_is_taken_over_with_a_warning(tmp_path, caplog, content):
    root = tmp_path / "run"
    root.mkdir()
    (root / ".lock").write_bytes(content)
    old = time.time() - 60  # not one being written right now
    os.utime(root / ".lock", (old, old))
    with caplog.at_level(logging.WARNING, logger="miner.runlock"):
        with RunLock(root) as lock:
            assert json.loads((root / ".lock").read_text())["token"] == lock.info["token"]
    assert any("unreadable" in r.getMessage() for r in caplog.records)


def test_lock_from_another_host_counts_as_held(tmp_path):
    root = tmp_path / "run"
    lock = write_lock(root, host="elsewhere.example", pid=12345)
    with pytest.raises(MinerError) as e:
        RunLock(root).acquire()
    msg = str(e.value)
    assert "\n" not in msg and "pid 12345 on elsewhere.example" in msg
    assert f"delete {lock}" in msg
    assert lock.exists()


def test_release_leaves_another_runs_lock_alone(tmp_path):
    root = tmp_path / "run"
    lock = RunLock(root).acquire()
    # another run judged ours stale and took it over
    theirs = write_lock(root, pid=os.getpid() + 1, token="theirs")
    before = theirs.read_text()
    lock.release()
    assert theirs.read_text() == before
    assert not holds_lock(root)


def test_missing_folder_is_not_created_without_create(tmp_path):
    root = tmp_path / "missing"
    with RunLock(root, create=False):
        assert cleanup_temp(root) == 0
    assert not root.exists()


def test_lock_on_an_object_store(caplog):
    """s3:// (a local moto server): the best-effort lock refuses a live holder, takes
    over a dead one's, and cleanup_temp works there too."""
    from s3server import environment, s3_server

    from miner.storage import RemotePath

    with s3_server() as env, environment(env):
        root = RemotePath("s3://miner-test/run")
        with RunLock(root) as lock:
            info = json.loads((root / ".lock").read_text())
            assert info["token"] == lock.info["token"]
            errors = []
            t = threading.Thread(target=lambda: _acquire_into(root, errors))
            t.start()
            t.join()
            assert len(errors) == 1 and f"pid {os.getpid()} on " in str(errors[0])
            (root / "sentences" / ".part-00000.parquet.abcd1234.tmp").write_text("x")
            (root / "sentences" / "part-00000.parquet").write_text("x")
            assert cleanup_temp(root) == 1
            assert (root / "sentences" / "part-00000.parquet").exists()
        assert not (root / ".lock").exists()
        pid = dead_pid()
        (root / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
        with caplog.at_level(logging.WARNING, logger="miner.runlock"):
            with RunLock(root):
                pass
        assert any(f"pid {pid}" in r.getMessage() for r in caplog.records)
        assert not (root / ".lock").exists()


# -- cleanup_temp --------------------------------------------------------------------------

def test_cleanup_temp_removes_atomic_write_leftovers_only(tmp_path):
    import tempfile

    root = tmp_path / "run"
    (root / "sentences" / "de").mkdir(parents=True)
    (root / "embeddings" / "de").mkdir(parents=True)
    kept = [root / "manifest.json", root / "sentences" / "de" / "part-00000.parquet",
            root / "notes.tmp", root / ".lockish"]
    for p in kept:
        p.write_text("x")
    leftovers = [root / ".manifest.json.abcd1234.tmp"]
    leftovers[0].write_text("x")
    for directory, name in ((root / "sentences" / "de", "part-00001.parquet"),
                            (root / "embeddings" / "de", "part-00000.parquet")):
        # the temporary name miner.io.atomic_path gives, as a killed run leaves it
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        os.close(fd)
        leftovers.append(Path(tmp))
    with pytest.raises(RuntimeError):
        cleanup_temp(root)  # not without the lock
    assert all(p.exists() for p in leftovers)
    with RunLock(root):
        assert cleanup_temp(root) == 3
        assert cleanup_temp(root) == 0
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in kept)


# -- the mine command --------------------------------------------------------------------

def wait_for(condition, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.01)
    pytest.fail(f"{what} did not happen within {timeout} s")


def run_args(out: Path, *extra) -> list[str]:
    return [*MINE, "run", str(EXAMPLES / "corpus.de.txt"), str(EXAMPLES / "corpus.en.txt"),
            "--pair", "de-en", "--out", str(out), *map(str, extra)]


@pytest.mark.slow
def test_two_runs_on_one_out(tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(run_args(out), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for((out / ".lock").exists, 120, "the first run took the lock", first)
        t = time.time()
        second = subprocess.run(run_args(out), cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert time.time() - t < 15
        assert second.returncode == 2, second.stderr
        lines = second.stderr.splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith("mine: error: ") and f"pid {first.pid} " in lines[0]
        assert "in use by another mine run" in lines[0]
        stdout, stderr = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert (out / "bitext" / "de-en" / "bitext.tsv.gz").exists()
    assert not (out / ".lock").exists()


def proc_children(pid: int) -> dict[int, int]:
    """``{child pid: start time}`` of the live children of ``pid``, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            children[int(d)] = int(fields[19])
    return children


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_during_prepare_takes_the_workers_along(tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "workers.toml"
    config.write_text("[prepare]\nworkers = 2\n")  # a pool even on a one-core machine
    # 1K pieces: the two 8 KB example files make about 16 prepare tasks
    args = run_args(out, "--config", config, "--chunk-size", "1K")
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        children: dict[int, int] = {}

        def pool_started() -> bool:
            children.update(proc_children(proc.pid))
            return len(children) >= 2

        wait_for(pool_started, 120, "the prepare pool started", proc)
        # let the workers get into the tasks (their staging appears), then kill
        wait_for(lambda: pool_started() and any(out.glob(".prepare/*/*")), 120,
                 "the workers wrote staging", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def alive(pid: int, start: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
        except OSError:
            return False
        fields = data[data.rindex(")") + 2:].split()
        return fields[0] not in ("Z", "X") and int(fields[19]) == start

    deadline = time.time() + 2
    while time.time() < deadline and any(alive(p, s) for p, s in children.items()):
        time.sleep(0.05)
    survivors = [p for p, s in children.items() if alive(p, s)]
    for p in survivors:  # do not leave them running
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    assert not survivors, f"children of the killed run still alive: {survivors}"
    assert not (out / "bitext").exists()

    rerun = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    assert "taking over the lock" in rerun.stderr  # the killed run's
    assert not list(out.rglob("*.tmp"))
    assert not (out / ".lock").exists()
    assert (out / "bitext" / "de-en" / "bitext.tsv.gz").exists()
