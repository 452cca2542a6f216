"""One PPO update on a fixed synthetic step, run under `accelerate launch --num_processes N` by
tests/rl/test_global_minibatch.py: each process takes its share of the step's completions, as the loop
does; the main process saves the weights after the update and the optimiser steps taken.

    python -m tests.rl.minibatch_worker MODEL OUT.pt STEP
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch


def share(batch, rank: int, world: int):
    """This process's rows of every tensor of the step (rank r holds completions r*n/world ...)."""
    n = batch.response.shape[0] // world

    def cut(value):
        return value[rank * n : (rank + 1) * n] if isinstance(value, torch.Tensor) else value

    return dataclasses.replace(batch, **{f.name: cut(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


class CountingSGD(torch.optim.SGD):
    """Plain SGD (weights move linearly with the gradients, so equal weights mean equal gradients), counting steps."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def main(model_path: str, out: str, step: int) -> None:
    from rl.config import check_batches
    from rl.setup import Models, PolicyCritic, load_critic, make_accelerator, unwrap
    from rl.train import update
    from runtime.models import load_model
    from tests.rl.test_direction import tiny_config
    from tests.rl.test_scale import synthetic_batch

    # 4 prompts x 2 = 8 completions in 2 global mini-batches of 4, passes of 1 completion (4 or 2 per step).
    config = tiny_config(model_path, prompts_per_step=4, rollouts_per_prompt=2, mini_batch_size=4, micro_batch_size=1, entropy_coef=0.01)
    accelerator = make_accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    check_batches(config, world)
    torch.manual_seed(0)  # the critic's fresh head: the same on every process
    module = PolicyCritic(load_model(model_path, dtype=torch.float32), load_critic(model_path))
    optimizer = CountingSGD(module.parameters(), lr=0.5)
    module, prepared = accelerator.prepare(module, optimizer)
    batch = synthetic_batch(unwrap(module).policy.config.vocab_size)
    update(Models(module, None, prepared), share(batch, rank, world), config, accelerator, step)
    if accelerator.is_main_process:
        weights = {k: v.detach().clone() for k, v in unwrap(module).state_dict().items()}
        torch.save({"weights": weights, "optimizer_steps": optimizer.steps, "world": world}, out)
        Path(out).with_suffix(".json").write_text(json.dumps({"optimizer_steps": optimizer.steps, "world": world}))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
