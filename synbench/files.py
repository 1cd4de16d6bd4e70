"""Atomic file writes: a temp file in the target's folder, then ``os.replace``. A reader (another job of a
sweep, a crash-restarted job) sees the old file or the whole new one, never a partial one. Stdlib only, so
every layer of the package may use it."""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable


def replace_atomically(path: Path, write: Callable[[str], None]) -> Path:
    """``write(tmp_path)`` fills a temp file beside ``path``, which then replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _clean(obj):
    """JSON has no NaN/inf: write them as null so the file stays valid for every reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_csv_atomic(path: Path, header: list[str], rows) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    return replace_atomically(path, write)


def write_json_atomic(path: Path, payload: dict) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(_clean(payload), f, indent=2)

    return replace_atomically(path, write)
