"""The run directory of the contract: config.json, metrics.jsonl, rollouts.jsonl, checkpoints/.

Logs are append-only JSONL, one row per step; checkpoints are written to a temporary
folder and renamed into place, so a run killed at any moment (even `kill -9`) leaves
either a complete checkpoint or none, and `truncate_after` drops the log rows of steps
the last checkpoint does not cover before those steps run again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def rollouts(self) -> Path:
        return self.root / "rollouts.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}"

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """(step, folder) of the newest complete checkpoint, if any (temp folders are ignored)."""
        found = [(int(m.group(1)), p) for p in self.checkpoints.glob("step-*") if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
        return max(found) if found else None

    def has_logs(self) -> bool:
        return self.metrics.exists() and self.metrics.stat().st_size > 0


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows and flush them to disk (a crash loses at most the row being written)."""
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_after(path: Path, step: int) -> int:
    """Keep only rows with `step <= step` (atomically); returns how many rows were dropped."""
    rows = read_jsonl(path)
    kept = [row for row in rows if row.get("step", 0) <= step]
    if path.exists():
        write_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))
    return len(rows) - len(kept)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def publish_checkpoint(tmp: Path, final: Path, keep: int) -> None:
    """Rename a fully written temp checkpoint into place, then prune the oldest beyond `keep`."""
    if final.exists():  # a re-run of the same step after a resume
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    done = sorted(p for p in final.parent.glob("step-*") if CHECKPOINT.match(p.name))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
