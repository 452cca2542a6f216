"""Issue 22's real Llama arm on the organism's tasks and text: SmolLM2-135M-Instruct base, LoRA-primed on the
organism's priming traces (correct, and the wrong-answer `giveup` kind), then the organism's group RL with LoRA;
printed beside the organism's own rows (run 3), all on the organism's test split with 95% intervals.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/smollm_organism.py --seeds 61 \
        --output-dir runs/smollm-organism [--conditions only_backtracking]

1. The experiment `bench/configs/smollm-organism.yaml` (resumable: finished runs and stages are skipped).
2. The unprimed base, greedy, on each seed's test tasks (`base-seed<S>.json`, written once).
3. The table: base / primed (RL step 0) / after RL, greedy and checks per answer, beside the organism's rows.
`--report` skips 1 and 2 and prints what is there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "bench" / "configs" / "smollm-organism.yaml"
ORGANISM = ROOT / "bench" / "figures" / "organism19d_summary.csv"


def base_eval(out: Path, seed: int) -> dict:
    """Greedy accuracy (95% interval) and checks per answer of the unprimed SmolLM2 on the seed's test tasks."""
    path = out / f"base-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    from countdown_env import read_tasks
    from countdown_env.files import write_text_atomic
    from lab.pipeline.config import ExperimentConfig
    from lab.pipeline.heldout import bootstrap
    from organism.text import written_behaviors
    from rl.evaluate import greedy_eval
    from runtime.models import load_model, load_tokenizer
    from runtime.prompt import Prompt

    config = ExperimentConfig.load(CONFIG)
    ppo = config.ppo_config(config.model, seed)
    tasks = read_tasks(out / "tasks" / f"seed-{seed}" / "test.jsonl")
    model, tokenizer = load_model(config.model), load_tokenizer(config.model)
    rows: list[dict] = []
    summary = greedy_eval(model, tokenizer, tasks, Prompt.of_preset(config.task_preset, config.prompt_style),
                          max_new_tokens=ppo.max_new_tokens, rows=rows, progress=True)  # fmt: skip
    correct = np.array([float(r["correct"]) for r in rows])
    lo, hi = bootstrap(correct)
    result = {
        **summary,
        "acc": float(correct.mean()),
        "acc_lo": lo,
        "acc_hi": hi,
        "tasks": len(rows),
        "checks": float(np.mean([written_behaviors(r["text"], r["target"])["checks"] for r in rows])),
        "examples": [r["text"][:300] for r in rows[:3]],
    }
    write_text_atomic(path, json.dumps(result, indent=2))
    return result


def interval(row: pd.Series, prefix: str, when: str) -> str:
    return f"{row[f'{prefix}_{when}']:.3f} [{row[f'{prefix}_{when}_lo']:.2f}, {row[f'{prefix}_{when}_hi']:.2f}]"


def report(out: Path, seeds: list[int]) -> None:
    print("| model | run | seed | test greedy (95% CI) | checks per answer | rollouts truncated | last RL step |")
    print("|---|---|---|---|---|---|---|")
    for seed in seeds:
        base = out / f"base-seed{seed}.json"
        if base.exists():
            b = json.loads(base.read_text())
            print(f"| SmolLM2-135M-Instruct | base (unprimed) | {seed} | {b['acc']:.3f} [{b['acc_lo']:.2f}, {b['acc_hi']:.2f}] "
                  f"| {b['checks']:.2f} | - | - |")  # fmt: skip
    summary = out / "summary.csv"
    if summary.exists():
        for _, row in pd.read_csv(summary).iterrows():
            name = f"primed, {row['condition']}"
            print(f"| SmolLM2-135M-Instruct | {name}: before RL | {row['seed']} | {interval(row, 'acc', 'before')} "
                  f"| {row['heldout_avg_verifications_before']:.2f} | {row['truncated_rate_before']:.2f} | 0 |")  # fmt: skip
            print(f"| SmolLM2-135M-Instruct | {name}: after RL | {row['seed']} | {interval(row, 'acc', 'after')} "
                  f"| {row['heldout_avg_verifications_after']:.2f} | {row['truncated_rate_after']:.2f} | {row['last_step']} |")  # fmt: skip
    if ORGANISM.exists():  # the organism's run 3 (seeds 51-53), mean over seeds
        organism = pd.read_csv(ORGANISM)
        for (base_name, condition), part in organism.groupby(["base", "condition"], sort=False):
            print(f"| organism (1M) | {base_name}/{condition}: before -> after RL (mean of {len(part)} seeds) | "
                  f"{'-'.join(map(str, sorted(part['seed'])))} | {part['acc_before'].mean():.3f} -> {part['acc_after'].mean():.3f} "
                  f"| {part['heldout_avg_verifications_before'].mean():.2f} -> {part['heldout_avg_verifications_after'].mean():.2f} "
                  f"| {part['truncated_rate_after'].mean():.2f} | {int(part['last_step'].max())} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[61])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs" / "smollm-organism")
    parser.add_argument("--conditions", nargs="+", default=None, help="default: the config's")
    parser.add_argument("--report", action="store_true", help="print the table of what is there, run nothing")
    args = parser.parse_args()
    out = args.output_dir.resolve()
    if not args.report:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        conditions = ["--conditions", *args.conditions] if args.conditions else []
        subprocess.run([sys.executable, "-m", "lab.cli", "experiment", "--config", str(CONFIG), "--seeds", *map(str, args.seeds),
                        *conditions, "--output-dir", str(out)], env=env, cwd=ROOT, check=True)  # fmt: skip
        for seed in args.seeds:
            base_eval(out, seed)
    report(out, args.seeds)


if __name__ == "__main__":
    main()
