"""The organism experiment's figures for bench/README.md: gates, per-run table, goals, compute.

    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_bench.py --output-dir runs/organism --seeds 1 2 3

Runs (or resumes) `countdown-lab experiment --config organism` with the given seeds, then prints
the bases' gates, the mean over seeds per base/condition, the issue's goals (met or not), and the
wall time. `--report-only` prints the figures of an existing experiment directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lab.pipeline.config import load_experiment
from lab.pipeline.run import run_experiment
from lab.pipeline.summary import to_markdown
from organism.bases import base_gates
from organism.goals import goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--runs", nargs="+", help="base/condition runs (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an organism field (YAML value)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    from runtime.config import parse_set

    overrides = {"seeds": args.seeds, "jobs": args.jobs, **parse_set(args.set)}
    if args.runs:
        overrides["conditions"] = args.runs
    config = load_experiment("organism", overrides)
    if not args.report_only:
        run_experiment(config, args.output_dir)
    table = pd.read_csv(args.output_dir / "summary.csv")
    table = table[table["seed"].isin(args.seeds)]
    print("## Bases (greedy, held-out)")
    needed = sorted({spec.base for spec in config.runs() if spec.base})
    for seed in args.seeds:
        report = base_gates(config.pretrain_config(seed), config.bases_cache, needed)
        for base, r in report["bases"].items():
            print(
                f"seed {seed} {base}: accuracy {r['accuracy']:.3f}, steps right {r['step_accuracy']:.3f}, tries {r['tries']:.2f}, "
                f"checked {r['checks']:.2f}"
            )
        for gate in report["gates"]:
            print(f"  gate {'PASS' if gate['pass'] else 'FAIL'}: {gate['gate']}")
    pays = base_gates(config.pretrain_config(args.seeds[0]), config.bases_cache, needed)["search_pays"]
    print(f"search pays (seed {args.seeds[0]}): {json.dumps(pays)}")
    columns = [
        c
        for c in (
            "acc_before",
            "acc_after",
            "acc_gain",
            "heldout_avg_verifications_before",
            "heldout_avg_verifications_after",
            "heldout_avg_backtracking_before",
            "heldout_avg_backtracking_after",
            "generated_tokens",
            "rl_seconds",
        )
        if c in table
    ]
    mean = table.groupby(["base", "condition"])[columns].agg(["mean", "std"])
    mean.columns = [f"{a}_{b}" for a, b in mean.columns]
    print("\n## Mean over seeds", args.seeds)
    print(to_markdown(mean.reset_index()))
    print("\n## Goals")
    for goal, value, met in goals(table):
        print(f"- {goal}: {value:+.1f} points ({'met' if met else 'NOT met'})")
    timing = args.output_dir / "timing.json"
    if timing.exists():
        print("\ntiming:", timing.read_text().strip())


if __name__ == "__main__":
    main()
