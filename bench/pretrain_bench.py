"""Minutes to make one seed's two organism bases: side by side (`--jobs 2`, the default) or one after the other.

    OMP_NUM_THREADS=1 .venv/bin/python bench/pretrain_bench.py --seed 71 --output-dir runs/pretrain-bench [--variants jobs2 jobs1 jobs2-micro1]

Runs `countdown-lab pretrain --seed S` (the trunk, then rich and poor: side by side in two one-thread processes, or
one after the other) into `<output-dir>/<variant>`, one variant after the other on the same machine, and prints for
each the wall minutes (pretraining, then the gates' evaluation) and the gates: arithmetic, greedy accuracy and checks
of both bases on 400 held-out tasks. The issue's goal: new bases for one seed in at most 10 minutes on 2 cores, with
the gates passing. Resumable: a finished variant is read back from its `bench.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "jobs2": ["--jobs", "2"],  # the default: micro-batches of similar length (`--micro-batches 4`), bases side by side
    "jobs1": ["--jobs", "1"],
    "jobs2-micro1": ["--jobs", "2", "--micro-batches", "1"],  # one padded pass per step, as before 2026-12-05
    # half the rows per step, the same steps: half the tokens of every stage (a candidate recipe for the 10-minute goal)
    "jobs2-batch32": ["--jobs", "2", "--batch-size", "32", "--micro-batches", "2"],
}


def run_variant(name: str, seed: int, out: Path) -> dict:
    folder = out / name
    done = folder / "bench.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).with_name("countdown-lab")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [str(cli), "pretrain", "--seed", str(seed), "--bases-dir", str(folder), "--quiet", *VARIANTS[name]]
    start = time.perf_counter()
    subprocess.run([*common, "--no-gates"], check=True, env=env)
    trained = time.perf_counter() - start
    subprocess.run(common, check=True, env=env)  # the bases are cached now: this is the gates' evaluation
    gates = json.loads((folder / f"seed-{seed}" / "gates.json").read_text())
    result = {"variant": name, "seed": seed, "train_minutes": trained / 60, "total_minutes": (time.perf_counter() - start) / 60, **gates}
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=71)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["jobs2"])
    args = parser.parse_args()
    results = [run_variant(name, args.seed, args.output_dir) for name in args.variants]
    print("| bases | pretrain (min) | with gates (min) | rich acc | poor acc | arithmetic rich / poor | rich checked | gates |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        rich, poor = r["bases"]["rich"], r["bases"]["poor"]
        passed = sum(g["pass"] for g in r["gates"])
        print(
            f"| {r['variant']} | {r['train_minutes']:.1f} | {r['total_minutes']:.1f} | {rich['accuracy']:.3f} | {poor['accuracy']:.3f} | "
            f"{rich['step_accuracy']:.3f} / {poor['step_accuracy']:.3f} | {rich['checks']:.2f} | {passed}/{len(r['gates'])} pass |"
        )


if __name__ == "__main__":
    main()
