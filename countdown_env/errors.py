"""User errors and safe output files for the `countdown-lab` CLI (pure Python, importable without torch).

A `UsageError` is a mistake the user can fix (a missing file, a bad flag, a bad config): the CLI prints it as
one line, ``error: <what, which file>``, and exits 2. Anything else is a bug and keeps its traceback, which is
why handlers raise or convert to `UsageError` instead of the CLI catching every `ValueError`.

Outputs go through `atomic_output`: written to a temporary file beside the target and moved over it with
`os.replace` only when complete, so a command that fails never empties or truncates an existing file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# The process umask, read once, so atomic outputs get the permissions a plain open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


class UsageError(ValueError):
    """A mistake in what the user asked for; the message says what is wrong, where, and how to fix it."""


@contextmanager
def user_input(what: str = "") -> Iterator[None]:
    """Turn a `ValueError` raised while reading user-given config or files into a `UsageError`.

    Wrap only the parsing of what the user gave (flags, config files, tasks files), never the work itself:
    a `ValueError` from the work is a bug and must keep its traceback.
    """
    try:
        yield
    except UsageError:
        raise
    except ValueError as err:
        raise UsageError(f"{what}: {err}" if what else str(err)) from err


def input_file(path: Path, what: str = "input") -> Path:
    """`path` if it is a readable regular file, else a `UsageError` naming it."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path} is not readable (permission denied)")
    return path


def output_file(path: Path, what: str = "output", inputs: tuple[Path, ...] = ()) -> Path:
    """`path` if a file can be written there: not a directory, not below a file, not one of `inputs`."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {path}: {parent} is a file, not a directory")
            break
    for source in inputs:
        if Path(source).exists() and path.exists() and Path(source).resolve() == path.resolve():
            raise UsageError(f"{what} {path} is also the input; write to another file (the input would be lost)")
    return path


def output_dir(path: Path, what: str = "output directory") -> Path:
    """`path` if it is a directory or can be made one (not an existing file, not below a file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is an existing file, not a directory; give a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {path}: {parent} is a file, not a directory")
            break
    return path


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """A text file that replaces `path` only if the block completes; on any error `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
        with os.fdopen(fd, "w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
