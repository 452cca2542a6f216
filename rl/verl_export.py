"""Export Countdown for veRL (the trainer TinyZero runs on): parquet files and a reward module.

The parquet rows follow TinyZero's `examples/data_preprocess/countdown.py` schema, which
veRL's PPO trainer reads (`data.train_files`, `data.val_files`):

    data_source  "countdown"
    prompt       [{"role": "user", "content": ...}]      (chat list; veRL applies the chat template)
    ability      "math"
    reward_model {"style": "rule", "ground_truth": {"target": int, "numbers": [int, ...]}}
    extra_info   {"split": "train" | "test", "index": int}
    nums, target the task again, so `countdown-lab` reads the files as a tasks file too

`compute_score` is the function veRL calls through `custom_reward_function.path/name`. The written
module is self-contained: veRL's environment pins versions that clash with ours, so it carries
the scorer (`countdown_env`'s task, rules, expression and scoring modules, copied from their source
at export time by `standalone_scorer_source`, so there is still one definition) and needs only the
standard library of Python 3.10+. The prompts state, and the module scores under, the task
preset's rules (`countdown_env.preset_rules`), which it records as `RULES`; `--preset study`
records `scorer: "study"`, the study's own scorer (last line only; docs/rules.md). veRL passes
the response alone as `solution_str`, which is what `score_response` reads.

Templates: `base` is TinyZero's prompt as one user turn, ending inside `<think>`; `instruct` is the
study's `qwen-instruct` turns (system + user, `chat_messages`), which veRL renders with the model's
chat template. veRL's messages end at the generation prompt, so `instruct` lacks the study's
prefilled "Let me solve this step by step.\n<think>" (`chat_prompt` adds it in this lab).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from countdown_env import DEFAULT_RULES, Rules, Task, TaskConfig, chat_messages, iter_tasks, preset_rules, score_response, tinyzero_prompt
from countdown_env.errors import UsageError, user_input
from countdown_env.files import atomic_output

DATA_SOURCE = "countdown"
TEMPLATES = ("base", "instruct")
#: The scorer's modules, in dependency order, whose source the reward module carries.
SCORER_MODULES = ("countdown_env.task", "countdown_env.rules", "countdown_env.expression", "countdown_env.scoring")  # in import order
#: A chat template that renders the user turn as is: veRL then feeds the raw TinyZero prompt to a base model,
#: as the study did (`actor_rollout_ref.model.custom_chat_template`; docs/verl.md).
RAW_CHAT_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"
#: Exports at least this large show a progress bar (327,680 tasks take minutes to generate).
PROGRESS_FROM = 5_000


def verl_score(solution_str: str, ground_truth: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """veRL's verdict on `solution_str` (the response as veRL passes it, scored whole): the reward as
    `score` and correctness as `acc`, which veRL logs per data source (instead of the mean reward, which
    mixes in the format credit). Copied verbatim into the reward module, so it uses only scorer names."""
    try:
        # Task validates exact integers: a ground truth of 2.5 is an error, never silently the task 2. A ground
        # truth that is no mapping (a string, a list, None) has no .get: the same ValueError, not AttributeError.
        numbers = ground_truth.get("numbers", ground_truth.get("nums"))
        task = Task(tuple(numbers), ground_truth["target"])
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        try:
            shown = repr(ground_truth)
        except ValueError:  # an integer too long for str()
            shown = f"a {type(ground_truth).__name__}"
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise ValueError(f"ground_truth must hold integer 'numbers' and 'target', got {shown} ({err})") from None
    score = score_response(solution_str, task, rules)
    return {"score": float(score.reward), "acc": score.correct}


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: dict[str, Any],
    extra_info: dict[str, Any] | None = None,
    *,
    rules: Rules | dict[str, Any] = DEFAULT_RULES,
    **kwargs: Any,
) -> dict[str, Any]:
    """veRL's reward hook, in process: `verl_score` under `rules` (a `Rules` or its fields as a dict).
    Extra keywords (veRL passes `reward_router_address`, `reward_kwargs`, ...) are accepted and ignored."""
    if isinstance(rules, dict):
        rules = Rules.from_kwargs(**rules)
    return verl_score(solution_str, ground_truth, rules)


def _top_level_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _module_body(name: str, defined: dict[str, str]) -> str:
    """The source of module `name` without its docstring, `__future__` import, imports from
    `countdown_env` (their names are defined earlier in the same file) and `TYPE_CHECKING` block."""
    source = inspect.getsource(importlib.import_module(name))
    tree = ast.parse(source)
    drop: set[int] = set()
    for i, node in enumerate(tree.body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        ours = isinstance(node, ast.ImportFrom) and (node.module == "__future__" or (node.module or "").split(".")[0] == "countdown_env")
        type_checking = isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        if docstring or ours or type_checking:
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            outside = [m for m in modules if m.split(".")[0] not in sys.stdlib_module_names]
            if outside:  # the reward module must run on a bare Python
                raise RuntimeError(f"{name} imports {outside}, outside the standard library: the veRL reward module cannot carry it")
        for defined_name in _top_level_names(node):
            if defined.setdefault(defined_name, name) != name:  # a later definition would silently replace an earlier one
                raise RuntimeError(f"{defined_name} is defined in both {defined[defined_name]} and {name}")
    kept = [line for n, line in enumerate(source.splitlines(), 1) if n not in drop]
    return f"# ---- {name} ----\n" + "\n".join(kept).strip() + "\n"


def standalone_scorer_source() -> str:
    """Python source defining the scorer (`Rules`, `Task`, `score_response`, ...) and `verl_score`, with
    standard-library imports only: `SCORER_MODULES` concatenated, then `verl_score` copied from here."""
    defined: dict[str, str] = {}
    bodies = [_module_body(name, defined) for name in SCORER_MODULES]
    return "\n\n".join([*bodies, "# ---- rl.verl_export ----\n" + inspect.getsource(verl_score)])


REWARD_MODULE = '''"""veRL reward function for Countdown (written by `countdown-lab export-verl`).

Use with: custom_reward_function.path=<this file> custom_reward_function.name=compute_score

Self-contained: standard library only (Python 3.10+). The code below the line is countdown-lab's
scorer (`countdown_env`), copied from its source at export time; re-export to update it.
"""
from __future__ import annotations

import sys as _sys


class _Loading:
    """Stands in for this module in `sys.modules` while it loads: veRL loads it by path without registering it
    there, and `dataclasses` looks a class's module up in `sys.modules` to read its (string) annotations."""


if __name__ not in _sys.modules:
    _sys.modules[__name__] = _stand_in = _Loading()
    _stand_in.__dict__ = globals()

{scorer}

#: The rules the exported prompts state (the task preset's), as the `Rules` fields that differ from the defaults.
RULES = {rules}
_RULES = Rules.from_kwargs(**RULES)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """veRL's reward hook: {{"score": reward, "acc": correct}} for the response `solution_str`, scored as passed.
    Extra keywords (veRL passes `reward_router_address`, `reward_kwargs`, ...) are accepted and ignored."""
    return verl_score(solution_str, ground_truth, _RULES)


if isinstance(_sys.modules.get(__name__), _Loading):
    del _sys.modules[__name__]
'''


def _literal(value: Any) -> str:
    """`value` as Python source, a power of ten as `10**k` (the study's bound would be a 1001-digit line)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10**6:
        k = len(str(value)) - 1
        if value == 10**k:
            return f"10**{k}"
    return repr(value)


def reward_module_source(rules: Rules = DEFAULT_RULES) -> str:
    """The text of `countdown_reward.py` scoring under `rules` (e.g. `preset_rules("study")`: the study's
    scorer, recorded as `RULES["scorer"]`)."""
    fields = {k: v for k, v in asdict(rules).items() if v != getattr(DEFAULT_RULES, k)}  # only what differs: readable
    text = "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in fields.items()) + "}"
    return REWARD_MODULE.format(scorer=standalone_scorer_source(), rules=text)


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


def _generate(n: int, seed: int, preset: str, split: str) -> list[Task]:
    """`generate_tasks(n, seed=seed, preset=preset, split=split)`, with a progress bar for large `n`."""
    from tqdm.auto import tqdm

    tasks = iter_tasks(seed, TaskConfig.preset(preset), split)
    with user_input(f"{split} tasks"):  # only iter_tasks raises here: the preset has fewer distinct tasks than asked
        return list(tqdm(itertools.islice(tasks, n), total=n, desc=f"{split} tasks", unit="task", disable=n < PROGRESS_FROM))


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
    test = _generate(num_test, seed, preset, "test")
    if train_tasks is None:
        train = _generate(num_train, seed, preset, "train")
    else:
        held_out = {t.key for t in test}
        train = [t for t in train_tasks if t.key not in held_out]
        if not train:  # e.g. --tasks test.parquet: every task is a test task, so training on them would be testing on train
            raise UsageError(
                f"all {len(train_tasks)} train tasks given are among the {len(test)} test tasks (seed {seed}); nothing would be left "
                "to train on: give train-split tasks (countdown-lab generate --split train) or another --seed"
            )
        if len(train) < len(train_tasks):
            print(f"export-verl: {len(train_tasks) - len(train)} of the {len(train_tasks)} train tasks given are test tasks: "
                  f"left out of train.parquet ({len(train)} written)", file=sys.stderr)  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, tasks in (("train", train), ("test", test)):
        rows = [verl_row(task, split, i, template, rules) for i, task in enumerate(tasks)]
        paths[split] = output_dir / f"{split}.parquet"
        tmp = output_dir / f".{split}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, paths[split])  # an existing file is replaced only by a complete one
    reward = output_dir / "countdown_reward.py"
    with atomic_output(reward) as f:
        f.write(reward_module_source(rules))
    paths["reward"] = reward
    return paths
