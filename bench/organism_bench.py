"""The organism experiment's figures for bench/README.md: gates, per-run table with intervals, goals, compute.

    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_bench.py --output-dir runs/organism --seeds 21 22 23 [--set base_seed=0]

Runs (or resumes) `countdown-lab experiment --config organism` with the given seeds, then prints the
bases' gates, per run the test accuracy before -> after with 95% bootstrap intervals over tasks (dev and
sampled beside it), the mean and range over seeds per base/condition, the issue's goals (met or not),
and the wall time. `--report-only` prints the figures of an existing experiment directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lab.pipeline.config import load_experiment
from lab.pipeline.run import run_experiment
from lab.pipeline.summary import over_seeds, to_markdown
from organism.bases import base_gates
from organism.goals import goal_rows


def print_bases(config, seeds: list[int]) -> None:
    print("## Bases (greedy, dev split)")
    needed = sorted({spec.base for spec in config.runs() if spec.base})
    for seed in sorted({config.bases_seed(s) for s in seeds}):
        report = base_gates(config.pretrain_config(seed), config.bases_cache, needed)
        for base, r in report["bases"].items():
            print(f"bases seed {seed} {base}: accuracy {r['accuracy']:.3f}, steps right {r['step_accuracy']:.3f}, "
                  f"tries {r['tries']:.2f}, checked {r['checks']:.2f}")  # fmt: skip
        for gate in report["gates"]:
            print(f"  gate {'PASS' if gate['pass'] else 'FAIL'}: {gate['gate']}")
        print(f"  search pays: {json.dumps(report['search_pays'])}")


def per_run(table: pd.DataFrame) -> pd.DataFrame:
    """One line per run: test before/after with intervals, the paired gain's interval, dev and T=1 beside."""
    cells = []
    for _, r in table.iterrows():
        cell = {"run": f"{r['base']}/{r['condition']}", "seed": r["seed"]}
        for prefix, name in (("acc", "test"), ("dev_acc", "dev"), ("sample_acc", "test T=1")):
            if f"{prefix}_before" in r and pd.notna(r[f"{prefix}_before"]):
                cell[name] = (f"{r[f'{prefix}_before']:.3f} [{r[f'{prefix}_before_lo']:.2f}, {r[f'{prefix}_before_hi']:.2f}] -> "
                              f"{r[f'{prefix}_after']:.3f} [{r[f'{prefix}_after_lo']:.2f}, {r[f'{prefix}_after_hi']:.2f}]")  # fmt: skip
        if "acc_gain_lo" in r:
            cell["test gain [95%]"] = f"{100 * r['acc_gain']:+.1f} [{100 * r['acc_gain_lo']:+.1f}, {100 * r['acc_gain_hi']:+.1f}]"
        cells.append(cell)
    return pd.DataFrame(cells)


def failures(root: Path, table: pd.DataFrame) -> pd.DataFrame:
    """Per run label and evaluated step (first and last), the mean over seeds of `heldout_outcomes`."""
    from lab.pipeline.heldout import split_keys
    from lab.pipeline.signals import heldout_outcomes
    from lab.pipeline.summary import label, run_dirs, run_name

    parts = []
    for run in run_dirs(root):
        seed = run_name(run)[1]
        if seed not in set(table["seed"]):
            continue
        outcomes = heldout_outcomes(run, "greedy", split_keys(root, seed), "test")
        if not outcomes.empty:
            ends = outcomes[outcomes["step"].isin([outcomes["step"].min(), outcomes["step"].max()])]
            parts.append(ends.assign(run=label(run)))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts).drop(columns="n").groupby(["run", "step"], as_index=False).mean()
    return out.round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 21 22 23, or with --report-only the experiment's own")
    parser.add_argument("--runs", nargs="+", help="base/condition runs (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an experiment field (YAML value)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    from runtime.config import parse_set

    made = args.output_dir / "experiment.json"
    # --report-only reads the experiment as it was made (its seeds, bases and settings), so its gates are its own bases'.
    source = made if args.report_only and made.is_file() else "organism"
    overrides = {"jobs": args.jobs, **parse_set(args.set)}
    if args.seeds:
        overrides["seeds"] = args.seeds
    elif source == "organism":
        overrides["seeds"] = [21, 22, 23]
    if args.runs:
        overrides["conditions"] = args.runs
    config = load_experiment(source, overrides)
    args.seeds = list(config.seeds)
    if not args.report_only:
        run_experiment(config, args.output_dir)
    summary = args.output_dir / "summary.csv"
    if not summary.is_file():  # --report-only before the experiment has written its summary
        raise SystemExit(f"no {summary}: run without --report-only first (it resumes), or let the running experiment finish")
    table = pd.read_csv(summary)
    table = table[table["seed"].isin(args.seeds)]
    print_bases(config, args.seeds)
    print("\n## Per run (test split; 95% bootstrap intervals over tasks)")
    print(to_markdown(per_run(table)))
    print("\n## Over seeds", args.seeds)
    print(to_markdown(over_seeds(table)))
    print("\n## Goals (mean over seeds, range over seeds)")
    for g in goal_rows(table):
        print(f"- {g['goal']}: {g['mean']:+.2f} (seeds {g['min']:+.2f} .. {g['max']:+.2f}) {'met' if g['met'] else 'NOT met'}")
    print("\n## Why searches fail (test split, greedy; mean over seeds at the first and last evaluation)")
    print(to_markdown(failures(args.output_dir, table)))
    timings = args.output_dir / "timings.jsonl"  # every command on the directory (timing.json: the last one's)
    timing = timings if timings.exists() else args.output_dir / "timing.json"
    if timing.exists():
        print("\ntiming:", timing.read_text().strip())


if __name__ == "__main__":
    main()
