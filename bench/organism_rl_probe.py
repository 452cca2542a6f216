"""RL from a primed model, evaluated on the DEV split only (a design probe: the test split is for reports).

    OMP_NUM_THREADS=1 .venv/bin/python bench/organism_rl_probe.py --model runs/priming-probe/seed0-once-12000x32-lr1e-3/sft/model \
        --output-dir runs/rl-probe/once-12000 [--set actor_lr=1e-4]

`ppo-organism` from `--model` on the organism's train split (seed `--seed`), evaluating greedy and T=1 on 190 dev
tasks at steps 0, 50 and 100. Resumable (the run directory's checkpoints). Prints dev accuracy before and after.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from countdown_env import generate_tasks
    from lab.pipeline.presets import load_preset_dataclass
    from rl.config import PPOConfig
    from rl.train import train
    from runtime.config import parse_set

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    values = {"model": args.model, "seed": args.seed, "total_steps": 100, "eval_every": 50, "eval_samples": 190,
              "eval_log_greedy": True, **parse_set(args.set)}  # fmt: skip
    config = load_preset_dataclass("ppo", PPOConfig, "ppo-organism", values, what="ppo")
    dev = generate_tasks(190, seed=args.seed, preset="organism", split="dev")
    train_tasks = generate_tasks(config.num_train_tasks, seed=args.seed, preset="organism", split="train")
    out = train(
        config, args.output_dir, tasks=train_tasks, eval_tasks=dev, resume=(args.output_dir / "metrics.jsonl").exists(), progress=False
    )
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval/accuracy" in row:
            print(row["step"], {k: round(v, 3) for k, v in row.items() if k.startswith("eval/") and "accuracy" in k})


if __name__ == "__main__":
    main()
