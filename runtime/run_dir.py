"""The run directory of the contract: config.json, metrics.jsonl, rollouts.jsonl, checkpoints/.

Logs are append-only JSONL, one row per step; checkpoints are written to a temporary
folder and renamed into place, so a run killed at any moment (even `kill -9`) leaves
either a complete checkpoint or none, and `truncate_after` drops the log rows of steps
the last checkpoint does not cover before those steps run again.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from countdown_env.errors import UsageError
from countdown_env.files import read_jsonl, write_jsonl_atomic

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
    def eval_completions(self) -> Path:
        """Held-out completions of every evaluation (with `step`), for behaviour counts."""
        return self.root / "eval_completions.jsonl"

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


def truncate_after(path: Path, step: int) -> int:
    """Keep only rows with `step <= step` (atomically); returns how many rows were dropped.

    A missing file drops nothing; a torn last line (a kill mid-write) is dropped too.
    """
    if not path.exists():
        return 0
    rows = read_jsonl(path)
    kept = [row for row in rows if row.get("step", 0) <= step]
    write_jsonl_atomic(path, kept)
    return len(rows) - len(kept)


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


#: The lock file of a folder one process writes at a time (a run directory, an experiment directory).
LOCK = ".lock"


@contextmanager
def lock_folder(folder: Path, what: str = "folder") -> Iterator[None]:
    """Hold an exclusive lock on `folder` (made if missing) for the block; a second process asking for it gets a
    one-line `UsageError` at once instead of writing into the same logs and checkpoints.

    `fcntl.flock` on `folder/.lock`: the kernel drops the lock when the process dies (even `kill -9`),
    so a crashed run never leaves its folder locked. Under `accelerate launch` only the main process
    (RANK 0) locks: its siblings write into the folder with it, by design."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{what} {folder} is in use by another process; wait for it to finish, or use another folder") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
