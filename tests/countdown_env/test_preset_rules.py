"""One source of rules: a task preset's `Rules` reach the prompt, the env and the CLI; the `chat` prompt style."""

import json

import gymnasium
import pytest

from countdown_env import (
    ASSISTANT_PREFIX,
    ENV_ID,
    PRESETS,
    PROMPT_STYLES,
    Rules,
    Task,
    apply_chat_template,
    chat_messages,
    generate_tasks,
    preset_rules,
    render_prompt,
    score_response,
)
from countdown_env.env import CountdownEnv, feedback
from countdown_env.rules import CHAT_SYSTEM

#: 25 + 50 = 75 leaves four numbers unused: correct under `classic` (each number at most
#: once), wrong numbers under every other preset (each number exactly once).
SUBSET_TASK = Task((25, 50, 3, 7, 1, 2), 75)
SUBSET_ANSWER = "<think>25 + 50 = 75</think>\n<answer>25 + 50</answer>"


def expected_reward(preset: str) -> float:
    return 1.0 if not preset_rules(preset).use_all_numbers else preset_rules(preset).format_reward


class TemplateTokenizer:
    """Stands in for a Hugging Face tokenizer: just `chat_template` and `apply_chat_template`."""

    chat_template = "role-tags"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")


def test_preset_rules_are_the_presets_rules_with_overrides():
    assert preset_rules("tinyzero") == Rules()
    classic = preset_rules("classic")
    assert not classic.use_all_numbers and classic.integer_intermediates and not classic.allow_negative_intermediates
    strict = preset_rules("classic", strict_ending=True, format_reward=0.0)
    assert strict == classic.with_(strict_ending=True, format_reward=0.0)
    assert preset_rules("tiny", operators=["+", "-"]).operators == ("+", "-")
    with pytest.raises(ValueError, match="unknown task preset"):
        preset_rules("nope")
    with pytest.raises(ValueError, match="unknown rule"):
        preset_rules("tiny", use_all=True)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_presets_tasks_prompts_and_scorer_agree(preset):
    rules = preset_rules(preset)
    tasks = generate_tasks(3, seed=1, preset=preset)
    for task in tasks:
        # Solvable under the preset's rules: the generator's reference solution scores as correct.
        assert score_response(f"<answer>{task.solution}</answer>", task, rules).correct
        for style in ("tinyzero", "chat"):
            prompt = render_prompt(task, style, rules, tokenizer=TemplateTokenizer())
            assert rules.describe() in prompt
    # The env generates, prompts and scores with the same rules.
    env = CountdownEnv(preset=preset, prompt_style="tinyzero")
    assert env.rules == rules and env.task_config.rules == rules
    obs, _ = env.reset(seed=0)
    assert rules.describe() in obs
    env.reset(options={"task": SUBSET_TASK})
    assert env.step(SUBSET_ANSWER)[1] == pytest.approx(expected_reward(preset))
    # A dict of overrides goes on top of the preset's rules.
    assert CountdownEnv(preset=preset, rules={"strict_ending": True}).rules == rules.with_(strict_ending=True)


def test_classic_prompt_says_at_most_once_and_tinyzero_only_once():
    assert "each number can be used at most once" in render_prompt(SUBSET_TASK, "tinyzero", preset_rules("classic"))
    for preset in ("tinyzero", "study"):  # TinyZero's words, whose scorer (like ours) requires every number
        assert "each number can only be used once" in render_prompt(SUBSET_TASK, "tinyzero", preset_rules(preset))


def test_chat_is_the_studys_system_and_user_turns_then_the_assistants_opening():
    assert {"tinyzero", "compact", "chat"} <= set(PROMPT_STYLES)
    rules = preset_rules("classic")
    messages = chat_messages(SUBSET_TASK, rules)
    assert messages == [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": " " + rules.question(SUBSET_TASK)}]
    text = render_prompt(SUBSET_TASK, "chat", rules, tokenizer=TemplateTokenizer())
    assert text == (
        f"<|system|>{CHAT_SYSTEM}<|end|>\n<|user|> {rules.question(SUBSET_TASK)}<|end|>\n<|assistant|>"
        "Let me solve this step by step.\n<think>"
    )
    # A plain callable renders the messages too (no tokenizer object needed).
    assert (
        render_prompt(SUBSET_TASK, "chat", rules, tokenizer=lambda ms: ms[1]["content"])
        == " " + rules.question(SUBSET_TASK) + ASSISTANT_PREFIX
    )
    with pytest.raises(ValueError, match="needs a tokenizer"):
        render_prompt(SUBSET_TASK, "chat", rules)

    class NoTemplate(TemplateTokenizer):
        chat_template = None

    with pytest.raises(ValueError, match="chat template"):
        apply_chat_template(messages, NoTemplate())
    with pytest.raises(ValueError, match="unknown prompt style"):
        render_prompt(SUBSET_TASK, "chatty")


def test_env_renders_chat_and_keeps_the_conversation_across_turns():
    tok = TemplateTokenizer()
    env = gymnasium.make(ENV_ID, preset="classic", prompt_style="chat", tokenizer=tok, max_attempts=3, disable_env_checker=True)
    obs, _ = env.reset(options={"task": SUBSET_TASK})
    rules = preset_rules("classic")
    assert obs == render_prompt(SUBSET_TASK, "chat", rules, tokenizer=tok)
    wrong = "<answer>25 + 3</answer>"
    obs, reward, terminated, truncated, info = env.step(wrong)
    assert not (terminated or truncated) and reward == 0.0 and info["score"].reward == pytest.approx(0.1)  # not the last turn
    conversation = [
        *chat_messages(SUBSET_TASK, rules),
        {"role": "assistant", "content": ASSISTANT_PREFIX + wrong},  # the turn as the model saw it
        {"role": "user", "content": feedback(info["score"])},
    ]
    assert obs == tok.apply_chat_template(conversation, add_generation_prompt=True) + ASSISTANT_PREFIX
    assert "A conversation between User and Assistant" not in obs  # stays chat, never the TinyZero template
    obs, reward, terminated, _, _ = env.step(SUBSET_ANSWER)
    assert terminated and reward == 1.0 and obs.endswith(SUBSET_ANSWER)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        CountdownEnv(prompt_style="chat")


def test_cli_scores_and_solves_under_the_presets_rules(tmp_path, capsys):
    from lab.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({**SUBSET_TASK.to_dict(), "text": SUBSET_ANSWER}) + "\n")
    for preset in ("classic", "tinyzero"):
        capsys.readouterr()
        assert main(["score", str(rows), "--preset", preset]) == 0
        assert json.loads(capsys.readouterr().out)["accuracy"] == (1.0 if preset == "classic" else 0.0)
    # 2 + 3 = 5 leaves 1000 unused: solvable under classic only.
    assert main(["solve", "2", "3", "1000", "--target", "5", "--preset", "classic"]) == 0
    assert main(["solve", "2", "3", "1000", "--target", "5", "--tv-rules"]) == 0
    assert main(["solve", "2", "3", "1000", "--target", "5", "--preset", "tinyzero"]) == 1
