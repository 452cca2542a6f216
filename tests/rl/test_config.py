"""PPOConfig: every preset loads; the advantage estimator's options are validated."""

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
