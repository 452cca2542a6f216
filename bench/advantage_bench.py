"""Seconds per step of our loop with group-relative advantages vs critic + GAE, one line.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/advantage_bench.py [--steps 5]

Same settings for each: the `tiny-cpu` preset (16 prompts x 4 rollouts, 96-token responses,
one PPO epoch, mini-batches of 32) on a fresh `small` Qwen2 (`countdown-lab init-model
--size small`), no evaluation, no checkpoint before the end. `group` keeps tiny-cpu's
kl_coef 0.001 (a reference forward pass and a KL loss term); `group, kl 0` also drops the
reference. The first step is warm-up and not timed. A fresh model rarely emits EOS, so
nearly every completion runs the full 96 tokens in all conditions.
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


def seconds_per_step(model: Path, name: str, sets: list[str], steps: int) -> float:
    out = OUT / name.replace(", ", "-").replace(" ", "")
    shutil.rmtree(out, ignore_errors=True)
    overrides = [x for s in [*sets, "eval_every=0", f"save_every={steps}"] for x in ("--set", s)]
    cli("ppo", "--model", model, "--config", "tiny-cpu", "--output-dir", out, "--max-steps", steps, "--no-progress", *overrides)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [row["time/seconds_per_step"] for row in rows if row["step"] > 1]
    return sum(timed) / len(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    model = OUT / "qwen2-small"
    cli("init-model", "--arch", "qwen2", "--size", "small", "--seed", "0", "--output", model)
    results = {name: seconds_per_step(model, name, sets, args.steps) for name, sets in CONDITIONS.items()}
    cells = ", ".join(f"{name} {s:.2f} s/step" for name, s in results.items())
    print(
        f"tiny-cpu, small Qwen2, {args.steps} steps (first untimed), 1 thread: {cells}; group/gae = {results['group'] / results['gae']:.2f}"
    )


if __name__ == "__main__":
    main()
