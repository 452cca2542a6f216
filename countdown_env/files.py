"""Files: the one JSONL reader, the appender and the one atomic writer every package uses (standard library only).

Writers append ``json.dumps(row) + "\\n"``, the newline last, so a crash mid-write leaves at most a
torn last line without a newline. The reader skips exactly that and raises on any other bad line,
naming ``file:line``; `append_jsonl` cuts such a torn tail before appending, so a torn row never ends
up in the middle of a file. Hand-written because pandas/datasets JSON readers reject a whole file on
one torn line and do not say which line of which file is bad.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# The process umask, read once, so atomic outputs get the permissions a plain open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


def iter_jsonl(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, JSON object) for each non-blank line of `path`; see `read_jsonl`."""
    path = Path(path)
    with path.open() as f:
        lines = f.readlines()
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as err:
            if line_no == len(lines) and not line.endswith("\n"):
                return  # a row still being written (or cut by a crash); a later read sees it whole
            raise ValueError(f"{path}:{line_no}: not JSON ({err}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_no}: a {type(row).__name__}, not a JSON object; each line must be an object {{...}}")
        yield line_no, row


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """The JSON objects of `path`, one per non-blank line.

    A last line that is not JSON and has no final newline is a row still being written and is
    skipped. Any other bad line (or a line holding a list, number, ...) raises ValueError naming
    ``file:line``; a missing file raises FileNotFoundError.
    """
    return [row for _, row in iter_jsonl(path)]


def cut_torn_tail(path: Path | str) -> bool:
    """Drop a last line without a final newline (a row cut by a crash); True if one was dropped.

    For writers that keep a file open and append row by row: call it before opening, so the
    first new row does not get glued to the torn one.
    """
    path = Path(path)
    if not path.exists():
        return False
    with path.open("rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return False
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return False
        # Scan back for the last newline in chunks: rows are short, the file may be large.
        pos, keep = end, 0
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            chunk = f.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


def append_jsonl(path: Path | str, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows and flush them to disk (a crash loses at most the row being written).

    A torn last line left by an earlier crash is cut first (`cut_torn_tail`).
    """
    path = Path(path)
    cut_torn_tail(path)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_output(path: Path | str, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A text (or `binary`) file that replaces `path` only if the block completes; on any error `path` is untouched.

    The temporary file lives beside `path` (so `os.replace` is a rename within one file system) under a
    unique name, and keeps `path`'s permissions (or the umask's for a new file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    """Replace `path` with `text` all at once: readers (and a crash) see the old file or the new one."""
    with atomic_output(path) as f:
        f.write(text)


def save_png_atomic(figure: Any, path: Path | str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as a PNG that replaces `path` whole: a kill mid-save leaves the old plot, not half a file."""
    with atomic_output(path, binary=True) as f:
        figure.savefig(f, dpi=dpi, format="png")
    return Path(path)


def write_jsonl_atomic(path: Path | str, rows: Iterable[dict[str, Any]]) -> None:
    """Replace `path` with `rows` as JSONL all at once; if writing raises, the old file is left as it was.

    `rows` may be a generator: it is streamed into a temporary file beside `path`.
    """
    with atomic_output(path) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def is_parquet(path: Path | str) -> bool:
    """A `.parquet` name, or parquet's magic bytes whatever the name (so a parquet file is never read as JSONL)."""
    path = Path(path)
    with path.open("rb") as f:
        return path.suffix == ".parquet" or f.read(4) == b"PAR1"


def read_parquet(path: Path | str) -> list[dict[str, Any]]:
    """A parquet file's rows as dicts (nested columns, e.g. chat messages, as lists and dicts); a file that is not
    parquet is a `UsageError` naming it. pyarrow is imported here, not at module import (this module stays pure)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from countdown_env.errors import UsageError

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowInvalid, OSError) as err:
        raise UsageError(f"{path}: not a parquet file ({err})") from None
