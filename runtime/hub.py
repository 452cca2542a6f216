"""Hugging Face Hub datasets as inputs (`--tasks`, `sft --data`) and outputs (`--push-to-hub`), in one place.

An input names a local file or folder, or a hub dataset `org/name` with an optional split after a
colon (`Jiayi-Pan/Countdown-Tasks-3to4:train`; default `train`). A local path that exists always wins.
Offline (`HF_HUB_OFFLINE=1`, or no network), a hub id is a one-line `UsageError` saying so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from countdown_env.errors import UsageError

#: `org/name` or `org/name:split`, as the hub spells dataset ids.
HUB_REF = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<split>[\w.-]+))?")
DEFAULT_SPLIT = "train"


def hub_ref(source: str | Path) -> tuple[str, str] | None:
    """(dataset id, split) when `source` names a hub dataset rather than an existing local path, else None."""
    text = str(source)
    if Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return None
    match = HUB_REF.fullmatch(text)
    if match is None or text.endswith((".jsonl", ".json", ".parquet")):
        return None
    return match["repo"], match["split"] or DEFAULT_SPLIT


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def check_reachable(source: str | Path) -> None:
    """A one-line UsageError now, before any model is loaded, when `source` is a hub id and the hub is offline."""
    if (ref := hub_ref(source)) is not None and offline():
        raise UsageError(f"{ref[0]}:{ref[1]} is a hub dataset id, but the hub is offline (HF_HUB_OFFLINE=1); give a local file")


def load_hub_rows(repo: str, split: str = DEFAULT_SPLIT) -> list[dict[str, Any]]:
    """The rows of split `split` of hub dataset `repo`; a one-line UsageError when it cannot be had."""
    check_reachable(f"{repo}:{split}")
    import datasets

    try:
        return datasets.load_dataset(repo, split=split).to_list()
    except (OSError, ValueError) as err:  # not found, no network (ConnectionError is an OSError), unknown split
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"{repo}:{split}: cannot load this hub dataset (offline, or no such dataset or split?): {first}") from None


def load_tasks(source: str | Path) -> list[Any]:
    """Tasks from a tasks file (`countdown_env.read_tasks`) or a hub dataset `org/name[:split]` with
    `numbers`/`target` (or `nums`/`target`) columns; a local path that exists wins."""
    from countdown_env import Task, read_tasks

    if (ref := hub_ref(source)) is None:
        return read_tasks(source)
    rows = load_hub_rows(*ref)
    try:
        return [Task.from_dict(row) for row in rows]
    except (ValueError, TypeError) as err:
        raise UsageError(f"{ref[0]}:{ref[1]}: not a tasks dataset ({err})") from None


def push_rows(rows: Iterable[dict[str, Any]], repo: str, *, split: str = DEFAULT_SPLIT) -> None:
    """Push `rows` as split `split` of hub dataset `repo` (`datasets.Dataset.push_to_hub`; needs a login token)."""
    if offline():
        raise UsageError(f"--push-to-hub {repo}: the hub is offline (HF_HUB_OFFLINE=1)")
    import datasets

    datasets.Dataset.from_list(list(rows)).push_to_hub(repo, split=split)
    print(f"pushed to the hub: {repo} ({split})")
