"""Why the organism's searches fail, per evaluation step: what RL changes in a primed model's answers.

    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_failures.py runs/organism19d/runs/poor-only_backtracking-seed51 [...]
        [--mode greedy|sample] [--split test|dev]

For each run folder (its `eval_completions.jsonl`, the pipeline's or `bench/organism_rl_probe.py`'s) and each
evaluated step, the share of answers in each of `organism.text.SEARCH_OUTCOMES` (solved, truncated, false_ok,
hit_miscopied, gave_up), the share that writes a first step twice, and tries per answer
(`lab.pipeline.signals.heldout_outcomes`). Reads files only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.pipeline.heldout import split_keys
from lab.pipeline.signals import heldout_outcomes
from lab.pipeline.summary import experiment_root, run_name
from organism.text import SEARCH_OUTCOMES

COLUMNS = ["step", "n", *SEARCH_OUTCOMES, "repeats", "tries"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--mode", default="greedy", choices=("greedy", "sample"))
    parser.add_argument("--split", default="test", choices=("test", "dev"), help="of an experiment's runs (a probe's are dev only)")
    args = parser.parse_args()
    for run in args.runs:
        keys = split_keys(experiment_root(run), run_name(run)[1])  # {} for a probe's folder: read whole
        table = heldout_outcomes(run, args.mode, keys, args.split)
        print(f"## {run} ({args.mode})")
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for row in table.to_dict("records"):
            print("| " + " | ".join(str(int(row[k])) if k in ("step", "n") else f"{row[k]:.3f}" for k in COLUMNS) + " |")


if __name__ == "__main__":
    main()
