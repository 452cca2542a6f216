"""Export Countdown for veRL (the trainer TinyZero runs on): parquet files and a reward module.

The parquet rows follow TinyZero's `examples/data_preprocess/countdown.py` schema, which
veRL's PPO trainer reads (`data.train_files`, `data.val_files`):

    data_source  "countdown"
    prompt       [{"role": "user", "content": ...}]      (chat list; veRL applies the chat template)
    ability      "math"
    reward_model {"style": "rule", "ground_truth": {"target": int, "numbers": [int, ...]}}
    extra_info   {"split": "train" | "test", "index": int}
    nums, target the task again, so `countdown-lab` reads the files as a tasks file too

`compute_score` is the function veRL calls through `custom_reward_function.path/name`,
backed by `countdown_env.score_response` (no `eval`, exact arithmetic). The prompts state,
and the reward module scores under, the task preset's rules (`countdown_env.preset_rules`),
which the module records as `RULES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from countdown_env import DEFAULT_RULES, Rules, Task, chat_messages, generate_tasks, preset_rules, score_response, tinyzero_prompt
from countdown_env.errors import atomic_output

DATA_SOURCE = "countdown"
TEMPLATES = ("base", "instruct")
#: Where a decoded prompt + response sequence hands over to the model (TinyZero passes the
#: whole sequence to its scorer; newer veRL passes the response alone).
RESPONSE_MARKERS = ("<|im_start|>assistant", "Assistant:")

# Paths go into the generated code only as Python literals ({...!r}) or JSON-escaped comments, so
# no directory name (quotes, triple quotes, newlines) can break the module.
REWARD_MODULE = '''"""veRL reward function for Countdown (written by `countdown-lab export-verl`).

Use with: custom_reward_function.path=<this file> custom_reward_function.name=compute_score
"""
# this file: {path_json}
import sys

try:
    from rl.verl_export import compute_score as _compute_score
except ImportError:  # countdown-lab not installed in veRL's environment: use the checkout it came from
    sys.path.insert(0, {root!r})
    from rl.verl_export import compute_score as _compute_score

#: The rules the exported prompts state (the task preset's), as `countdown_env.Rules` fields.
RULES = {rules!r}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return _compute_score(data_source, solution_str, ground_truth, extra_info, rules=RULES)


__all__ = ["RULES", "compute_score"]
'''


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: dict[str, Any],
    extra_info: dict[str, Any] | None = None,
    *,
    rules: Rules | dict[str, Any] = DEFAULT_RULES,
    **kwargs: Any,
) -> float:
    """veRL's reward hook: the Countdown reward of `solution_str` for the task in `ground_truth`
    under `rules` (a `Rules` or its fields as a dict, as the written reward module passes them)."""
    for marker in RESPONSE_MARKERS:
        if marker in solution_str:
            solution_str = solution_str.rsplit(marker, 1)[1]
            break
    numbers = ground_truth.get("numbers", ground_truth.get("nums"))
    try:
        # Task validates exact integers: a ground truth of 2.5 is an error, never silently the task 2.
        task = Task(tuple(numbers), ground_truth["target"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"ground_truth must hold integer 'numbers' and 'target', got {ground_truth!r} ({err})") from None
    if isinstance(rules, dict):
        rules = Rules.from_kwargs(**rules)
    return float(score_response(solution_str, task, rules).reward)


def verl_row(task: Task, split: str, index: int, template: str = "base", rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    """One parquet row in TinyZero's/veRL's schema, its prompt stating `rules`."""
    if template == "base":
        prompt = [{"role": "user", "content": tinyzero_prompt(task, rules)}]
    elif template == "instruct":
        prompt = chat_messages(task, rules)
    else:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    return {
        "data_source": DATA_SOURCE,
        "prompt": prompt,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": {"target": task.target, "numbers": list(task.numbers)}},
        "extra_info": {"split": split, "index": index},
        "nums": list(task.numbers),
        "target": task.target,
    }


def export_verl(
    output_dir: str | Path,
    *,
    num_train: int = 327_680,
    num_test: int = 1024,
    seed: int = 0,
    preset: str = "tinyzero",
    template: str = "base",
    train_tasks: Sequence[Task] | None = None,
    rules: Rules | None = None,
) -> dict[str, Path]:
    """Write train.parquet, test.parquet (disjoint splits) and countdown_reward.py into `output_dir`.

    Prompts and reward follow `rules`, by default the preset's (`preset_rules(preset)`)."""
    rules = rules or preset_rules(preset)
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    test = generate_tasks(num_test, seed=seed, preset=preset, split="test")
    if train_tasks is None:
        train = generate_tasks(num_train, seed=seed, preset=preset, split="train")
    else:
        held_out = {t.key for t in test}
        train = [t for t in train_tasks if t.key not in held_out]
    paths = {}
    for split, tasks in (("train", train), ("test", test)):
        rows = [verl_row(task, split, i, template, rules) for i, task in enumerate(tasks)]
        paths[split] = output_dir / f"{split}.parquet"
        tmp = output_dir / f".{split}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, paths[split])  # an existing file is replaced only by a complete one
    reward = output_dir / "countdown_reward.py"
    fields = {k: v for k, v in asdict(rules).items() if v != getattr(DEFAULT_RULES, k)}  # only what differs: readable
    with atomic_output(reward) as f:
        f.write(
            REWARD_MODULE.format(path_json=json.dumps(str(reward.resolve())), root=str(Path(__file__).resolve().parents[1]), rules=fields)
        )
    paths["reward"] = reward
    return paths
