"""Seconds per step of our loop with group-relative advantages vs critic + GAE, one line.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/advantage_bench.py [--steps 5] [--rounds 2]

Same settings for each: the `tiny-cpu` preset (16 prompts x 4 rollouts, 96-token responses,
one PPO epoch, mini-batches of 32) on a fresh `small` Qwen2 (`countdown-lab init-model
--size small`), no evaluation, no checkpoint before the end. `group` keeps tiny-cpu's
kl_coef 0.001 (a reference forward pass and a KL loss term); `group, kl 0` also drops the
reference. The first step is warm-up and not timed; the conditions run in turn, `--rounds`
times, so load from other jobs on a shared machine hits them alike. All conditions sample
the same first step (same seed and model), so their response lengths stay close.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench" / "advantage"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
CONDITIONS = {
    "gae": ["advantage_estimator=gae"],
    "group": ["advantage_estimator=group"],
    "group, kl 0": ["advantage_estimator=group", "kl_coef=0"],
}


def cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "lab.cli", *map(str, args)], env=ENV, cwd=ROOT, check=True, capture_output=True)


def seconds_per_step(model: Path, name: str, sets: list[str], steps: int) -> tuple[float, float]:
    """(seconds per step, of which generation) over steps 2..steps."""
    out = OUT / name.replace(", ", "-").replace(" ", "")
    shutil.rmtree(out, ignore_errors=True)
    overrides = [x for s in [*sets, "eval_every=0", f"save_every={steps}"] for x in ("--set", s)]
    cli("ppo", "--model", model, "--config", "tiny-cpu", "--output-dir", out, "--max-steps", steps, "--no-progress", *overrides)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [row for row in rows if row["step"] > 1]
    return tuple(sum(row[key] for row in timed) / len(timed) for key in ("time/seconds_per_step", "time/generation_seconds"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = OUT / "qwen2-small"
    cli("init-model", "--arch", "qwen2", "--size", "small", "--seed", "0", "--output", model)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CONDITIONS}
    for _ in range(args.rounds):
        for name, sets in CONDITIONS.items():
            runs[name].append(seconds_per_step(model, name, sets, args.steps))
    mean = {name: [sum(x) / len(x) for x in zip(*r, strict=True)] for name, r in runs.items()}
    cells = ", ".join(f"{name} {step:.2f} s/step ({gen:.2f} generating)" for name, (step, gen) in mean.items())
    ratio = mean["group"][0] / mean["gae"][0]
    print(f"tiny-cpu, small Qwen2, {args.steps} steps (first untimed) x {args.rounds} rounds, 1 thread: {cells}; group/gae = {ratio:.2f}")


if __name__ == "__main__":
    main()
