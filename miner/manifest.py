"""``DIR/manifest.json``: what each stage wrote, with counts, timings and config hash.

Layout::

    {"stages": {"prepare": {"config_hash": ..., "inputs": [...], "counts": {...},
                            "seconds": ..., "finished": true}, ...}}

Per-stage records are replaced whole and the file is rewritten atomically, so a
crash leaves the previous manifest intact. Stages running in other processes
report their counts back to the driver, which alone writes this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from miner.errors import MinerError
from miner.io import write_json
from miner.storage import AnyPath, as_path


def manifest_path(out_dir: str | Path) -> AnyPath:
    return as_path(out_dir) / "manifest.json"


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of ``out_dir``, or an empty one."""
    path = manifest_path(out_dir)
    if not path.exists():
        return {"stages": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MinerError(f"{path}: not valid JSON ({e})") from None
    data.setdefault("stages", {})
    return data


def update_stage(out_dir: str | Path, stage: str, record: dict[str, Any]) -> dict[str, Any]:
    """Replace the record of ``stage`` (e.g. ``"prepare"`` or ``"knn/de-en"``)."""
    data = read_manifest(out_dir)
    data["stages"][stage] = record
    write_json(manifest_path(out_dir), data)
    return data


def merge_counts(*counts: dict[str, Any]) -> dict[str, Any]:
    """Add nested count dicts key by key (``{"de": {"kept": 3}}`` + ...)."""
    out: dict[str, Any] = {}
    for c in counts:
        for key, value in c.items():
            if isinstance(value, dict):
                out[key] = merge_counts(out.get(key, {}), value)
            else:
                out[key] = out.get(key, 0) + value
    return out
