"""The one prompt object (rules + style) and the one name of the token budget."""

from __future__ import annotations

import json

import pytest

from countdown_env import DEFAULT_RULES, Task, preset_rules, render_prompt, score_response
from runtime.prompt import Prompt

TASK = Task((3, 5, 7), 8)
#: Correct where a number may stay unused (`classic`), wrong where every number must be used (the default).
SUBSET = "<think>3+5=8</think>\n<answer>3+5</answer>"


def test_renders_and_scores_under_the_same_rules():
    classic = Prompt.of_preset("classic", "tinyzero")
    assert classic.rules == preset_rules("classic") and classic.rules != DEFAULT_RULES
    assert classic.render(TASK) == render_prompt(TASK, "tinyzero", preset_rules("classic"))
    assert classic.rules.describe() in classic.render(TASK)  # the prompt states the rules the scorer enforces
    assert classic.score(SUBSET, TASK) == score_response(SUBSET, TASK, preset_rules("classic"))
    assert classic.score(SUBSET, TASK).correct and not Prompt().score(SUBSET, TASK).correct


def test_with_rules_changes_one_rule_and_keeps_the_style():
    strict = Prompt.of_preset("tiny", "compact", strict_ending=True)
    tolerant = strict.with_rules(strict_ending=False)
    assert tolerant.style == "compact" and tolerant.rules == strict.rules.with_(strict_ending=False) != strict.rules
    babble = "<answer>3+5</answer> and more"
    task = Task((3, 5), 8)
    assert tolerant.score(babble, task).correct and not strict.score(babble, task).correct


def test_bad_style_or_rules_are_refused():
    with pytest.raises(ValueError, match="prompt style"):
        Prompt(style="chatty")
    with pytest.raises(TypeError, match="Rules"):
        Prompt(rules={"strict_ending": True})


def test_old_budget_names_load_with_a_one_line_note(tmp_path, capsys):
    from priming.sft import SFTRunConfig
    from rl.config import PPOConfig, load_config

    old = tmp_path / "old.yaml"  # a preset written before the rename
    old.write_text("max_response_length: 48\nprompts_per_step: 4\n")
    config = load_config(old)
    assert config.max_new_tokens == 48 and config.max_response_length is None
    assert capsys.readouterr().err.count("max_response_length is now max_new_tokens") == 1
    # --set with the old name over a preset that names the new one (an experiment's `ppo:` overrides).
    assert load_config("ppo-tiny-cpu", {"max_response_length": 20}).max_new_tokens == 20
    # config.json records the new name only, and loads back as it was, without a note.
    capsys.readouterr()
    saved = json.loads(json.dumps(config.to_dict()))
    assert saved["max_new_tokens"] == 48 and saved["max_response_length"] is None
    assert PPOConfig(**saved) == config and capsys.readouterr().err == ""
    # An old run's config.json.
    assert PPOConfig(**{**saved, "max_new_tokens": 64, "max_response_length": 48}).max_new_tokens == 48
    sft = SFTRunConfig(model="m", data="d", output_dir="o", eval_max_new_tokens=64)
    assert sft.max_new_tokens == 64 and sft.eval_max_new_tokens is None
    assert "eval_max_new_tokens is now max_new_tokens" in capsys.readouterr().err


def test_every_shipped_preset_uses_the_new_name():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    files = [*(root / "rl" / "configs").glob("*.yaml"), *(root / "priming" / "configs").glob("*.yaml"),
             root / "organism" / "presets" / "ppo-organism.yaml", root / "organism" / "presets" / "sft-organism.yaml"]  # fmt: skip
    for path in files:
        assert not {"max_response_length", "eval_max_new_tokens"} & set(yaml.safe_load(path.read_text()) or {}), path
