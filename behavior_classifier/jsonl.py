"""Reading JSONL files that another process may still be appending to (a live run's rollouts, a classify job).

Hand-written because pandas/datasets JSON readers reject the whole file on one torn line and do not say
which line of which file is bad.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """The JSON objects of `path`, one per non-blank line.

    A last line that is not JSON and has no final newline is a row still being written (writers append
    ``json.dumps(row) + "\\n"``, the newline last) and is skipped. Any other bad line raises ValueError
    naming ``file:line``.
    """
    path = Path(path)
    with path.open() as f:
        lines = f.readlines()
    rows = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as err:
            if line_no == len(lines) and not line.endswith("\n"):
                break  # half-written last row; a later read sees it whole
            raise ValueError(f"{path}:{line_no}: not JSON ({err}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_no}: a {type(row).__name__}, not a JSON object; each line must be one JSON object")
        rows.append(row)
    return rows
