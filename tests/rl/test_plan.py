"""`countdown-lab plan`: the memory arithmetic, and its exit codes."""

from __future__ import annotations

import pytest

from rl.config import PPOConfig, load_config
from rl.plan import GB, KNOWN_ARCHS, arch_from_config, arch_of, check_fits, plan

QWEN_3B = KNOWN_ARCHS["Qwen/Qwen2.5-3B"]


def test_known_parameter_counts():
    assert QWEN_3B.policy_params / 1e9 == pytest.approx(3.09, abs=0.01)
    assert KNOWN_ARCHS["meta-llama/Llama-3.2-3B"].policy_params / 1e9 == pytest.approx(3.21, abs=0.01)
    assert KNOWN_ARCHS["Qwen/Qwen2.5-7B"].policy_params / 1e9 == pytest.approx(7.62, abs=0.01)
    assert KNOWN_ARCHS["HuggingFaceTB/SmolLM2-135M-Instruct"].policy_params / 1e6 == pytest.approx(134.5, abs=0.1)


def test_the_formula_counts_a_local_model_exactly(tiny_model):
    """Shapes read from config.json give the exact parameter count of the policy and of the critic."""
    import json

    from rl.setup import load_critic
    from runtime.models import count_parameters, load_model

    arch = arch_from_config(json.loads((tiny_model / "config.json").read_text()))
    assert arch == arch_of(str(tiny_model))
    assert arch.policy_params == count_parameters(load_model(tiny_model))
    assert arch.critic_params == count_parameters(load_critic(str(tiny_model)))


def fp32_config(**changes) -> PPOConfig:
    return load_config(
        "paper-3b", {"dtype": "float32", "sharding": "ddp", "gradient_checkpointing": False, "micro_batch_size": 16, **changes}
    )


def test_fp32_adamw_is_16_bytes_per_parameter():
    """3.09B parameters trained with AdamW in fp32: weights + gradients + moments = 16 B/param, ~49 GB per model."""
    policy = plan(fp32_config(), 4, 80).rows[0]
    assert policy.name == "policy"
    assert (policy.weights + policy.gradients + policy.optimizer) / GB == pytest.approx(16 * QWEN_3B.policy_params / GB)
    assert (policy.weights + policy.gradients + policy.optimizer) / GB == pytest.approx(49.4, abs=0.1)


def test_sharding_divides_what_it_shards():
    """ZeRO-2/3 run DeepSpeed's bf16 mode (the shipped accelerate configs): bf16 weights and gradients, an fp32 master
    copy and the moments in the optimiser states (2 + 2 + 12 = 16 bytes, as fp32 AdamW); FSDP keeps fp32 weights."""
    ddp, zero2, zero3, fsdp = (plan(fp32_config(sharding=s), 4, 80).rows[0] for s in ("ddp", "zero2", "zero3", "fsdp"))
    n = QWEN_3B.policy_params
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (4 * n, 4 * n, 8 * n)
    assert (zero2.weights, zero2.gradients, zero2.optimizer) == (2 * n, 2 * n / 4, 12 * n / 4)
    assert (zero3.weights, zero3.gradients, zero3.optimizer) == (2 * n / 4, 2 * n / 4, 12 * n / 4)
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer) == (4 * n / 4, 4 * n / 4, 8 * n / 4)


def test_generation_counts_exactly_what_is_gathered():
    """ZeRO-3 gathers the policy only, in bf16; FSDP the whole module (policy and critic) in fp32; DDP and ZeRO-2
    hold whole weights and gather nothing. Each GPU adds the other GPUs' shares: 3/4 of it on 4 GPUs."""
    from rl.config import gathered_for_rollouts

    def gathered(sharding: str, **changes) -> float:
        return plan(fp32_config(sharding=sharding, **changes), 4, 80).generation.weights

    policy, critic = QWEN_3B.policy_params, QWEN_3B.critic_params
    assert gathered("zero3") == pytest.approx(policy * 2 * 3 / 4)
    assert gathered("fsdp") == pytest.approx((policy + critic) * 4 * 3 / 4)
    assert gathered("fsdp", advantage_estimator="group") == pytest.approx(policy * 4 * 3 / 4)
    assert gathered("ddp") == gathered("zero2") == 0
    assert gathered_for_rollouts("zero3", True) == ("policy",)
    assert gathered_for_rollouts("fsdp", True) == ("policy", "critic")
    assert gathered_for_rollouts("zero2", True) == gathered_for_rollouts("ddp", True) == ()


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_paper_3b_takes_two_optimiser_steps_per_ppo_step_on_any_gpu_count(gpus, capsys):
    """The study's ppo_mini_batch_size (128 prompts x 4 completions) counts over every GPU: 1,024 completions
    make 2 optimiser steps whatever the GPU count; each GPU holds 512 / gpus of each."""
    from lab.cli import main
    from rl.config import local_minibatch

    config = load_config("ppo-paper-3b")
    assert config.optimizer_steps == 2 and local_minibatch(config, gpus) == 512 // gpus
    main(["plan", "--config", "ppo-paper-3b", "--gpus", str(gpus), "--gpu-memory-gb", "80"])
    assert "in 2 optimiser steps per PPO step" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpus", "3", "--gpu-memory-gb", "80"], "prompts_per_step 256 must be divisible by the number of processes 3"),
        (["--gpus", "4", "--gpu-memory-gb", "80", "--set", "prompts_per_step=2"], "prompts_per_step 2 must be divisible"),
        (["--gpus", "100000000", "--gpu-memory-gb", "80"], "must be divisible by the number of processes 100000000"),
        (["--gpus", "4", "--gpu-memory-gb", "nan"], "--gpu-memory-gb a number > 0, got 4 and nan"),
        (["--gpus", "4", "--gpu-memory-gb", "inf"], "--gpu-memory-gb a number > 0, got 4 and inf"),
        (["--gpus", "2", "--gpu-memory-gb", "80", "--set", "mini_batch_size=384"], "must split into 3 equal shares"),
    ],
)
def test_plan_refuses_what_the_runner_refuses(args, message, capsys):
    """`plan` runs the runner's own batch checks (`rl.config.check_batches`): one line `error: ...`, exit 2."""
    from lab.cli import main
    from rl.config import check_batches

    assert main(["plan", "--config", "ppo-paper-3b", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    if "nan" not in message and "inf" not in message:  # the runner's check, called as `ppo` calls it
        config = load_config("ppo-paper-3b", dict(a.split("=") for a in args if "=" in a))
        with pytest.raises(ValueError, match=message.split(" must")[0]):
            check_batches(config, int(args[1]))


def test_the_reference_is_in_the_runs_dtype_and_absent_when_unread():
    names = lambda p: [r.name for r in p.rows]  # noqa: E731
    assert names(plan(fp32_config(), 4, 80)) == ["policy", "critic", "reference"]
    ref32 = plan(fp32_config(), 4, 80).rows[2].weights
    assert plan(fp32_config(dtype="bfloat16"), 4, 80).rows[2].weights == ref32 / 2
    assert names(plan(fp32_config(advantage_estimator="group", kl_coef=0.0), 4, 80)) == ["policy"]


def test_memory_knobs_lower_activations_and_lora_lowers_states():
    base = plan(fp32_config(), 4, 80).rows[0]
    assert plan(fp32_config(gradient_checkpointing=True), 4, 80).rows[0].activations < base.activations / 3
    assert plan(fp32_config(micro_batch_size=4), 4, 80).rows[0].activations == pytest.approx(base.activations / 4)
    lora = plan(fp32_config(), 4, 80, lora_r=16).rows[0]
    assert lora.optimizer < base.optimizer / 50 and lora.gradients < base.gradients / 50
    # The frozen base is stored in the run's dtype: bf16 halves it.
    assert plan(fp32_config(dtype="bfloat16"), 4, 80, lora_r=16).rows[0].weights < base.weights / 1.9


def test_paper_3b_fits_four_80gb_gpus_and_not_one_24gb_gpu():
    config = load_config("paper-3b")
    assert plan(config, 4, 80).fits
    assert not plan(config, 1, 24).fits
    with pytest.raises(ValueError, match="fits with: .*micro_batch_size"):
        check_fits(config, 1, 24)


def test_plan_cli_exit_codes(capsys):
    from lab.cli import main

    assert main(["plan", "--preset", "paper-3b", "--gpus", "4", "--gpu-memory-gb", "80"]) == 0
    out = capsys.readouterr().out
    assert "fits:" in out and all(name in out for name in ("policy", "critic", "reference", "generation", "weights", "optim"))
    assert main(["plan", "--preset", "paper-3b", "--gpus", "1", "--gpu-memory-gb", "24"]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "fits with: --set" in out
    assert main(["plan", "--preset", "paper-3b", "--gpus", "1", "--gpu-memory-gb", "24", "--model", "nobody/nothing"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_generation_logits_are_kept_only_while_small_unless_set():
    from rl.config import KEPT_LOGITS_LIMIT, keeps_generation_logits

    auto = load_config("tiny-cpu", {"logprobs_from_generation": None, "max_new_tokens": 256})
    assert auto.logprobs_from_generation is None
    # A character-level tiny model (vocab ~100) keeps them; SmolLM2 (49,152) at 16 x 256 tokens would hold 0.8 GB.
    assert keeps_generation_logits(auto, 100, 16)
    assert not keeps_generation_logits(auto, 49_152, 16)
    assert keeps_generation_logits(auto, 49_152, 4) == (KEPT_LOGITS_LIMIT >= 4 * 256 * 49_152 * 4)
    # An explicit setting wins either way, from YAML or --set.
    assert keeps_generation_logits(load_config("tiny-cpu", {"logprobs_from_generation": True}), 49_152, 16)
    assert not keeps_generation_logits(load_config("tiny-cpu", {"logprobs_from_generation": "false"}), 100, 16)
    # The plan counts the kept logits exactly when the run would keep them.
    small = plan(load_config("paper-3b", {"logprobs_from_generation": None}), 4, 80)
    kept = plan(load_config("paper-3b", {"logprobs_from_generation": True}), 4, 80)
    assert kept.generation.activations > small.generation.activations
