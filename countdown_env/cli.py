"""`countdown-lab generate | solve | score`."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from countdown_env.scoring import score_response
from countdown_env.solver import all_solutions, closest, solve
from countdown_env.tasks import PRESETS, SPLITS, Task, TaskConfig, iter_tasks, preset_rules, with_difficulty, write_tasks
from runtime.jsonl import iter_jsonl, write_jsonl_atomic


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate solvable tasks (JSONL, optional HF dataset)")
    p.add_argument("-n", "--num", type=_non_negative, default=1000, help="tasks per split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="tinyzero", choices=sorted(PRESETS))
    p.add_argument("--split", default="both", choices=[*SPLITS, "both", "none"], help="'both' writes train.jsonl and test.jsonl")
    p.add_argument("--test-fraction", type=float, default=None, help="share of all task keys that belong to the test split (default: the preset's, 0.1 for most)")
    p.add_argument("--no-difficulty", action="store_true", help="skip solution counts etc. (faster)")
    p.add_argument("--output", "-o", type=Path, required=True, help="output file (.jsonl) or, with --split both, a directory")
    p.add_argument("--dataset", action="store_true", help="also save a Hugging Face dataset next to the JSONL")
    p.set_defaults(func=_generate)

    p = sub.add_parser("solve", help="solve one task")
    p.add_argument("numbers", type=int, nargs="+")
    p.add_argument("--target", "-t", type=int, required=True)
    p.add_argument("--all", action="store_true", help="list all solutions up to commutativity/associativity")
    p.add_argument("--cap", type=int, default=100)
    p.add_argument("--preset", default="tinyzero", choices=sorted(PRESETS), help="solve under this task preset's rules")
    p.add_argument(
        "--tv-rules", action="store_true", help="TV show rules (= --preset classic): numbers at most once, whole non-negative intermediates"
    )
    p.set_defaults(func=_solve)

    p = sub.add_parser("score", help="score completions against tasks")
    p.add_argument("input", type=Path, help="JSONL rows with 'numbers', 'target' and the completion in 'text' (or 'response')")
    p.add_argument("--output", "-o", type=Path, help="write each row with its verdict here")
    p.add_argument(
        "--preset", default="tinyzero", choices=sorted(PRESETS), help="score under this task preset's rules (classic: numbers at most once)"
    )
    p.add_argument("--strict-ending", action="store_true", help="reward 0 unless the completion ends at </answer>")
    p.set_defaults(func=_score)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _generate(args: argparse.Namespace) -> int:
    config = TaskConfig.preset(args.preset, difficulty=False)
    splits = {"both": list(SPLITS), "none": [None]}.get(args.split, [args.split])
    for split in splits:
        path = args.output / f"{split}.jsonl" if args.split == "both" else args.output
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = iter_tasks(args.seed, config, split, args.test_fraction)
        chosen = list(islice(stream, args.num))
        tasks = [
            t if args.no_difficulty else with_difficulty(t, config.rules)
            for t in tqdm(chosen, desc=f"generate {split or 'all'}", file=sys.stderr)
        ]
        write_tasks(tasks, path)
        if args.dataset:
            from countdown_env.tasks import to_dataset

            to_dataset(tasks).save_to_disk(str(path.with_suffix("")))
        print(f"wrote {len(tasks)} {split or ''} tasks to {path}")
    return 0


def _solve(args: argparse.Namespace) -> int:
    rules = preset_rules("classic" if args.tv_rules else args.preset)
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
    rules = preset_rules(args.preset, strict_ending=args.strict_ending)
    outcomes: Counter[str] = Counter()
    total = 0.0
    scored = []
    for lineno, row in iter_jsonl(args.input):
        try:
            task = Task.from_dict(row)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{args.input}:{lineno}: not a JSON row with 'numbers' and 'target' ({err})") from None
        text = row.get("text", row.get("response"))
        if text is None:
            raise ValueError(f"{args.input}:{lineno}: row has no 'text' (or 'response') field")
        score = score_response(text, task, rules)
        outcomes[score.outcome.value] += 1
        total += score.reward
        scored.append({**row, **score.to_dict()})
    if args.output:
        write_jsonl_atomic(args.output, scored)
    n = sum(outcomes.values())
    print(
        json.dumps(
            {"n": n, "accuracy": outcomes["correct"] / max(n, 1), "mean_reward": total / max(n, 1), "outcomes": dict(outcomes)}, indent=2
        )
    )
    return 0
