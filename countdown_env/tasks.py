"""Countdown tasks: generation presets, splits, difficulty, and files (the `Task` type is in `countdown_env.task`).

Every task is derived from `(seed, index)` alone, so any one can be regenerated; the
train/test split is a hash of the task's content, so a (sorted numbers, target) pair
lands in the same split whatever the seed and the two splits never share one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from countdown_env.errors import UsageError, user_input
from countdown_env.expression import Value, apply
from countdown_env.files import iter_jsonl, write_jsonl_atomic
from countdown_env.rules import DEFAULT_RULES, Rules
from countdown_env.solver import (
    Expr,
    allowed_value,
    combine,
    count_solutions,
    expr_to_text,
    reachable,
    reachable_using_all,
    solve,
    sub_multisets,
)
from countdown_env.task import Task

SPLITS = ("train", "test")
#: With a preset's `dev_fraction` > 0 the held-out keys are cut once more: `dev` (every design choice and any
#: tuning looks only at it) and `test` (reported, never tuned on). Disjoint for any seed, by the same hash.
ALL_SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TaskConfig:
    """How tasks are drawn. Build one from a preset with `TaskConfig.preset(name)`."""

    min_numbers: int = 3
    """Fewest numbers in a task."""
    max_numbers: int = 4
    """Most numbers in a task."""
    number_range: tuple[int, int] = (1, 99)
    """Inclusive range the numbers are drawn from (ignored when `large_numbers` is set)."""
    target_range: tuple[int, int] = (1, 100)
    """Inclusive range of targets."""
    large_numbers: tuple[int, ...] = ()
    """TV-show style: if set, draw 0-4 of these, the rest from two copies of `number_range`."""
    filter_trivial: bool = True
    """Drop tasks whose target is the sum of all numbers."""
    difficulty: bool = False
    """Compute solution count, plus/minus-only and minimum operations for each task
    (about 10 ms a task for 4 numbers; `countdown-lab generate` turns it on)."""
    rules: Rules = field(default_factory=Rules)
    """The rules every task must be solvable under."""
    test_fraction: float = 0.1
    """Share of all task keys held out from `train` (by a hash of the key): the `test` split, and `dev` if any."""
    dev_fraction: float = 0.0
    """Share of all task keys in the `dev` split, carved from the held-out ones (0: no dev split)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_numbers <= self.max_numbers <= 8:
            raise ValueError(f"need 1 <= min_numbers <= max_numbers <= 8, got {self.min_numbers}, {self.max_numbers}")
        for name in ("number_range", "target_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if self.number_range[0] < 0:
            raise ValueError(f"numbers must be non-negative, got number_range={self.number_range}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.dev_fraction < self.test_fraction:
            raise ValueError(f"dev_fraction must be in [0, test_fraction={self.test_fraction}), got {self.dev_fraction}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TaskConfig:
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown task preset {name!r}; choose one of {sorted(PRESETS)}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown task option(s) {unknown}; known: {sorted(known)}")
        return cls(**{**base, **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    # TinyZero's dataset: 3-4 numbers in 1..99, targets 1..100.
    "tinyzero": {"min_numbers": 3, "max_numbers": 4, "number_range": (1, 99), "target_range": (1, 100)},
    # The study's priming tasks: small numbers and targets.
    "priming": {"min_numbers": 3, "max_numbers": 4, "number_range": (1, 24), "target_range": (10, 25)},
    # What a 2.6M-parameter model learns on CPU in minutes (see bench/README.md, Calibration).
    "tiny": {"min_numbers": 3, "max_numbers": 3, "number_range": (1, 20), "target_range": (10, 30)},
    # The TV show: 6 numbers, large ones from {25, 50, 75, 100}, targets 100..999,
    # each number at most once, whole non-negative intermediates only.
    "classic": {
        "min_numbers": 6,
        "max_numbers": 6,
        "number_range": (1, 10),
        "target_range": (100, 999),
        "large_numbers": (25, 50, 75, 100),
        "rules": Rules(use_all_numbers=False, integer_intermediates=True, allow_negative_intermediates=False),
    },
    # The model organism (the study on tiny base models): 3 numbers in 1..12, targets 10..50
    # reached with whole, non-negative steps (2,010 tasks). Search pays here: one first step
    # finished greedily solves 17% of the tasks, eight distinct ones 90% (`countdown-lab
    # pretrain` prints the check). A fifth of the tasks (410) are held out for evaluation.
    "organism": {
        "min_numbers": 3,
        "max_numbers": 3,
        "number_range": (1, 12),
        "target_range": (10, 50),
        "rules": Rules(integer_intermediates=True, allow_negative_intermediates=False),
        "test_fraction": 0.2,
        "dev_fraction": 0.1,  # half of the held-out tasks are for design and tuning (dev), half for reports (test)
    },
    # The study's recipe (paper-3b): TinyZero's tasks scored by the study's scorer (`Rules.scorer`, docs/rules.md).
    # Its bounds are the widest `Rules` takes (answers of 4096 characters, nesting 100, values up to 10**1000),
    # so that only answers Python itself could barely evaluate fall outside them.
    "study": {
        "min_numbers": 3,
        "max_numbers": 4,
        "number_range": (1, 99),
        "target_range": (1, 100),
        "rules": Rules(
            scorer="study",
            allow_unary_minus=True,
            allow_trailing_equals=False,
            max_answer_chars=4096,
            max_depth=100,
            max_magnitude=10**1000,
        ),
    },
}


def preset_rules(name: str, **overrides: Any) -> Rules:
    """The rules of task preset `name` (e.g. `classic`: each number at most once, whole
    non-negative intermediates), with single rules overridden (`strict_ending=True`).

    The one source of a run's rules: the tasks of a preset are solvable under them, and the
    prompt, the scorer, the env, RL, evaluation, priming and the veRL export all use them.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown task preset {name!r}; choose one of {sorted(PRESETS)}")
    known = {f.name for f in fields(Rules)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; known rules: {sorted(known)}")
    if "operators" in overrides:
        overrides["operators"] = tuple(overrides["operators"])
    base: Rules = PRESETS[name].get("rules", DEFAULT_RULES)
    return base.with_(**overrides)


def unseen_range_config(config: TaskConfig) -> TaskConfig:
    """Tasks with the same count of numbers as `config` but ranges it never draws: targets just
    above its target range (as wide again), numbers from its range widened to twice its top.

    Out-of-distribution in values only, so a model that learned the skill can still score (the
    older OOD split, one more number, scores 0 for every tiny model and tells nothing).
    """
    (n_lo, n_hi), (t_lo, t_hi) = config.number_range, config.target_range
    return replace(config, number_range=(n_lo, 2 * n_hi), target_range=(t_hi + 1, 2 * t_hi - t_lo + 1), difficulty=False)


def subset_config(config: TaskConfig) -> TaskConfig:
    """The "any subset" family of `config`'s tasks: same counts and ranges, but a target may need
    only some of the numbers (each at most once). A task family a model trained with
    `use_all_numbers` never saw: the transfer split of `countdown-lab analyze`."""
    return replace(config, rules=config.rules.with_(use_all_numbers=False), difficulty=False)


def _preset_of(config: TaskConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


# Held-out families of the organism's tasks (what `countdown-lab analyze` measures transfer on).
PRESETS["organism-unseen"] = _preset_of(unseen_range_config(TaskConfig.preset("organism")))
PRESETS["organism-subset"] = _preset_of(subset_config(TaskConfig.preset("organism")))


def _rng(seed: int, index: int) -> random.Random:
    # String seeds go through SHA-512, so streams are stable across processes and
    # Python versions and (seed, index) pairs never collide.
    return random.Random(f"countdown:{seed}:{index}")


def _draw_numbers(rng: random.Random, config: TaskConfig) -> list[int]:
    count = rng.randint(config.min_numbers, config.max_numbers)
    lo, hi = config.number_range
    if not config.large_numbers:
        return [rng.randint(lo, hi) for _ in range(count)]
    n_large = rng.randint(0, min(4, count, len(config.large_numbers)))
    small_pool = [n for n in range(lo, hi + 1) for _ in range(2)]
    return rng.sample(config.large_numbers, n_large) + rng.sample(small_pool, count - n_large)


def split_of(key: tuple[tuple[int, ...], int], test_fraction: float, dev_fraction: float = 0.0) -> str:
    """'dev' for a stable `dev_fraction` of all task keys, 'test' for the rest of a stable `test_fraction`,
    else 'train' (one hash of the key, so the three are disjoint and a key never changes split)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return "train" if u >= test_fraction else "dev" if u < dev_fraction else "test"


def _random_expressions(numbers: Sequence[int], rng: random.Random, rules: Rules) -> list[tuple[Value, Expr]]:
    """Combine random pairs with random operators until two values are left, then every
    allowed operation on those two: the (value, expression) pairs of one random tree
    shape. Empty if a step breaks the rules. With `use_all_numbers=False` a random
    subset of at least two numbers is used."""
    items: list[tuple[Value, Expr]] = [(n, n) for n in numbers]
    if not rules.use_all_numbers:
        items = rng.sample(items, rng.randint(2 if len(items) > 1 else 1, len(items)))
    while len(items) > 2:
        i, j = rng.sample(range(len(items)), 2)
        (a, ea), (b, eb) = items[i], items[j]
        op = rng.choice(rules.operators)
        value = apply(op, a, b)
        if value is None or not allowed_value(value, rules):
            return []
        items = [item for k, item in enumerate(items) if k not in (i, j)] + [(value, (op, ea, eb))]
    if len(items) == 1:
        return items
    # The last step tries every operator and order: four times the hits for one tree.
    (a, ea), (b, eb) = items
    return [(value, (op, eb, ea) if swapped else (op, ea, eb)) for op, swapped, value in combine(a, b, rules)]


def task_at(seed: int, index: int, config: TaskConfig | None = None) -> Task:
    """The task at `(seed, index)`: solvable under `config.rules` by construction.

    The target is the value of an expression built over the drawn numbers, so a solution
    exists by construction. Random expressions are tried first (cheap); if a few dozen
    miss the target range, the target is drawn from every value the numbers reach, and
    only if the numbers reach no admissible target at all are new numbers drawn from the
    same stream (possible only for extreme configs; bounded, with a clear error).
    """
    config = config or TaskConfig()
    rules = config.rules
    rng = _rng(seed, index)
    lo, hi = config.target_range
    found: tuple[list[int], int, Expr] | None = None
    for _ in range(100):
        numbers = _draw_numbers(rng, config)
        trivial = sum(numbers) if config.filter_trivial else None
        for _ in range(64):
            hits = [(v, e) for v, e in _random_expressions(numbers, rng, rules) if isinstance(v, int) and lo <= v <= hi and v != trivial]
            if hits:
                target, expr = rng.choice(hits)
                found = (numbers, target, expr)
                break
        else:
            values = reachable(numbers, rules)
            targets = sorted(v for v in values if isinstance(v, int) and lo <= v <= hi and v != trivial)
            if targets:
                target = rng.choice(targets)
                found = (numbers, target, values[target])
        if found:
            break
    if found is None:
        raise ValueError(f"no solvable task found for config {config}; widen target_range or number_range")
    numbers, target, expr = found
    task = Task(tuple(numbers), target, solution=expr_to_text(expr), seed=seed, index=index)
    return with_difficulty(task, rules) if config.difficulty else task


def with_difficulty(task: Task, rules: Rules = DEFAULT_RULES) -> Task:
    """The task with solution count, plus/minus-only and minimum operations filled in."""
    plus_minus = rules.with_(operators=tuple(op for op in rules.operators if op in "+-") or ("+",))
    return replace(
        task,
        solution_count=count_solutions(task.numbers, task.target, rules),
        plus_minus_only=solve(task.numbers, task.target, plus_minus) is not None,
        min_operations=_min_operations(task.numbers, task.target, rules),
    )


def _min_operations(numbers: Sequence[int], target: int, rules: Rules) -> int:
    if rules.use_all_numbers:
        return len(numbers) - 1
    for sub in sub_multisets(tuple(sorted(numbers))):  # smallest first
        if target in reachable_using_all(sub, rules):
            return len(sub) - 1
    raise ValueError(f"{numbers} cannot reach {target}")


#: Consecutive indices without a new task after which a config counts as exhausted.
MAX_MISSES = 20_000


def iter_tasks(
    seed: int, config: TaskConfig | None = None, split: str | None = None, test_fraction: float | None = None, start: int = 0
) -> Iterator[Task]:
    """Distinct tasks for indices start, start+1, ...; only those in `split` if given.

    Raises ValueError once `MAX_MISSES` consecutive indices give no new task: a small
    config (say 3 numbers in 1..5) has fewer distinct tasks than were asked for, and
    looping forever would hide that.
    """
    if split is not None and split not in ALL_SPLITS:
        raise ValueError(f"split must be one of {ALL_SPLITS} or None, got {split!r}")
    dev_fraction = (config or TaskConfig()).dev_fraction if test_fraction is None else 0.0
    if split == "dev" and dev_fraction == 0.0:
        raise ValueError("this task preset has no dev split (dev_fraction 0)")
    if test_fraction is None:
        test_fraction = (config or TaskConfig()).test_fraction
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    seen: set[tuple[tuple[int, ...], int]] = set()
    index = start
    misses = 0
    while True:
        task = task_at(seed, index, config)
        index += 1
        if task.key in seen or (split is not None and split_of(task.key, test_fraction, dev_fraction) != split):
            misses += 1
            if misses >= MAX_MISSES:
                raise ValueError(
                    f"found only {len(seen)} distinct {split or ''} tasks: {MAX_MISSES} draws in a row gave no new one; "
                    "ask for fewer tasks or widen number_range/target_range"
                )
            continue
        misses = 0
        seen.add(task.key)
        yield task


def generate_tasks(
    n: int,
    *,
    seed: int,
    preset: str = "tinyzero",
    split: str | None = None,
    test_fraction: float | None = None,
    config: TaskConfig | None = None,
    **options: Any,
) -> list[Task]:
    """`n` distinct tasks, each solvable under the preset's rules; same seed, same tasks.

    `options` override fields of the preset's `TaskConfig` (e.g. `difficulty=False`).
    `split="train"`/`"test"` keeps only tasks of that split; the splits are disjoint.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    config = config or TaskConfig.preset(preset, **options)
    out: list[Task] = []
    if n == 0:
        return out
    for task in iter_tasks(seed, config, split, test_fraction):
        out.append(task)
        if len(out) >= n:
            break
    return out


# ---- files and datasets ------------------------------------------------------------


def write_tasks(tasks: Iterable[Task], path: str | Path) -> Path:
    """Write tasks as JSONL (one `{"numbers": [...], "target": n, ...}` per line), atomically: an
    existing file is replaced only once every task is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, (task.to_dict() for task in tasks))
    return path


def read_tasks(path: str | Path) -> list[Task]:
    """Read a tasks file: JSONL (`numbers`/`target`) or parquet (`nums`/`target`, TinyZero).
    (`runtime.hub.load_tasks` also takes a hub dataset id.)"""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tasks file {path} does not exist")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:  # pragma: no cover - pyarrow ships with datasets
            raise ImportError("reading parquet tasks needs pyarrow: pip install pyarrow") from err
        tasks = []
        for rownum, row in enumerate(pq.read_table(path).to_pylist()):
            try:
                tasks.append(Task.from_dict(row))
            except (ValueError, TypeError) as err:
                raise UsageError(f"{path}: row {rownum}: not a task row ({err})") from None
        return tasks
    tasks = []
    with user_input():  # a line that is not JSON (countdown_env.files names file:line)
        rows = list(iter_jsonl(path))
    _refuse_torn_tail(path, rows[-1][0] if rows else 0)
    for lineno, row in rows:
        try:
            tasks.append(Task.from_dict(row))
        except (ValueError, TypeError) as err:
            raise UsageError(f"{path}:{lineno}: not a task row ({err})") from None
    return tasks


def _refuse_torn_tail(path: Path, last_row: int) -> None:
    """Raise if the JSONL reader skipped a last line without a newline that is not JSON.

    The reader skips such a line because a log being appended to may end in a row still being written;
    a tasks file is the user's input, finished, so that line is a mistake (a cut copy, a typo) and
    dropping it silently would run on fewer tasks than the file holds."""
    with path.open() as f:  # the reader's reading of lines (universal newlines), so numbers agree
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n") and lines[-1].strip() and last_row != len(lines):
        raise UsageError(
            f"{path}:{len(lines)}: not JSON, and the file ends without a newline: a truncated file? Each line must be one JSON object"
        )


def to_dataset(tasks: Sequence[Task]) -> Any:
    """A Hugging Face `datasets.Dataset` with `numbers`, `target` and metadata columns."""
    import datasets

    rows = [task.to_dict() for task in tasks]
    columns = {k: [row.get(k) for row in rows] for k in dict.fromkeys(k for row in rows for k in row)}
    return datasets.Dataset.from_dict(columns)
