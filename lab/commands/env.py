"""`countdown-lab generate | solve | score`."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from countdown_env.errors import UsageError, input_file, output_dir, output_file, user_input
from countdown_env.files import iter_jsonl, write_jsonl_atomic
from countdown_env.rules import Rules
from countdown_env.scoring import score_response
from countdown_env.solver import all_solutions, closest, solve
from countdown_env.tasks import PRESETS, SPLITS, Task, TaskConfig, iter_tasks, preset_rules, with_difficulty, write_tasks
from runtime.config import add_option

#: Most tasks `generate` writes per split (a million tasks take minutes and ~60 MB of JSONL).
MAX_GENERATE = 1_000_000
#: Most numbers `solve` takes: six (the TV show) take seconds in the worst case, seven take minutes.
MAX_SOLVE_NUMBERS = 6


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate solvable tasks (JSONL, optional HF dataset)")
    p.add_argument("-n", "--num", type=_bounded(0, MAX_GENERATE), default=1000, help=f"tasks per split (at most {MAX_GENERATE:,})")
    p.add_argument("--seed", type=int, default=0)
    _add_task_preset(p, "the tasks' preset: sizes, ranges and rules")
    p.add_argument("--split", default="both", choices=[*SPLITS, "both", "none"], help="'both' writes train.jsonl and test.jsonl")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="share of all task keys that belong to the test split (default: the preset's, 0.1 for most)",
    )
    p.add_argument("--no-difficulty", action="store_true", help="skip solution counts etc. (faster)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--output-dir", type=Path, metavar="DIR", help="write DIR/<split>.jsonl (train.jsonl and test.jsonl with --split both)"
    )
    # With --split both, --output naming a directory is the old spelling of --output-dir (see _outputs).
    where.add_argument("--output", "-o", type=Path, metavar="FILE", help="one split (--split train, test or none) into this .jsonl file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dataset", action="store_true", help="also save a Hugging Face dataset next to the JSONL")
    p.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="also push the tasks (one split per --split) to this hub dataset repository (needs a login token)",
    )
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "solve",
        help="solve one task",
        description=f"Solve one task: at most {MAX_SOLVE_NUMBERS} non-negative integers (the search grows so fast that "
        f"{MAX_SOLVE_NUMBERS + 1} numbers can take minutes), each and the target at most {Rules().max_magnitude:,} in magnitude.",
    )
    p.add_argument("numbers", type=int, nargs="+", help=f"1 to {MAX_SOLVE_NUMBERS} non-negative integers")
    p.add_argument("--target", "-t", type=int, required=True)
    p.add_argument("--all", action="store_true", help="list all solutions up to commutativity/associativity")
    p.add_argument("--cap", type=_bounded(1, None), default=100, help="most solutions --all lists (>= 1)")
    _add_task_preset(p, "solve under this task preset's rules")
    p.add_argument(
        "--tv-rules",
        action="store_true",
        help="TV show rules (= --task-preset classic): numbers at most once, whole non-negative intermediates",
    )
    p.set_defaults(func=_solve)

    p = sub.add_parser("score", help="score completions against tasks")
    p.add_argument("input", type=Path, help="JSONL rows with 'numbers', 'target' and the completion in 'text' (or 'response')")
    p.add_argument("--output", "-o", type=Path, metavar="FILE", help="write each row with its verdict here (JSONL)")
    _add_task_preset(p, "score under this task preset's rules (classic: numbers at most once)")
    p.add_argument("--strict-ending", action="store_true", help="reward 0 unless the completion ends at </answer>")
    p.set_defaults(func=_score)


def _add_task_preset(p: argparse.ArgumentParser, text: str) -> None:
    add_option(p, "--task-preset", old=("--preset",), default="tinyzero", choices=sorted(PRESETS), help=f"{text} (default %(default)s)")


def _bounded(low: int, high: int | None):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be >= {low}" + (f" and <= {high:,}" if high is not None else "") + f", got {value}")
        return value

    return parse


def _generate(args: argparse.Namespace) -> int:
    if args.test_fraction is not None and not 0.0 < args.test_fraction < 1.0:
        raise UsageError(f"--test-fraction must be between 0 and 1 (exclusive), got {args.test_fraction}")
    config = TaskConfig.preset(args.task_preset, difficulty=False)
    splits = {"both": list(SPLITS), "none": [None]}.get(args.split, [args.split])
    if args.test_fraction is None:
        check_split_sizes(args.task_preset, {split: args.num for split in splits}, "-n")
    if args.push_to_hub:
        from runtime.hub import offline

        if offline():  # before any file is written, not after
            raise UsageError(f"--push-to-hub {args.push_to_hub}: the hub is offline (HF_HUB_OFFLINE=1)")
    paths = _outputs(args, splits)
    for split, path in zip(splits, paths, strict=True):
        # A preset too large to count up front (`check_split_sizes`) says it ran out of tasks here, as one line.
        stream = user_stream(iter_tasks(args.seed, config, split, args.test_fraction), "-n")
        # One bar over drawing and (optionally) difficulty: a large -n shows progress from the start.
        bar = tqdm(total=args.num, desc=f"generate {split or 'all'}", unit="task", file=sys.stderr, disable=args.quiet)
        tasks = []
        for t in islice(stream, args.num):
            tasks.append(t if args.no_difficulty else with_difficulty(t, config.rules))
            bar.update(1)
        bar.close()
        write_tasks(tasks, path)
        if args.dataset:
            from countdown_env.tasks import to_dataset

            to_dataset(tasks).save_to_disk(str(path.with_suffix("")))
        print(f"wrote {len(tasks)} {split or ''} tasks to {path}")
        if args.push_to_hub:
            from runtime.hub import push_rows

            push_rows((t.to_dict() for t in tasks), args.push_to_hub, split=split or "train")
    return 0


def user_stream(stream: Iterator[Task], what: str) -> Iterator[Task]:
    """`stream`, with a ValueError it raises (a preset out of distinct tasks) turned into a one-line UsageError;
    errors of the code consuming it are not touched."""
    with user_input(what):
        yield from stream


def check_split_sizes(task_preset: str, wanted: dict[str | None, int], flag: str) -> None:
    """A one-line error when more tasks are asked of a split (None: all splits) than the preset has there,
    counted before any work (`lab.pipeline.config.split_sizes`; presets too large to count pass)."""
    from lab.pipeline.config import split_sizes

    sizes = split_sizes(task_preset)
    for split, n in wanted.items():
        have = sum(sizes.values()) if split is None else sizes.get(split)
        if sizes and have is not None and n > have:
            raise UsageError(
                f"{flag} {n}: task preset {task_preset!r} has only {have:,} {split or 'distinct'}{'-split' if split else ''} tasks"
            )


def _outputs(args: argparse.Namespace, splits: list[str | None]) -> list[Path]:
    """The file of each split, checked writable: DIR/<split>.jsonl under --output-dir, else --output."""
    folder = args.output_dir
    if folder is None and args.split == "both":
        if args.output.suffix in (".jsonl", ".json"):
            raise UsageError(
                f"--output {args.output} is one file, one split: add --split train, test or none, or give --output-dir DIR for both"
            )
        # The old spelling: --output DIR for both splits.
        print("note: generate --output DIR (with --split both) is now --output-dir DIR; the old spelling will go", file=sys.stderr)
        folder = args.output
    if folder is None:
        output_file(args.output, "--output")
        return [args.output]
    output_dir(folder, "--output-dir")
    paths = [folder / f"{split or 'tasks'}.jsonl" for split in splits]
    for path in paths:
        output_file(path, "--output-dir")
    return paths


def _solve(args: argparse.Namespace) -> int:
    rules = preset_rules("classic" if args.tv_rules else args.task_preset)
    if len(args.numbers) > MAX_SOLVE_NUMBERS:
        raise UsageError(f"solve takes at most {MAX_SOLVE_NUMBERS} numbers (got {len(args.numbers)}); the search for more takes minutes")
    with user_input("solve"):
        Task(tuple(args.numbers), args.target)  # the same validation as any task: non-negative integers
    too_big = [n for n in (*args.numbers, args.target) if abs(n) > rules.max_magnitude]
    if too_big:
        raise UsageError(
            f"numbers and target must be at most {rules.max_magnitude:,} in magnitude; {len(str(too_big[0]))}-digit value given"
        )
    if args.all:
        solutions = all_solutions(args.numbers, args.target, rules, cap=args.cap)
        print("\n".join(solutions) if solutions else "no solution")
        return 0 if solutions else 1
    found = solve(args.numbers, args.target, rules)
    if found is not None:
        print(f"{found} = {args.target}")
        return 0
    near = closest(args.numbers, args.target, rules)
    print(f"no solution; closest: {near.expression} = {near.value} (off by {near.distance})")
    return 1


def _score(args: argparse.Namespace) -> int:
    rules = preset_rules(args.task_preset, strict_ending=args.strict_ending)
    outcomes: Counter[str] = Counter()
    total = 0.0
    input_file(args.input)
    if args.output:
        output_file(args.output, "--output", inputs=(args.input,))
    scored = []
    with user_input():  # a line that is not JSON (countdown_env.files names file:line)
        rows = list(iter_jsonl(args.input))
    for lineno, row in rows:
        try:
            task = Task.from_dict(row)
        except (ValueError, TypeError) as err:
            raise UsageError(f"{args.input}:{lineno}: not a JSON row with 'numbers' and 'target' ({err})") from None
        text = row.get("text", row.get("response"))
        if text is None:
            raise UsageError(f"{args.input}:{lineno}: row has no 'text' (or 'response') field")
        score = score_response(text, task, rules)
        outcomes[score.outcome.value] += 1
        total += score.reward
        scored.append({**row, **score.to_dict()})
    if args.output:
        # All rows are scored before the output is replaced at once: a bad row leaves an existing output untouched.
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(args.output, scored)
    n = sum(outcomes.values())
    print(
        json.dumps(
            {"n": n, "accuracy": outcomes["correct"] / max(n, 1), "mean_reward": total / max(n, 1), "outcomes": dict(outcomes)}, indent=2
        )
    )
    return 0
