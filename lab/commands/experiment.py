"""`countdown-lab experiment` and `countdown-lab demo`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_commands(sub: argparse._SubParsersAction) -> None:
    from lab.pipeline.config import ExperimentConfig
    from lab.pipeline.presets import shelf
    from runtime.config import add_preset_args, preset_names
    from runtime.tracking import add_report_to

    p = sub.add_parser("experiment", help="the study's experiment: per condition and seed, start model, priming, RL and judge")
    add_preset_args(
        p,
        ExperimentConfig,
        shelf("experiment"),
        default=DEFAULT_PRESET,
        what="experiment",
        old=("--preset",),
        help=f"experiment preset ({', '.join(preset_names(shelf('experiment')))}) or a YAML file; default {DEFAULT_PRESET}. "
        "--set ppo='{total_steps: 50}' overrides a field",
    )
    p.add_argument("--conditions", nargs="+", help="runs: priming conditions, <condition>_incorrect[_<kind>], or none "
                   "(organism: <base>/<condition>)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--model", help="start model path or hub id (default: the embedded tiny model)")
    p.add_argument("--jobs", type=int, help="runs in parallel")
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="where the runs, summary and plots go (resumable)")
    add_report_to(p)
    p.set_defaults(func=_experiment)

    p = sub.add_parser(
        "demo",
        help="the main job on the embedded default: RL from a base that searches and checks vs one that does not, < 10 min on 2 cores",
    )
    p.add_argument("--output-dir", type=Path, default=Path("runs/demo"), metavar="DIR", help="(default %(default)s)")
    p.set_defaults(func=_demo)


DEFAULT_PRESET = "tiny-cpu"


def _experiment(args: argparse.Namespace) -> int:
    from countdown_env.errors import output_dir
    from lab.pipeline.config import load_experiment
    from lab.pipeline.run import run_experiment
    from runtime.config import parse_set

    flags = {"conditions": args.conditions, "seeds": args.seeds, "model": args.model, "jobs": args.jobs, "report_to": args.report_to}
    # Every mistake in the preset, --set or the flags is a UsageError here, before anything is written.
    config = load_experiment(args.config, {**parse_set(args.overrides), **{k: v for k, v in flags.items() if v is not None}})
    output_dir(args.output_dir, "--output-dir")
    root = run_experiment(config, args.output_dir)
    _report(root)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from countdown_env.errors import output_dir
    from lab.pipeline.config import load_experiment
    from lab.pipeline.run import run_experiment
    from organism.bases import install_shipped_bases

    output_dir(args.output_dir, "--output-dir")
    config = load_experiment("demo")
    installed = install_shipped_bases(config.bases_cache)
    if installed:
        print(f"demo: using the shipped seed-0 base models ({', '.join(installed)}) in {config.bases_cache}")
    root = run_experiment(config, args.output_dir)
    _report(root)
    return 0


def _report(root: Path) -> None:
    """The end of the console: how long it took, what happened, and where the tables and plots are.
    The full table (30-odd columns) stays in summary.md/summary.csv: on a console it buries the result."""
    import pandas as pd

    table = pd.read_csv(root / "summary.csv")
    timing = json.loads((root / "timing.json").read_text()) if (root / "timing.json").exists() else {}
    print()
    if timing:
        print(f"took {timing['minutes']} minutes ({timing.get('runs', len(table))} runs)")
    for line in closing_words(table):
        print(line)
    plots = sorted(p.name for p in (root / "plots").glob("*.png"))
    shown = ", ".join(plots[:3]) + (f", ... {len(plots)} in all" if len(plots) > 3 else "")
    print(f"\ntables: {root / 'summary.md'} (every column; also summary.csv, frequencies.csv)")
    print(f"plots:  {root / 'plots'}/" + (f" ({shown})" if plots else ""))


def closing_words(table: Any) -> list[str]:
    """What happened, in words: accuracy before -> after per base/condition (mean over seeds), and
    the behaviours of held-out completions, so a newcomer sees RL working and behaviours mattering."""
    if "acc_before" not in table or "acc_after" not in table:
        return []
    if "base" not in table:
        table = table.assign(base="default")
    seeds = table["seed"].nunique() if "seed" in table else 1
    where = "test-split accuracy" if "dev_acc_before" in table else "held-out accuracy"
    lines = [f"What happened ({where}, greedy; {'mean over ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}):"]
    for (base, condition), group in table.groupby(["base", "condition"], sort=False):
        line = f"  {_run_name(base, condition)}: {group['acc_before'].mean():.2f} -> {group['acc_after'].mean():.2f}"
        if "heldout_avg_verifications_before" in group:
            line += (
                f" (checks per answer {group['heldout_avg_verifications_before'].mean():.2f} -> "
                f"{group['heldout_avg_verifications_after'].mean():.2f}, returns {group['heldout_avg_backtracking_before'].mean():.2f} -> "
                f"{group['heldout_avg_backtracking_after'].mean():.2f})"
            )
        lines.append(line)
    return lines


def _run_name(base: str, condition: str) -> str:
    """`rich base`, `poor base primed with only_backtracking`; without an organism base, the condition."""
    if base == "default":  # the start model is a path or the embedded default
        return "no priming" if condition == "none" else f"primed with {condition}"
    return f"{base} base" if condition == "none" else f"{base} base primed with {condition}"
