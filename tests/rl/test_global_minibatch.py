"""Global mini-batches: one PPO update takes the same optimiser steps and ends at the same weights on 1 and on 2
processes (accelerate launch, gloo on CPU), as veRL's `ppo_mini_batch_size` counts over every GPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.rl.test_train import ENV, REPO, free_port


def launch(processes: int, model: Path, out: Path, step: int = 1) -> dict:
    accelerate = Path(sys.executable).parent / "accelerate"
    multi = ["--multi_gpu"] if processes > 1 else []
    cmd = [str(accelerate), "launch", *multi, "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "tests.rl.minibatch_worker", str(model), str(out), str(step)]  # fmt: skip
    # Its own process group, so a timeout kills the workers too, not just the launcher.
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    return torch.load(out)


@pytest.mark.slow  # two `accelerate launch` runs (~30 s)
def test_one_update_is_the_same_on_one_and_two_processes(tiny_model, tmp_path):
    alone = launch(1, tiny_model, tmp_path / "one.pt")
    pair = launch(2, tiny_model, tmp_path / "two.pt")
    assert (alone["world"], pair["world"]) == (1, 2)
    # 8 completions in mini-batches of 4 over all processes: 2 optimiser steps on both.
    assert alone["optimizer_steps"] == pair["optimizer_steps"] == 2
    for name, weight in alone["weights"].items():
        torch.testing.assert_close(pair["weights"][name], weight, rtol=1e-4, atol=1e-6, msg=name)
    # Teeth: other mini-batches of the same completions (another step's draw) end elsewhere, so equal weights
    # above mean the same mini-batches, not an update blind to them.
    other = launch(1, tiny_model, tmp_path / "other.pt", step=2)
    assert any(not torch.allclose(other["weights"][k], w, rtol=1e-4, atol=1e-6) for k, w in alone["weights"].items())


@pytest.mark.parametrize("world", [1, 2, 4])
def test_grpo_takes_the_same_optimiser_steps_on_any_process_count(tmp_path, world):
    """TRL counts its batches per device: per-device batch x accumulation x processes must be our global mini-batch,
    so a generation round takes batch / mini_batch_size optimiser steps (times ppo_epochs) whatever the process count."""
    from trl import GRPOConfig

    from rl.config import PPOConfig
    from rl.trl_algos import check_config, optimizer_steps_per_round, trl_kwargs

    class Launched(GRPOConfig):
        @property
        def world_size(self) -> int:  # what TRL sees under `accelerate launch --num_processes world`
            return world

    config = PPOConfig(model="m", prompts_per_step=8, rollouts_per_prompt=4, mini_batch_size=16, micro_batch_size=2, ppo_epochs=2)
    check_config("grpo", config, world)
    args = Launched(**{**trl_kwargs(config, tmp_path, 1, "none", world), "bf16": False})
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * world == config.mini_batch_size
    assert optimizer_steps_per_round(args) == config.optimizer_steps * config.ppo_epochs == 4
