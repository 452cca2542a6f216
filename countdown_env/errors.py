"""User errors and safe output files for the `countdown-lab` CLI (pure Python, importable without torch).

A `UsageError` is a mistake the user can fix (a missing file, a bad flag, a bad config): the CLI prints it as
one line, ``error: <what, which file>``, and exits 2. Anything else is a bug and keeps its traceback, which is
why handlers raise or convert to `UsageError` instead of the CLI catching every `ValueError`.

Outputs go through `countdown_env.files.atomic_output`, so a command that fails never empties or truncates an
existing file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
