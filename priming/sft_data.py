"""The prompt/completion data SFT trains on, read from what `countdown-lab prime` writes, JSONL or parquet.

Accepted inputs (`load_sft_data`):
- a Hugging Face dataset saved with `save_to_disk` (a `DatasetDict` with `train` and
  optionally `test`, or a single `Dataset`), or a directory holding exactly one such dataset;
- a directory with `train.jsonl` or `train.parquet` (and optionally `test.jsonl`/`test.parquet`: the
  study's released SFT data is `<condition>/train.parquet` and `test.parquet`);
- one JSONL or parquet file.
Rows carry `prompt` and `completion` already (or `query` and `completion`, the study's columns; or any
two columns named by `prompt_field`/`completion_field`), or chat `messages` (the last assistant turn is
the completion, the turns before it the prompt, rendered by the tokenizer's chat template), or are
traces with `numbers`, `target` and the completion in `text`; the prompt of a trace is built by
`countdown_env.rules.render_prompt`, the one place the prompt template lives.
`numbers`/`target` are kept beside prompt/completion when present, so held-out rows can
be scored by generation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from countdown_env.errors import UsageError, user_input
from countdown_env.files import is_parquet, read_jsonl, read_parquet
from countdown_env.rules import DEFAULT_RULES, Rules, render_prompt
from countdown_env.tasks import Task

#: Columns the trainer and the accuracy evaluation use; any others are dropped.
KEPT_COLUMNS = ("prompt", "completion", "numbers", "target")
#: Other names of the prompt column, tried in order when a row has no `prompt` (the study's data: `query`).
PROMPT_ALIASES = ("query",)


def load_sft_data(
    path: str | Path,
    *,
    prompt_style: str = "compact",
    rules: Rules = DEFAULT_RULES,
    tokenizer: Any = None,
    prompt_field: str | None = None,
    completion_field: str | None = None,
) -> Any:
    """A `datasets.DatasetDict` with a `train` split (and `test` if the input has one).

    Every split has string columns `prompt` and `completion`, plus `numbers`/`target`
    when the input rows carry them. `tokenizer` renders `chat` prompts and `messages` rows (its chat
    template). `prompt_field`/`completion_field` name the columns to read as prompt and completion.
    """
    import datasets

    from runtime.hub import hub_ref, load_hub_rows

    if (ref := hub_ref(path)) is not None:  # a hub dataset `org/name[:split]` (a local path that exists wins)
        splits: dict[str, Any] = {"train": load_hub_rows(*ref)}
        path = Path(f"{ref[0]}:{ref[1]}")  # for messages only
    else:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"SFT data {path} does not exist; pass the directory `countdown-lab prime` wrote, a JSONL file or a hub id"
            )
        splits = _local_splits(path)
    if "train" not in splits:
        raise UsageError(f"{path} has no 'train' split (splits: {sorted(splits)})")
    out = {}
    for name, split in splits.items():
        if not isinstance(split, list) and not {"prompt", "completion"} <= set(split.column_names):
            split = split.to_list()  # other columns (query, messages, mapped fields): mapped row by row
        if isinstance(split, list):
            split = [_map_fields(row, prompt_field, completion_field, tokenizer, f"{path}:{name}") for row in split]
            split = datasets.Dataset.from_list([_normalise_row(row, prompt_style, rules, f"{path}:{name}", tokenizer) for row in split])
        else:
            split = _normalise_dataset(split, prompt_style, rules, f"{path}:{name}", tokenizer)
        if len(split) == 0:
            raise UsageError(f"{path}: split {name!r} is empty")
        out[name] = split
    return datasets.DatasetDict(out)


def _local_splits(path: Path) -> dict[str, Any]:
    """The splits of SFT data on disk: a JSONL file, a saved dataset, or what `countdown-lab prime` wrote."""
    if path.is_file():
        if is_parquet(path):
            return {"train": read_parquet(path)}
        with user_input():  # a line that is not JSON (countdown_env.files names file:line)
            return {"train": read_jsonl(path)}
    elif _is_saved_dataset(path):
        return _from_disk(path)
    else:
        # `countdown-lab prime` writes OUTPUT_DIR/dataset/ beside train.jsonl/test.jsonl: prefer the dataset.
        saved = sorted(child for child in path.iterdir() if child.is_dir() and _is_saved_dataset(child))
        if len(saved) == 1:
            return _from_disk(saved[0])
        elif (path / "train.jsonl").exists():
            with user_input():  # a line that is not JSON (countdown_env.files names file:line)
                return {name: read_jsonl(path / f"{name}.jsonl") for name in ("train", "test") if (path / f"{name}.jsonl").exists()}
        elif (path / "train.parquet").exists():
            return {name: read_parquet(path / f"{name}.parquet") for name in ("train", "test") if (path / f"{name}.parquet").exists()}
        else:
            raise UsageError(
                f"{path} holds no SFT data: expected a dataset saved with save_to_disk, train.jsonl/test.jsonl, train.parquet, "
                f"or exactly one saved dataset in a subfolder (found {len(saved)})"
            )


def recorded_prompt_style(path: str | Path) -> str | None:
    """The prompt style `countdown-lab prime` recorded for the data at `path`, if it did.

    prime writes OUTPUT_DIR/metadata.json beside dataset/, train.jsonl and test.jsonl, so the
    file is looked for in `path` (the output directory) and in its parent (one of those inside it).
    """
    path = Path(path)
    for folder in ([path] if path.is_dir() else []) + [path.parent]:
        meta = folder / "metadata.json"
        if meta.is_file():
            try:
                recorded = json.loads(meta.read_text()).get("prompt_style")
            except (json.JSONDecodeError, AttributeError):
                return None  # not prime's metadata
            return recorded if isinstance(recorded, str) else None
    return None


def check_prompt_style(path: str | Path, prompt_style: str) -> None:
    """Refuse data whose saved prompts were rendered in another style than the one SFT is configured for.

    prime saves a `prompt` column, which SFT uses as it is; without this check a `--preset paper-3b`
    run (tinyzero) would silently train on compact prompts and be evaluated on them too.
    """
    recorded = recorded_prompt_style(path)
    if recorded is not None and recorded != prompt_style:
        raise UsageError(
            f"{path} was written with prompt style {recorded!r} but SFT uses {prompt_style!r}: re-run "
            f"`countdown-lab prime --prompt-style {prompt_style}`, or pass `sft --prompt-style {recorded}`"
        )


def _map_fields(row: dict[str, Any], prompt_field: str | None, completion_field: str | None, tokenizer: Any, where: str) -> dict[str, Any]:
    """`row` with `prompt` and `completion` where it names them otherwise: the mapped fields, `query`, or chat `messages`."""
    row = dict(row)
    for field, name in ((prompt_field, "prompt"), (completion_field, "completion")):
        if field is not None:
            if field not in row:
                raise UsageError(f"{where}: no field {field!r} (--{name}-field); the rows have {sorted(row)}")
            row[name] = row[field]
    if row.get("prompt") is None:
        row.pop("prompt", None)
        for alias in PROMPT_ALIASES:
            if row.get(alias) is not None:
                row["prompt"] = row[alias]
                break
    if "prompt" not in row and "completion" not in row and row.get("messages") is not None:
        row["prompt"], row["completion"] = _from_messages(row["messages"], tokenizer, where)
    return row


def _from_messages(messages: list[dict[str, Any]], tokenizer: Any, where: str) -> tuple[str, str]:
    """(prompt, completion) of a chat: the turns before the last assistant turn through the tokenizer's chat
    template with its generation prompt, and that turn's text."""
    if not messages or messages[-1].get("role") != "assistant":
        raise UsageError(f"{where}: a 'messages' row must end with the assistant's turn (the completion)")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"{where}: 'messages' rows need a model whose tokenizer has a chat template, to render the prompt")
    head = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    prompt = tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True)
    return prompt, str(messages[-1]["content"])


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def _from_disk(path: Path) -> dict[str, Any]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _normalise_row(row: dict[str, Any], prompt_style: str, rules: Rules, where: str, tokenizer: Any = None) -> dict[str, Any]:
    """prompt/completion (+ numbers/target) from a prompt/completion row or a trace row
    (a `chat` trace row has its completion but no prompt: the model's template renders it)."""
    text = row.get("text", row.get("completion"))
    if row.get("prompt") is not None and "completion" in row:
        out = {"prompt": row["prompt"], "completion": row["completion"]}
    elif text is not None and ("numbers" in row or "nums" in row) and "target" in row:
        task = Task.from_dict(dict(row))
        with user_input():  # `chat` without a chat template
            out = {"prompt": render_prompt(task, prompt_style, rules, tokenizer=tokenizer), "completion": text}
    else:
        raise UsageError(
            f"{where}: a row needs 'prompt' and 'completion' (or 'query' and 'completion'), chat 'messages', or a trace's 'numbers',"
            f" 'target' and 'text'; got keys {sorted(row)} (--prompt-field/--completion-field name other columns)"
        )
    if not isinstance(out["prompt"], str) or not isinstance(out["completion"], str):
        raise UsageError(f"{where}: 'prompt' and 'completion' must be strings (conversational data is not supported here)")
    numbers = row.get("numbers", row.get("nums"))
    if numbers is not None and "target" in row:
        out["numbers"], out["target"] = [int(n) for n in numbers], int(row["target"])
    return out


def _normalise_dataset(dataset: Any, prompt_style: str, rules: Rules, where: str, tokenizer: Any = None) -> Any:
    columns = set(dataset.column_names)
    if not ({"prompt", "completion"} <= columns):
        # Trace rows: build prompts with the shared template (a row at a time; these sets are small).
        dataset = dataset.map(lambda row: _normalise_row(row, prompt_style, rules, where, tokenizer))
    if "nums" in dataset.column_names and "numbers" not in dataset.column_names:
        dataset = dataset.rename_column("nums", "numbers")
    if not ({"prompt", "completion"} <= set(dataset.column_names)):
        raise UsageError(f"{where}: needs 'prompt' and 'completion' columns or trace columns; got {sorted(columns)}")
    return dataset.select_columns([c for c in KEPT_COLUMNS if c in dataset.column_names])


def tasks_of(dataset: Any) -> list[Task] | None:
    """The tasks behind a split's rows, or None when the rows do not say (no numbers/target)."""
    if not {"numbers", "target"} <= set(dataset.column_names):
        return None
    return [Task(numbers=tuple(n), target=t) for n, t in zip(dataset["numbers"], dataset["target"], strict=True)]
