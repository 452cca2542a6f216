"""`countdown-lab plan` tables for the study's PPO (`paper-3b`) on common GPU setups, as markdown.

    .venv/bin/python bench/plan_bench.py > /tmp/plan.md

Arithmetic only (rl/plan.py; no GPU, no download): per-GPU memory of policy, critic, reference
and the generation peak for Qwen2.5-3B and Llama-3.2-3B under paper-3b (bf16 autocast, ZeRO-3,
gradient checkpointing, micro-batches of 4) and under the old fp32 DDP setup it replaced.
"""

from __future__ import annotations

from rl.config import load_config
from rl.plan import advice, format_plan, plan

SETUPS = (
    ("paper-3b, Qwen2.5-3B, 4 x 80 GB", "Qwen/Qwen2.5-3B", {}, 4, 80),
    ("paper-3b, Llama-3.2-3B, 4 x 80 GB", "meta-llama/Llama-3.2-3B", {}, 4, 80),
    ("paper-3b, Qwen2.5-3B, 1 x 24 GB", "Qwen/Qwen2.5-3B", {}, 1, 24),
    ("before this change: fp32 DDP, mini = micro = 16, no checkpointing, 4 x 80 GB", "Qwen/Qwen2.5-3B",
     {"dtype": "float32", "sharding": "ddp", "gradient_checkpointing": False, "mini_batch_size": 16, "micro_batch_size": 16}, 4, 80),
)  # fmt: skip


def main() -> None:
    for title, model, changes, gpus, memory in SETUPS:
        config = load_config("paper-3b", {"model": model, **changes})
        result = plan(config, gpus, memory)
        print(f"#### {title}\n```\n{format_plan(result)}")
        if not result.fits:
            print("\n".join(advice(config, gpus, memory)))
        print("```\n")


if __name__ == "__main__":
    main()
