"""What `countdown-lab prime` writes: a Hugging Face dataset, JSONL splits and metadata.

    OUTPUT_DIR/dataset/          DatasetDict (train/test) saved with `save_to_disk`; columns
                                 prompt, completion, numbers, target, condition, correct, behaviors
    OUTPUT_DIR/train.jsonl       the same rows with every trace field, one JSON object a line
    OUTPUT_DIR/test.jsonl
    OUTPUT_DIR/metadata.json     condition, seed, generator and its version, trace config, counts

The metadata is also the dataset's `DatasetInfo.description`, so a copied dataset keeps it.
`priming.sft_data.load_sft_data(OUTPUT_DIR)` reads this layout.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from countdown_env.errors import UsageError
from countdown_env.files import write_jsonl_atomic, write_text_atomic
from countdown_env.rules import DEFAULT_RULES, Rules, render_prompt
from countdown_env.tasks import Task
from priming.conditions import BEHAVIORS

#: Columns of the saved dataset (the JSONL files keep every field).
DATASET_COLUMNS = ("prompt", "completion", "numbers", "target", "condition", "correct", "behaviors")


def with_prompt(row: Mapping[str, Any], prompt_style: str, rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    """A trace row with `prompt` (the shared template) and `completion` (its text) added.

    A `chat` prompt depends on the model's chat template, so it is left out here and rendered
    by SFT with the model's tokenizer (`priming.sft_data`)."""
    if prompt_style == "chat":
        return {"completion": row["text"], **row}
    task = Task(tuple(row["numbers"]), row["target"])
    return {"prompt": render_prompt(task, prompt_style, rules), "completion": row["text"], **row}


def summarise(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts for the metadata: rows, correct answers, and behaviours written (when known)."""
    rows = list(rows)
    totals: Counter[str] = Counter()
    present: Counter[str] = Counter()
    known = 0
    for row in rows:
        if row.get("behaviors") is None:
            continue
        known += 1
        for name in BEHAVIORS:
            totals[name] += row["behaviors"][name]
            present[name] += row["behaviors"][name] > 0
    out: dict[str, Any] = {"rows": len(rows), "correct": sum(bool(r["correct"]) for r in rows)}
    if known:
        out["behavior_totals"] = {b: totals[b] for b in BEHAVIORS}
        out["traces_with_behavior"] = {b: present[b] for b in BEHAVIORS}
    return out


def write_prime_output(
    rows: list[dict[str, Any]], output_dir: str | Path, metadata: dict[str, Any], *, test_size: float, seed: int
) -> dict[str, Any]:
    """Split `rows` (prompt/completion trace rows) into train/test and write the layout above.

    `test_size` is the held-out share (0 writes a train split only); the split is
    `datasets.Dataset.train_test_split` with `seed`, so it is reproducible.
    """
    import datasets

    if not rows:
        raise UsageError("no traces to write (all tasks failed or were filtered out); check --keep and the generator's output")
    if not 0.0 <= test_size < 1.0:
        raise UsageError(f"test_size must be in [0, 1), got {test_size}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    full = datasets.Dataset.from_list([json_safe(row) for row in rows])
    n_test = round(test_size * len(rows))
    if n_test >= 1 and len(rows) - n_test >= 1:
        splits = full.train_test_split(test_size=n_test, seed=seed)
    else:
        splits = datasets.DatasetDict({"train": full})
    metadata = {**metadata, "splits": {name: len(split) for name, split in splits.items()}, "summary": summarise(rows)}
    for name, split in splits.items():
        write_jsonl_atomic(output_dir / f"{name}.jsonl", split)
    stale = output_dir / "test.jsonl"
    if "test" not in splits and stale.exists():
        stale.unlink()  # from an earlier run with a test split
    info = datasets.DatasetInfo(description=json.dumps(metadata, sort_keys=True))
    lean = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_list(
                split.select_columns([c for c in DATASET_COLUMNS if c in split.column_names]).to_list(), info=info
            )
            for name, split in splits.items()
        }
    )
    lean.save_to_disk(str(output_dir / "dataset"))
    write_text_atomic(output_dir / "metadata.json", json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return metadata


def json_safe(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row as plain JSON types (Arrow needs one type per column; nested dicts stay dicts)."""
    return json.loads(json.dumps(row))
