"""Synthetic priming traces generated per second, per condition and style (one process, one thread).

    nice -n 5 .venv/bin/python bench/traces_bench.py [--num 1000] [--preset priming]

Prints a Markdown table (traces/s, mean and max completion length, mean failed paths) for
`bench/README.md`. Tasks are generated before timing starts; the time covers search,
rendering and the scorer's check of every answer. The solver's reachable-value cache warms up
over the run (later rows reuse sub-results of earlier ones); time one condition per process
(`--conditions only_backtracking --styles compact`) for a cold figure.
"""

from __future__ import annotations

import argparse
import os
import time

from countdown_env import generate_tasks
from priming import CONDITIONS, TraceConfig, generate_traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=1000, help="tasks per measurement")
    parser.add_argument("--preset", default="priming")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), help="conditions to time, in order")
    parser.add_argument("--styles", nargs="+", default=["compact", "full"])
    args = parser.parse_args()
    tasks = generate_tasks(args.num, seed=args.seed, preset=args.preset, split="train")
    print(f"{args.num} {args.preset}-preset tasks, seed {args.seed}, load {os.getloadavg()[0]:.1f}\n")
    print("| style | condition | traces/s | mean chars | max chars | mean failed paths |")
    print("|---|---|---|---|---|---|")
    for style in args.styles:
        config = TraceConfig.for_style(style)
        for condition in args.conditions:
            start = time.perf_counter()
            traces = generate_traces(tasks, condition, seed=args.seed, config=config)
            elapsed = time.perf_counter() - start
            lengths = [len(t.text) for t in traces]
            dead = sum(t.dead_ends for t in traces) / len(traces)
            print(
                f"| {style} | {condition} | {len(traces) / elapsed:,.0f} | {sum(lengths) / len(lengths):.0f} | {max(lengths)} | {dead:.2f} |"
            )


if __name__ == "__main__":
    main()
