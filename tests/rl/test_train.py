"""PPO end to end on the tiny model: the run directory, resume without lost or duplicated steps, 2 processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.cli import main
from runtime.models import count_parameters, load_model
from tests.rl.conftest import fast_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), so parallel runs don't collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_jsonl(path):
    """Every line of `path` as JSON, strictly: unlike the tolerant reader the code uses on live runs, a torn
    or unterminated line (e.g. left by kill -9 and not cleaned up on resume) fails the test."""
    text = Path(path).read_text()
    assert text == "" or text.endswith("\n"), f"{path}: the last line is unterminated"
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            pytest.fail(f"{path}:{line_no}: not JSON ({err}): {line[:200]!r}")
        assert isinstance(rows[-1], dict), f"{path}:{line_no}: not an object"
    return rows


def steps_of(path):
    return [row["step"] for row in read_jsonl(path)]


def test_ppo_run_writes_the_run_directory(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert main(fast_args(tiny_model, out, "--max-steps", 3)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["total_steps"] == 3 and config["prompts_per_step"] == 4 and config["model"] == str(tiny_model)
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # step 0: the evaluation before training
    keys = ("reward/mean", "reward/accuracy", "reward/format_rate", "reward/truncated_rate", "reward/mixed_groups", "response/length",
            "objective/kl", "policy/entropy")  # fmt: skip
    for key in (*keys, "losses/value_loss", "policy/clipfrac", "time/seconds_per_step"):
        assert all(isinstance(r[key], float) for r in rows[1:]), key
    assert_compute_totals(rows)
    assert [sorted(k for k in r if k.startswith("eval/")) for r in rows] == [EVAL_KEYS, [], EVAL_KEYS, EVAL_KEYS]
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert [r["step"] for r in rollouts] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert {"step", "text", "numbers", "target", "reward", "correct"} <= set(rollouts[0])
    # Checkpoints: the newest two kept, each with a loadable policy and accelerate's state.
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-000002", "step-000003"]
    last = out / "checkpoints" / "step-000003"
    assert json.loads((last / "state.json").read_text()) == {"step": 3}
    assert (last / "optimizer.bin").exists() and (last / "random_states_0.pkl").exists()
    assert count_parameters(load_model(last / "policy")) == count_parameters(load_model(tiny_model))
    # A second run into the same directory without --resume is refused.
    assert main(fast_args(tiny_model, out, "--max-steps", 3)) == 2


EVAL_KEYS = ["eval/accuracy", "eval/format_rate", "eval/response_length"]


def assert_compute_totals(rows):
    """Every row carries cumulative compute: tokens sampled, tokens trained on, wall seconds."""
    for key in ("compute/generated_tokens", "compute/trained_tokens", "time/elapsed_seconds"):
        values = [r[key] for r in rows]
        assert values == sorted(values), key
    assert rows[0]["compute/generated_tokens"] == 0 and rows[-1]["compute/generated_tokens"] > 0
    assert rows[-1]["time/elapsed_seconds"] > rows[0]["time/elapsed_seconds"] > 0


def test_training_changes_the_policy(tiny_model, tmp_path):
    import torch

    out = tmp_path / "run"
    assert main(fast_args(tiny_model, out, "--max-steps", 1, "--set", "actor_lr=1e-2")) == 0
    before, after = load_model(tiny_model), load_model(out / "checkpoints" / "step-000001" / "policy")
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))


def test_resume_continues_to_more_steps_without_duplicates(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert main(fast_args(tiny_model, out, "--max-steps", 2)) == 0
    before = read_jsonl(out / "metrics.jsonl")[-1]
    assert main(fast_args(tiny_model, out, "--max-steps", 4, "--resume")) == 0
    assert steps_of(out / "metrics.jsonl") == [0, 1, 2, 3, 4]
    rows = read_jsonl(out / "metrics.jsonl")
    assert_compute_totals(rows)  # the totals carry on from the checkpoint's row
    assert rows[3]["time/elapsed_seconds"] > before["time/elapsed_seconds"]
    assert rows[3]["compute/generated_tokens"] > before["compute/generated_tokens"]
    assert sorted(set(steps_of(out / "rollouts.jsonl"))) == [1, 2, 3, 4]
    assert json.loads((out / "config.json").read_text())["resumed_from"] == 2


def test_resume_is_deterministic(tiny_model, tmp_path):
    """Steps redone after a resume see the same prompts and samples as an uninterrupted run."""
    straight, resumed = tmp_path / "a", tmp_path / "b"
    assert main(fast_args(tiny_model, straight, "--max-steps", 3)) == 0
    assert main(fast_args(tiny_model, resumed, "--max-steps", 2)) == 0
    assert main(fast_args(tiny_model, resumed, "--max-steps", 3, "--resume")) == 0
    a, b = read_jsonl(straight / "rollouts.jsonl"), read_jsonl(resumed / "rollouts.jsonl")
    assert [(r["step"], r["numbers"], r["target"]) for r in a] == [(r["step"], r["numbers"], r["target"]) for r in b]
    assert [r["text"] for r in a] == [r["text"] for r in b]


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_kill_9_then_resume_loses_and_duplicates_no_step(tiny_model, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lab.cli", *fast_args(tiny_model, out, "--max-steps", 200)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "checkpoints" / "step-000002").exists():
            time.sleep(0.05)
        assert (out / "checkpoints" / "step-000002").exists(), "no checkpoint within 2 minutes"
        time.sleep(0.3)  # kill somewhere in a later step, possibly mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from countdown_env.files import read_jsonl as read_tolerantly  # the kill may have torn the last line; the resume must repair it

    killed_at = read_tolerantly(out / "metrics.jsonl")[-1]["step"]
    assert killed_at < 200
    final = killed_at + 2
    assert main(fast_args(tiny_model, out, "--max-steps", final, "--resume")) == 0
    assert steps_of(out / "metrics.jsonl") == list(range(final + 1))
    rollout_steps = steps_of(out / "rollouts.jsonl")
    assert rollout_steps == sorted(rollout_steps) and set(rollout_steps) == set(range(1, final + 1))
    assert all(rollout_steps.count(s) == 3 for s in range(1, final + 1))
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_resume_before_the_first_checkpoint_starts_clean(tiny_model, tmp_path):
    """A run killed after its step-0 evaluation but before any checkpoint redoes step 0 once."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.5}\n{"step": 1, "reward/mean": 0.0}\n')
    (out / "rollouts.jsonl").write_text('{"step": 1, "text": "stale"}\n')
    assert main(fast_args(tiny_model, out, "--max-steps", 2, "--resume")) == 0
    assert steps_of(out / "metrics.jsonl") == [0, 1, 2]
    assert "stale" not in (out / "rollouts.jsonl").read_text()


def test_group_advantages_run_without_a_critic(tiny_model, tmp_path, monkeypatch):
    """`advantage_estimator=group` with kl_coef 0: one model loaded (no reference, no critic), none checkpointed."""
    import runtime.models

    loads = []
    load_model_ = runtime.models.load_model
    monkeypatch.setattr(runtime.models, "load_model", lambda *a, **k: loads.append(a) or load_model_(*a, **k))
    out = tmp_path / "run"
    group = ["--set", "advantage_estimator=group", "--set", "kl_coef=0", "--set", "group_normalize_std=false"]
    assert main(fast_args(tiny_model, out, "--max-steps", 2, *group)) == 0
    assert len(loads) == 1
    rows = read_jsonl(out / "metrics.jsonl")
    assert steps_of(out / "metrics.jsonl") == [0, 1, 2]
    assert {"reward/mean", "losses/policy_loss", "policy/entropy"} <= set(rows[1])
    assert not {"value/mean", "losses/value_loss", "objective/kl", "losses/kl_loss"} & set(rows[1])
    assert_compute_totals(rows)
    ckpt = out / "checkpoints" / "step-000002"
    assert (ckpt / "model.safetensors").exists() and not (ckpt / "model_1.safetensors").exists()
    assert main(fast_args(tiny_model, out, "--max-steps", 3, "--resume", *group)) == 0
    assert steps_of(out / "metrics.jsonl") == [0, 1, 2, 3]


def test_group_with_kl_coef_logs_the_kl_loss(tiny_model, tmp_path):
    out = tmp_path / "run"
    assert main(fast_args(tiny_model, out, "--max-steps", 1, "--set", "advantage_estimator=grpo", "--set", "kl_coef=0.05")) == 0
    row = read_jsonl(out / "metrics.jsonl")[1]
    assert {"objective/kl", "losses/kl_loss"} <= set(row) and "value/mean" not in row


def test_bad_config_is_a_clear_error(tiny_model, tmp_path, capsys):
    assert main(fast_args(tiny_model, tmp_path / "x", "--set", "cliprange=-1")) == 2
    assert "cliprange must be a finite number > 0" in capsys.readouterr().err
    assert main(fast_args(tiny_model, tmp_path / "y", "--set", "no_such_field=1")) == 2
    assert "unknown ppo field" in capsys.readouterr().err


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_two_processes_with_gloo(tiny_model, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): shared prompts, one log, DDP-synchronised weights,
    gradient accumulation (2 micro-batches per optimiser step), advantages whitened over both processes."""
    out = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    launch = ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd = [
        str(accelerate),
        *launch,
        "--main_process_port",
        str(free_port()),
        "-m",
        "lab.cli",
        *fast_args(tiny_model, out, "--max-steps", 2, "--set", "micro_batch_size=2"),
    ]
    # Its own process group, so a timeout kills the workers too, not just the launcher.
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["num_processes"] == 2
    assert steps_of(out / "metrics.jsonl") == [0, 1, 2]
    ckpt = out / "checkpoints" / "step-000002"
    assert (ckpt / "random_states_0.pkl").exists() and (ckpt / "random_states_1.pkl").exists()


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_trl_algorithms_write_the_same_run_directory(tiny_model, tmp_path, algo):
    out = tmp_path / algo
    assert main(fast_args(tiny_model, out, "--max-steps", 2, "--algo", algo)) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert {"reward/mean", "reward/accuracy", "response/length"} <= set(rows[1])
    # The held-out evaluation PPO writes, at step 0 and every eval_every (2) steps, in the same rows.
    assert [sorted(k for k in r if k.startswith("eval/")) for r in rows] == [EVAL_KEYS, [], EVAL_KEYS]
    assert all(0.0 <= r["eval/accuracy"] <= 1.0 for r in (rows[0], rows[2]))
    assert_compute_totals(rows)
    assert rows[1]["compute/trained_tokens"] <= rows[1]["compute/generated_tokens"]
    assert {r["step"] for r in read_jsonl(out / "rollouts.jsonl")} == {1, 2}
    assert json.loads((out / "config.json").read_text())["algo"] == algo
    assert count_parameters(load_model(out / "final")) == count_parameters(load_model(tiny_model))


def test_grpo_resume_continues_from_trl_checkpoint(tiny_model, tmp_path):
    out = tmp_path / "grpo"
    assert main(fast_args(tiny_model, out, "--max-steps", 1, "--algo", "grpo")) == 0
    assert main(fast_args(tiny_model, out, "--max-steps", 2, "--algo", "grpo", "--resume")) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert_compute_totals(rows)


def test_steps_per_round_come_from_trl_with_several_processes(tmp_path):
    """A generation round's optimizer steps follow TRL's derivation, which divides by the number of processes."""
    from trl import GRPOConfig

    from rl.trl_algos import optimizer_steps_per_round

    class TwoProcessConfig(GRPOConfig):
        @property
        def world_size(self) -> int:  # what TRL sees under `accelerate launch --num_processes 2`
            return 2

    common = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 4,
        "generation_batch_size": 16,
        "num_generations": 2,
        "num_iterations": 3,
        "report_to": "none",
        "bf16": False,
    }
    assert optimizer_steps_per_round(GRPOConfig(**common)) == 4 * 3
    assert optimizer_steps_per_round(TwoProcessConfig(**common)) == 2 * 3  # 16 / (4 x 2) micro-batches, 3 epochs
    assert optimizer_steps_per_round(GRPOConfig(**common, gradient_accumulation_steps=2)) == 4 * 3 // 2
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        optimizer_steps_per_round(GRPOConfig(**common, gradient_accumulation_steps=5))


def test_trl_refuses_a_mini_batch_that_does_not_divide_the_batch(tiny_model, tmp_path, capsys):
    # 4 prompts x 2 rollouts = 8 completions; 8 % 3 != 0 (the old check also needed 3 % 2 != 0 and passed 4).
    assert main(fast_args(tiny_model, tmp_path / "g", "--max-steps", 1, "--algo", "grpo", "--set", "mini_batch_size=3")) == 2
    assert "mini_batch_size 3 must divide" in capsys.readouterr().err
    assert main(fast_args(tiny_model, tmp_path / "h", "--max-steps", 1, "--algo", "grpo", "--set", "mini_batch_size=6")) == 2


def test_train_from_python_accepts_an_sft_run_directory(tmp_path):
    """`train(config)` resolves a run directory for the policy, the reference and the critic alike."""
    from rl.config import load_config, parse_overrides
    from rl.train import train
    from runtime.models import init_model
    from tests.rl.conftest import FAST

    sft_run = tmp_path / "sft"
    init_model(sft_run / "model", "llama", "tiny", seed=3)  # as `countdown-lab sft` leaves it: the model in model/
    (sft_run / "metrics.jsonl").write_text('{"step": 1}\n')
    config = load_config("tiny-cpu", {**parse_overrides(FAST), "model": str(sft_run), "total_steps": 1})
    out = train(config, tmp_path / "ppo", progress=False)
    assert steps_of(out / "metrics.jsonl") == [0, 1]
    assert load_model(out / "checkpoints" / "step-000001" / "policy").config.model_type == "llama"


def test_step_tasks_keep_each_prompts_group_on_one_process():
    """Group advantages need every completion of a prompt in the same process, consecutive."""
    from countdown_env import generate_tasks
    from rl.config import PPOConfig
    from rl.train import step_tasks

    config = PPOConfig(prompts_per_step=4, rollouts_per_prompt=3)
    tasks = generate_tasks(10, seed=0, preset="tiny")
    alone = step_tasks(tasks, config, 2, rank=0, world=1)
    shares = [step_tasks(tasks, config, 2, rank=r, world=2) for r in range(2)]
    assert shares[0] + shares[1] == alone
    for share in shares:
        groups = [share[i : i + 3] for i in range(0, len(share), 3)]
        assert len(groups) == 2 and all(len(set(g)) == 1 for g in groups)


def test_trl_takes_micro_batches_as_gradient_accumulation(tmp_path):
    """GRPO/RLOO: micro_batch_size is TRL's per-device batch, mini_batch_size one optimiser step (accumulated)."""
    from rl.config import PPOConfig
    from rl.trl_algos import optimizer_steps_per_round, trl_config

    base = {"model": "m", "prompts_per_step": 8, "rollouts_per_prompt": 2, "mini_batch_size": 8, "ppo_epochs": 1}
    whole = trl_config("grpo", PPOConfig(**base), tmp_path, 1, {}, "none", quiet=True)
    split = trl_config("grpo", PPOConfig(**base, micro_batch_size=2), tmp_path, 1, {}, "none", quiet=True)
    assert (whole.per_device_train_batch_size, whole.gradient_accumulation_steps) == (8, 1)
    assert (split.per_device_train_batch_size, split.gradient_accumulation_steps) == (2, 4)
    # The same optimiser steps per generation round: 16 completions / 8 per step.
    assert optimizer_steps_per_round(whole) == optimizer_steps_per_round(split) == 2


def test_grpo_with_lora_trains_adapters_only_and_saves_a_loadable_policy(tiny_model, tmp_path):
    """`--set lora_r` goes to TRL as a PEFT config: the saved policy is an adapter (LoRA weights only, naming
    its base), which loads by path onto the base as a plain model of the base's shape."""
    from safetensors import safe_open

    from runtime.models import load_model

    out = tmp_path / "grpo-lora"
    assert main(fast_args(tiny_model, out, "--max-steps", 2, "--algo", "grpo", "--set", "lora_r=4")) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    final = out / "final"
    with safe_open(str(final / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys), keys[:5]
    base = load_model(tiny_model).state_dict()
    loaded = load_model(str(final)).state_dict()
    assert set(loaded) == set(base) and all(loaded[n].shape == base[n].shape for n in base)
