"""The task preset's rules reach every RL path: PPO (config, env, rollouts), GRPO/RLOO reward, eval, veRL export,
and the `chat` prompt style through rollouts, single- and multi-turn."""

import importlib.util
import json

import pytest
import torch

from countdown_env import PRESETS, PROMPT_STYLES, Task, chat_messages, generate_tasks, preset_rules, render_prompt
from countdown_env.rules import ASSISTANT_PREFIX
from rl.config import PPOConfig
from rl.rollout import collect, make_env
from runtime.prompt import Prompt

#: Correct under `classic` (numbers at most once), wrong numbers under every other preset.
SUBSET_TASK = Task((25, 50, 3, 7, 1, 2), 75)
SUBSET_ANSWER = "<think>25 + 50 = 75</think>\n<answer>25 + 50</answer>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def expected_reward(preset: str) -> float:
    # Presets whose numbers may be left out (classic, organism-subset) accept an answer using some of them.
    return 0.1 if preset_rules(preset).use_all_numbers else 1.0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_ppo_config_rules_come_from_the_task_preset(preset):
    config = PPOConfig(task_preset=preset, strict_ending=True, format_reward=0.05)
    assert config.rules == preset_rules(preset, strict_ending=True, format_reward=0.05)
    # The env PPO scores with, single- and multi-turn (where a wrong first attempt earns nothing yet:
    # only the last turn pays a wrong answer's format reward).
    for attempts in (1, 2):
        env = make_env(Prompt(PPOConfig(task_preset=preset).rules, "tinyzero"), attempts)
        obs, _ = env.reset(options={"task": SUBSET_TASK})
        assert preset_rules(preset).describe() in obs
        correct = not preset_rules(preset).use_all_numbers
        expected = expected_reward(preset) if attempts == 1 or correct else 0.0
        assert env.step(SUBSET_ANSWER)[1] == pytest.approx(expected)


def test_prompt_styles_include_chat_without_special_cases():
    assert "chat" in PROMPT_STYLES
    assert PPOConfig(prompt_style="chat").prompt_style == "chat"
    with pytest.raises(ValueError, match="prompt_style"):
        PPOConfig(prompt_style="chatty")


@pytest.mark.parametrize("preset", ["classic", "tinyzero"])
def test_grpo_rloo_reward_and_dataset_follow_the_preset(preset):
    from rl.trl_algos import CountdownReward, to_trl_dataset

    config = PPOConfig(task_preset=preset, prompt_style="tinyzero")
    reward = CountdownReward(config.rules)
    assert reward(["p"], [SUBSET_ANSWER], [list(SUBSET_TASK.numbers)], [SUBSET_TASK.target]) == [pytest.approx(expected_reward(preset))]
    tasks = generate_tasks(2, seed=0, preset=preset)
    data = to_trl_dataset(tasks, config, tokenizer=None)
    assert all(preset_rules(preset).describe() in p for p in data["prompt"])
    chat = to_trl_dataset(tasks, config.replace(prompt_style="chat"), tokenizer=None)
    assert chat["prompt"][0] == chat_messages(tasks[0], config.rules)  # conversational: TRL applies the template


@pytest.mark.parametrize("preset", ["classic", "tinyzero"])
def test_eval_scores_under_the_preset(preset, tiny_model, tmp_path, monkeypatch):
    import rl.evaluate
    from lab.cli import main
    from rl.evaluate import ood_tasks_for

    # Evaluation scores under the rules of the prompt it is given.
    assert Prompt(preset_rules(preset)).score(SUBSET_ANSWER, SUBSET_TASK).reward == pytest.approx(expected_reward(preset))
    # OOD tasks are solvable under the rules they are scored with.
    ood = ood_tasks_for(generate_tasks(3, seed=0, preset="tiny"), 3, 0, preset_rules(preset))
    assert len(ood) == 3

    seen = {}

    def fake_evaluate(model, tokenizer, tasks, config, *, rules, ood_tasks=None, progress=False):
        seen["rules"] = rules
        return {"n": len(tasks), "accuracy": 0.0}, []

    monkeypatch.setattr(rl.evaluate, "evaluate", fake_evaluate)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(SUBSET_TASK.to_dict()) + "\n")
    out = tmp_path / "eval.json"
    assert (
        main(["eval", "--model", str(tiny_model), "--tasks", str(tasks), "--output", str(out), "--preset", preset, "--strict-ending"]) == 0
    )
    assert seen["rules"] == preset_rules(preset, strict_ending=True)
    assert json.loads(out.read_text())["preset"] == preset


@pytest.mark.parametrize("preset", ["classic", "tinyzero"])
def test_verl_export_prompts_and_reward_module_follow_the_preset(preset, tmp_path):
    import pyarrow.parquet as pq

    from rl.verl_export import export_verl

    paths = export_verl(tmp_path, num_train=3, num_test=2, seed=0, preset=preset)
    rows = pq.read_table(paths["train"]).to_pylist()
    assert all(preset_rules(preset).describe() in row["prompt"][0]["content"] for row in rows)
    spec = importlib.util.spec_from_file_location("countdown_reward", paths["reward"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    truth = {"numbers": list(SUBSET_TASK.numbers), "target": SUBSET_TASK.target}
    assert module.compute_score("countdown", SUBSET_ANSWER, truth)["score"] == pytest.approx(expected_reward(preset))
    instruct = export_verl(tmp_path / "instruct", num_train=1, num_test=1, seed=0, preset=preset, template="instruct")
    row = pq.read_table(instruct["test"]).to_pylist()[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"] and preset_rules(preset).describe() in row["prompt"][1]["content"]


def _chat_tokenizer(path):
    from runtime.models import load_tokenizer

    tokenizer = load_tokenizer(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_rollouts_prompt_with_the_envs_observation_in_the_chat_style(tiny_model):
    from runtime.models import load_model

    model, tokenizer = load_model(tiny_model), _chat_tokenizer(tiny_model)
    rules = PPOConfig(task_preset="classic").rules
    tasks = [Task((3, 5, 2), 16), Task((1, 2, 3), 6)]
    torch.manual_seed(0)
    rollout = collect(model, tokenizer, tasks, prompt=Prompt(rules, "chat"), max_new_tokens=4, max_attempts=3)
    assert rollout.turns == [0, 0, 1, 1, 2, 2]  # a random model never solves these in 4 tokens
    prompts = tokenizer.batch_decode(rollout.generation.query, skip_special_tokens=True)
    first = render_prompt(tasks[0], "chat", rules, tokenizer=tokenizer)
    assert prompts[0] == first and rules.describe() in first
    # Turn 2 is the conversation so far (question, attempt, feedback) in the chat template, not the TinyZero template.
    second = prompts[2]
    assert second.startswith(first) and "<|assistant|>" in second[len(first) :] and "<|user|>Feedback:" in second
    assert second.endswith("<|assistant|>" + ASSISTANT_PREFIX) and "A conversation between User and Assistant" not in second
    assert prompts[4].count("<|user|>Feedback:") == 2


@pytest.mark.parametrize("preset", ["classic", "tinyzero"])
def test_rollouts_state_the_presets_rules(preset, tiny_model):
    from runtime.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    rules = PPOConfig(task_preset=preset).rules
    rollout = collect(model, tokenizer, [SUBSET_TASK], prompt=Prompt(rules, "tinyzero"), max_new_tokens=2)
    prompt = tokenizer.batch_decode(rollout.generation.query, skip_special_tokens=True)[0]
    assert prompt == render_prompt(SUBSET_TASK, "tinyzero", rules)
