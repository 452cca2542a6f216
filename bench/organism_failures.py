"""Why the organism's searches fail, per evaluation step: what RL changes in a primed model's answers.

    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_failures.py runs/organism19d/runs/poor-only_backtracking-seed51 [...]
        [--mode greedy|sample] [--split test|dev]

For each run folder (its `eval_completions.jsonl`, the pipeline's or `bench/organism_rl_probe.py`'s) and each
evaluated step, the share of answers in each of `organism.text.SEARCH_OUTCOMES` (solved, truncated, false_ok,
hit_miscopied, gave_up), the share that writes a first step twice, and tries per answer. Reads files only.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from countdown_env.files import read_jsonl
from countdown_env.tasks import Task
from organism import text


def run_splits(run: Path) -> dict:
    """Task key -> split of an experiment's run folder (`<root>/runs/<name>-seed<S>`); {} for other folders."""
    from lab.pipeline.heldout import split_keys

    name, _, seed = run.name.rpartition("-seed")
    return split_keys(run.parent.parent, int(seed)) if name and seed.isdigit() and run.parent.name == "runs" else {}


def outcome_table(run: Path, mode: str, split: str | None) -> list[dict[str, object]]:
    """One row per evaluated step: the outcome shares, repeats and tries of the `mode` answers (of `split` when the
    run is an experiment's, whose evaluations hold dev and test tasks together)."""
    from lab.pipeline.heldout import task_key

    keys = run_splits(run) if split else {}
    rows = [
        r
        for r in read_jsonl(run / "eval_completions.jsonl")
        if r.get("mode", "greedy") == mode and (not keys or keys.get(task_key(r["numbers"], r["target"])) == split)
    ]
    out = []
    for step in sorted({r["step"] for r in rows}):
        at = [r for r in rows if r["step"] == step]
        counts = Counter(
            text.search_outcome(
                r["text"], Task(tuple(r["numbers"]), r["target"]), correct=bool(r["correct"]), finished=r.get("finished", True)
            )
            for r in at
        )
        out.append(
            {
                "step": step,
                "n": len(at),
                **{k: counts[k] / len(at) for k in text.SEARCH_OUTCOMES},
                "repeats": sum(text.repeats_a_try(r["text"]) for r in at) / len(at),
                "tries": sum(len(text.try_results(r["text"])) for r in at) / len(at),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--mode", default="greedy", choices=("greedy", "sample"))
    parser.add_argument("--split", default="test", choices=("test", "dev"), help="of an experiment's runs (a probe's are dev only)")
    args = parser.parse_args()
    head = ["step", "n", *text.SEARCH_OUTCOMES, "repeats", "tries"]
    for run in args.runs:
        print(f"## {run} ({args.mode})")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in outcome_table(run, args.mode, args.split):
            print("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in head) + " |")


if __name__ == "__main__":
    main()
