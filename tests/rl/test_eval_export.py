"""`countdown-lab eval`, pass@k, `export-verl` (parquet schema, compute_score), config presets, rollout masks."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from countdown_env import Task, generate_tasks, read_tasks, write_tasks
from countdown_env.files import read_jsonl
from lab.cli import main
from rl.config import PPOConfig, load_config, parse_overrides
from rl.evaluate import normalize_equation, ood_tasks_for, pass_at_k
from rl.rollout import collect
from rl.verl_export import compute_score
from runtime.generation import response_mask


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"), [(8, 0, 1, 0.0), (8, 8, 8, 1.0), (8, 2, 1, 0.25), (8, 1, 8, 1.0), (4, 1, 2, 0.5), (8, 2, 4, 1 - 15 / 70)]
)
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_normalize_equation_and_ood_tasks():
    assert normalize_equation(" (3 + 5) * 2 = 16") == normalize_equation("(3+5)*2")
    tasks = generate_tasks(20, seed=0, preset="tiny")
    ood = ood_tasks_for(tasks, 5, seed=0)
    assert len(ood) == 5 and all(len(t.numbers) == 4 for t in ood)


def test_eval_command_reports_and_saves_completions(tiny_model, tmp_path):
    tasks = write_tasks(generate_tasks(6, seed=0, preset="tiny", split="test"), tmp_path / "tasks.jsonl")

    def run_eval(out: Path) -> dict:
        args = ["eval", "--model", str(tiny_model), "--tasks", str(tasks), "--output", str(out)]
        assert main([*args, "--k", "4", "--max-new-tokens", "16", "--num-ood", "3"]) == 0
        return json.loads(out.read_text())

    report = run_eval(tmp_path / "eval.json")
    for key in (
        "accuracy",
        "n",
        "format_rate",
        "response_length",
        "sample_accuracy",
        "pass@1",
        "pass@2",
        "pass@4",
        "distinct_correct",
        "ood/accuracy",
        "ood/n",
    ):
        assert key in report, key
    assert report["n"] == 6 and report["ood/n"] == 3 and report["ood/num_numbers"] == 4
    assert 0.0 <= report["accuracy"] <= 1.0 and 0 < report["response_length"] <= 16
    rows = read_jsonl(Path(report["completions"]))
    assert len(rows) == 6 + 6 * 4 + 3  # greedy, samples, OOD greedy
    assert {"text", "numbers", "target", "reward", "correct"} <= set(rows[0])
    assert sorted({r["mode"] for r in rows}) == ["greedy", "sample"]
    # The same seed gives the same samples.
    rows2 = read_jsonl(Path(run_eval(tmp_path / "eval2.json")["completions"]))
    assert [r["text"] for r in rows] == [r["text"] for r in rows2]


def test_export_verl_schema_and_reward_module(tmp_path):
    assert main(["export-verl", "--output-dir", str(tmp_path), "-n", "30", "--num-test", "10", "--preset", "tiny"]) == 0
    import pyarrow.parquet as pq

    train = pq.read_table(tmp_path / "train.parquet").to_pylist()
    test = pq.read_table(tmp_path / "test.parquet").to_pylist()
    assert len(train) == 30 and len(test) == 10
    row = train[0]
    assert row["data_source"] == "countdown" and row["ability"] == "math"
    assert row["prompt"][0]["role"] == "user" and "<answer>" in row["prompt"][0]["content"]
    assert row["reward_model"]["style"] == "rule"
    assert row["reward_model"]["ground_truth"] == {"target": row["target"], "numbers": row["nums"]}
    assert row["extra_info"] == {"split": "train", "index": 0}
    assert {t.key for t in read_tasks(tmp_path / "train.parquet")}.isdisjoint({t.key for t in read_tasks(tmp_path / "test.parquet")})

    spec = importlib.util.spec_from_file_location("countdown_reward", tmp_path / "countdown_reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    truth = {"target": 16, "numbers": [3, 5, 2]}
    assert module.compute_score("countdown", "<think>ok</think>\n<answer>(3 + 5) * 2</answer>", truth) == {"score": 1.0, "acc": True}
    assert module.compute_score("countdown", "<answer>3 + 5 + 2</answer>", truth, {"split": "test"}) == {"score": 0.1, "acc": False}
    assert module.compute_score("countdown", "no answer", truth) == {"score": 0.0, "acc": False}
    assert compute_score("countdown", "no answer", row["reward_model"]["ground_truth"]) == {"score": 0.0, "acc": False}


def test_presets_load_and_overrides_are_typed():
    paper = load_config("paper-3b")
    assert (paper.prompts_per_step, paper.rollouts_per_prompt, paper.actor_lr, paper.critic_lr) == (256, 4, 1e-6, 1e-5)
    assert (paper.max_new_tokens, paper.total_steps, paper.model, paper.kl_coef) == (1024, 250, "Qwen/Qwen2.5-3B", 0.001)
    tiny = load_config("tiny-cpu", parse_overrides(["actor_lr=1e-5", "strict_ending=false"]))
    assert tiny.actor_lr == 1e-5 and tiny.strict_ending is False and tiny.rules.strict_ending is False
    assert load_config("tiny-cpu").rules.strict_ending is True and load_config("tiny-cpu").truncated == "mask"
    with pytest.raises(ValueError, match="truncated must be one of"):
        PPOConfig(truncated="drop")
    with pytest.raises(ValueError, match="total_steps must be of type int"):
        load_config(None, {"total_steps": "many"})
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["actor_lr"])


def test_response_mask_covers_tokens_through_the_first_eos():
    eos, pad = 2, 0
    response = torch.tensor([[5, 6, eos, 7], [5, 6, 7, 8], [eos, pad, pad, pad]])
    mask, finished = response_mask(response, eos)
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert finished.tolist() == [True, False, True]


@pytest.mark.parametrize("mode", ["mask", "zero", "keep"])
def test_collect_applies_the_truncation_rule(tiny_model, mode):
    from runtime.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    torch.manual_seed(0)
    tasks = generate_tasks(8, seed=0, preset="tiny")
    rollout = collect(
        model, tokenizer, tasks, prompt=load_config("tiny-cpu").prompt, max_new_tokens=6, truncated=mode
    )
    cut = ~rollout.generation.finished
    assert cut.any()  # a random model rarely stops within 6 tokens
    masked = rollout.loss_mask[cut].sum().item()
    assert (masked == 0) if mode == "mask" else (masked > 0)
    if mode == "zero":
        assert rollout.scores[cut].abs().sum().item() == 0.0
    assert [t.key for t in rollout.tasks] == [t.key for t in tasks]


def test_multi_turn_feeds_back_and_asks_again(tiny_model):
    from runtime.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    tasks = [Task((3, 5, 2), 16), Task((1, 2, 3), 6)]
    rollout = collect(
        model, tokenizer, tasks, prompt=load_config("tiny-cpu").prompt, max_new_tokens=4, max_attempts=3
    )
    # A random model never solves these in 4 tokens: every episode uses all 3 turns.
    assert rollout.turns == [0, 0, 1, 1, 2, 2]
    prompts = tokenizer.batch_decode(rollout.generation.query, skip_special_tokens=True)
    assert "Feedback:" not in prompts[0] and "Feedback:" in prompts[2] and "Feedback:" in prompts[4]
    assert not math.isnan(rollout.scores.sum().item())


def test_every_config_field_is_documented_in_help():
    from dataclasses import fields

    from rl.config import field_docs, help_text

    assert set(field_docs()) == {f.name for f in fields(PPOConfig)}
    assert "actor_lr = 3e-05: Policy learning rate" in help_text()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generation_logprobs_equal_a_forward_pass(tiny_model, temperature):
    """The log-probs kept from `generate` are those PPO's forward pass computes (left padding, masks, temperature)."""
    from rl.ppo import logprobs_from_logits
    from runtime.logprobs import forward_response
    from runtime.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    torch.manual_seed(0)
    tasks = [Task((3, 5, 2), 16), Task((11, 12, 13, 14), 20), Task((1, 2, 3), 6)]  # prompts of different lengths
    rollout = collect(
        model,
        tokenizer,
        tasks,
        prompt=load_config("tiny-cpu").prompt,
        max_new_tokens=12,
        temperature=temperature,
        return_logprobs=True,
    )
    gen = rollout.generation
    with torch.no_grad():
        logits = forward_response(model, gen.query, gen.query_mask, gen.response, gen.response_mask) / temperature
    expected = logprobs_from_logits(logits, gen.response) * gen.response_mask
    assert torch.allclose(gen.logprobs, expected, atol=1e-4)


def test_run_directories_resolve_to_their_model(tiny_model, tmp_path):
    from runtime.models import resolve_model_path as resolve_model

    assert resolve_model(str(tiny_model)) == str(tiny_model)
    assert resolve_model("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"
    sft_run = tmp_path / "sft"
    (sft_run / "model").mkdir(parents=True)
    (sft_run / "model" / "config.json").write_text("{}")
    (sft_run / "metrics.jsonl").write_text("")
    assert resolve_model(str(sft_run)) == str(sft_run / "model")
    ppo_run = tmp_path / "ppo"
    for step in (2, 10):
        (ppo_run / "checkpoints" / f"step-{step:06d}" / "policy").mkdir(parents=True)
        (ppo_run / "checkpoints" / f"step-{step:06d}" / "policy" / "config.json").write_text("{}")
    (ppo_run / "checkpoints" / ".tmp-step-000011").mkdir()  # an unfinished checkpoint is ignored
    assert resolve_model(str(ppo_run)) == str(ppo_run / "checkpoints" / "step-000010" / "policy")
    grpo_run = tmp_path / "grpo"
    (grpo_run / "final").mkdir(parents=True)
    (grpo_run / "final" / "config.json").write_text("{}")
    assert resolve_model(str(grpo_run)) == str(grpo_run / "final")
