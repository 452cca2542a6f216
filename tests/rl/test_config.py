"""PPOConfig: every preset loads; the advantage estimator's options are validated."""

import json

import pytest

from rl.config import PPOConfig, load_config, presets


@pytest.mark.parametrize("name", presets())
def test_every_preset_loads(name):
    assert isinstance(load_config(name), PPOConfig)


def test_organism_preset_is_critic_free_group_rl():
    from lab.pipeline.presets import resolve

    config = load_config(resolve("ppo", "ppo-organism"))
    assert config.advantage_estimator == "group" and not config.uses_critic and config.group_normalize_std is False
    assert config.task_preset == "organism"
    assert (config.kl_coef, config.prompts_per_step, config.rollouts_per_prompt, config.mini_batch_size) == (0.0, 16, 8, 128)
    assert (config.format_reward, config.max_new_tokens, config.num_eval_tasks, config.log_rollouts) == (0.0, 224, 400, 32)
    assert config.truncated == "zero"  # running out of tokens is penalised (issue 19)


def test_a_truncated_completion_scores_zero_unless_a_preset_says_otherwise():
    assert PPOConfig().truncated == "zero"  # TinyZero's and veRL's rule
    assert (load_config("ppo-tiny-cpu").truncated, load_config("ppo-paper-3b").truncated) == ("mask", "keep")
    with pytest.raises(ValueError, match="truncated must be one of"):
        PPOConfig(truncated="drop")


def test_advantage_estimator_choices():
    assert PPOConfig().uses_critic and PPOConfig().advantage_estimator == "gae"
    assert not PPOConfig(advantage_estimator="grpo").uses_critic  # veRL's name, an alias of `group`
    with pytest.raises(ValueError, match="advantage_estimator must be one of"):
        PPOConfig(advantage_estimator="rloo")
    with pytest.raises(ValueError, match="single-turn"):
        PPOConfig(advantage_estimator="group", max_attempts=2)
    with pytest.raises(ValueError, match="rollouts_per_prompt >= 2"):
        PPOConfig(advantage_estimator="group", rollouts_per_prompt=1)


def test_a_runs_own_config_json_loads_as_a_config(tmp_path):
    """A run's config.json (the settings plus what rl.setup records beside them) is a valid --config: the record's
    fields are dropped, the settings come back equal, and --set still wins; a damaged one says what to give."""
    from rl.config import RUN_RECORD_FIELDS

    config = load_config("ppo-tiny-cpu", {"lora_r": 16, "total_steps": 30, "prompts_per_step": 2})
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**config.to_dict(), "num_processes": 1, "resumed_from": 0}))
    assert set(RUN_RECORD_FIELDS) == {"num_processes", "resumed_from"}
    assert load_config(path) == config
    assert load_config(path, {"total_steps": 4}).total_steps == 4
    path.write_text('{"lora_r": 16, "num_pro')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(path)
