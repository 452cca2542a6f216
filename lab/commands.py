"""`countdown-lab demo` (and, later, `experiment`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded default")
    p.add_argument("--output-dir", type=Path, default=Path("runs/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    """Interim demo until the experiment runner lands: generate, solve, score a batch."""
    from tqdm import tqdm

    from countdown_env import generate_tasks, score_response, solve, write_tasks

    start = time.perf_counter()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    tasks = generate_tasks(500, seed=args.seed, preset="tinyzero", difficulty=True)
    write_tasks(tasks, args.output_dir / "tasks.jsonl")
    outcomes: Counter[str] = Counter()
    for task in tqdm(tasks, desc="solve+score", file=sys.stderr):
        expression = solve(task.numbers, task.target)
        completion = f"<think>searching</think>\n<answer>{expression}</answer>"
        outcomes[score_response(completion, task).outcome.value] += 1
    summary = {
        "tasks": len(tasks),
        "solved_and_scored_correct": outcomes["correct"],
        "mean_solution_count": sum(t.solution_count or 0 for t in tasks) / len(tasks),
        "plus_minus_only_share": sum(bool(t.plus_minus_only) for t in tasks) / len(tasks),
        "seconds": round(time.perf_counter() - start, 2),
    }
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"tasks and summary in {args.output_dir}")
    return 0
