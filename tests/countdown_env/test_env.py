"""CountdownEnv: Gymnasium's own checkers, make/make_vec, single- and multi-turn episodes."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

import countdown_env
from countdown_env import ENV_ID, Task, score_response
from countdown_env.env import CountdownEnv

TASK = Task((2, 3, 4), 20)
RIGHT = "<think>2+3=5, 5*4=20</think>\n<answer>(2 + 3) * 4</answer>"
WRONG = "<think>guess</think>\n<answer>2 + 3 + 4</answer>"


@pytest.mark.parametrize(
    "kwargs", [{}, {"max_attempts": 3, "prompt_style": "compact"}, {"tasks": [TASK, Task((1, 2), 3)], "preset": "tiny"}]
)
def test_check_env_passes(kwargs: dict) -> None:
    env = gym.make(ENV_ID, render_mode="ansi", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)
    env.close()


def test_registered_and_made_with_kwargs() -> None:
    assert ENV_ID == "countdown_env/Countdown-v0" and ENV_ID in gym.registry
    env = gym.make(ENV_ID, tasks=[TASK], rules={"strict_ending": True}, prompt_style="compact")
    obs, info = env.reset(seed=0)
    assert obs == "Numbers: 2 3 4\nTarget: 20\n" and info["task"] == TASK
    _, reward, *_ = env.step(RIGHT + " trailing")
    assert reward == 0.0  # strict_ending reached the scorer


def test_single_turn_episode() -> None:
    env = CountdownEnv(tasks=[TASK])
    obs, _ = env.reset(seed=1)
    assert "[2, 3, 4]" in obs and "20" in obs and obs in env.observation_space
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["verdict"]["outcome"] == "correct" and info["score"].correct and info["attempt"] == 1
    env.reset(options={"task": TASK})
    _, reward, terminated, truncated, info = env.step(WRONG)
    assert (reward, terminated, truncated) == (0.1, True, False)
    assert info["verdict"]["outcome"] == "wrong_value" and info["verdict"]["value"] == "9"


def test_multi_turn_feedback_and_truncation() -> None:
    env = CountdownEnv(tasks=[TASK], max_attempts=3, render_mode="ansi")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(WRONG)
    # Well-formed but wrong, and not the last turn: no format reward (it would pay for stalling).
    assert (terminated, truncated) == (False, False) and reward == 0.0 and info["score"].reward == 0.1
    assert obs.endswith("Try again.\n") and "wrong_value" in obs and "equals 9" in obs
    obs, _, terminated, truncated, _ = env.step("<answer>2**3</answer>")
    assert (terminated, truncated) == (False, False) and "disallowed_operation" in obs
    assert "attempts=2/3" in env.render()  # type: ignore[operator]
    obs, reward, terminated, truncated, info = env.step(WRONG)
    assert (terminated, truncated) == (False, True) and info["attempt"] == 3 and reward == 0.1  # the last turn's verdict
    assert not obs.endswith("Try again.\n")
    # A correct answer ends a multi-turn episode early.
    env.reset(seed=0)
    env.step(WRONG)
    _, reward, terminated, truncated, _ = env.step(RIGHT)
    assert (reward, terminated, truncated) == (1.0, True, False)


def test_reset_with_task_options() -> None:
    env = CountdownEnv()
    obs, info = env.reset(options={"task": {"numbers": [5, 7], "target": 35}})
    assert info["task"] == Task((5, 7), 35) and "[5, 7]" in obs
    obs, info = env.reset(options={"task": TASK})
    assert info["task"] is TASK
    with pytest.raises(TypeError):
        env.reset(options={"task": (1, 2)})
    with pytest.raises(ValueError):
        env.reset(options={"task": {"numbers": [1.5], "target": 2}})


def test_generated_tasks_follow_the_seed() -> None:
    env = CountdownEnv(preset="tiny")
    tasks = [env.reset(seed=s)[1]["task"] for s in (0, 1, 0)]
    assert tasks[0] == tasks[2] and tasks[0] != tasks[1]
    assert 10 <= tasks[0].target <= 30 and len(tasks[0].numbers) == 3


def test_determinism_like_gymnasiums_data_equivalence_checker() -> None:
    actions = [WRONG, "<answer>2*3*4</answer>", RIGHT, "nonsense", WRONG]

    def rollout(seed: int) -> list:
        env = CountdownEnv(max_attempts=2, preset="priming")
        out = []
        obs, info = env.reset(seed=seed)
        out.append((obs, info))
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            out.append((obs, reward, terminated, truncated, info))
            if terminated or truncated:
                out.append(env.reset())
        return out

    assert data_equivalence(rollout(7), rollout(7), exact=True)
    assert not data_equivalence(rollout(7), rollout(8))


def test_observations_stay_in_the_observation_space() -> None:
    env = CountdownEnv(tasks=[TASK], max_attempts=5)
    env.reset(seed=0)
    for action in ["<answer>2×3\x01</answer>", "ünïcödé ∑ \x00", "x" * 20_000]:
        obs, *_ = env.step(action)
        assert obs in env.observation_space
    assert len(obs) == countdown_env.env.MAX_TEXT


def test_make_vec_sync_steps_with_a_list_of_texts() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", tasks=[TASK])
    obs, infos = envs.reset(seed=0)
    assert len(obs) == 3 and all("[2, 3, 4]" in o for o in obs)
    obs, rewards, terminated, truncated, infos = envs.step([RIGHT, WRONG, "nothing"])
    assert rewards.tolist() == [1.0, 0.1, 0.0]
    assert terminated.tolist() == [True, True, True] and truncated.tolist() == [False, False, False]
    # Vector infos are dicts of per-env arrays.
    assert infos["verdict"]["outcome"].tolist() == ["correct", "wrong_value", "no_answer"]
    envs.close()


def test_render_and_bad_arguments() -> None:
    assert CountdownEnv().render() is None
    env = CountdownEnv(render_mode="ansi", tasks=[TASK])
    assert "reset" in env.render()  # type: ignore[operator]
    env.reset(seed=0)
    assert env.render() == "numbers=[2, 3, 4] target=20 attempts=0/1 last=no attempt yet"
    env.step(RIGHT)
    assert env.render().endswith("last=correct (1.0)")  # type: ignore[union-attr]
    with pytest.raises(RuntimeError):
        CountdownEnv().step("x")
    for kwargs in [
        {"render_mode": "human"},
        {"max_attempts": 0},
        {"tasks": []},
        {"prompt_style": "fancy"},
        {"rules": {"nope": 1}},
        {"preset": "nope"},
    ]:
        with pytest.raises(ValueError):
            CountdownEnv(**kwargs)


def test_class_docstring_follows_gymnasium_sections() -> None:
    doc = CountdownEnv.__doc__ or ""
    for section in ("## Description", "## Observation Space", "## Action Space", "## Rewards", "## Episode End", "## Arguments"):
        assert section in doc


def test_env_uses_its_presets_rules_so_reference_solutions_score_correct() -> None:
    # `classic` tasks use each number at most once; the env's prompt and scorer must agree.
    env = CountdownEnv(preset="classic", prompt_style="tinyzero")
    assert env.rules.use_all_numbers is False
    assert "at most once" in env.reset(seed=0)[0]
    for seed in range(10):
        _, info = env.reset(seed=seed)
        task = info["task"]
        _, reward, *_ = env.step(f"<think></think>\n<answer>{task.solution}</answer>")
        assert reward == 1.0, (task, env.last_score)
    overridden = CountdownEnv(preset="classic", rules={"format_reward": 0.2})
    assert overridden.rules.use_all_numbers is False and overridden.rules.format_reward == 0.2
    with pytest.raises(ValueError, match="unknown rule"):
        CountdownEnv(rules={"colour": 1})


# ---- the Gymnasium contract on bad input: validated before any state changes -------------------------------------


@pytest.mark.parametrize("action", [None, b"<answer>(2 + 3) * 4</answer>", 20])
def test_a_non_str_action_is_refused_and_changes_nothing(action: object) -> None:
    env = CountdownEnv(tasks=[TASK], max_attempts=3)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="action must be a str"):
        env.step(action)  # type: ignore[arg-type]
    assert env.attempts == 0 and env.last_score is None
    assert env.step(RIGHT)[1] == 1.0  # the episode goes on as if nothing happened


def test_a_step_after_the_end_raises() -> None:
    env = CountdownEnv(tasks=[TASK])
    env.reset(seed=0)
    assert env.step(RIGHT)[2] is True
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(RIGHT)  # used to pay 1.0 again
    env.reset(seed=1)
    assert env.step(RIGHT)[1] == 1.0


def test_no_attempt_after_truncation() -> None:
    env = CountdownEnv(tasks=[TASK], max_attempts=3)
    env.reset(seed=0)
    assert [env.step(WRONG)[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(RIGHT)  # a 4th attempt used to be scored and paid
    assert env.attempts == 3


@pytest.mark.parametrize("options", ["abc", ["task"], 3])
def test_reset_options_must_be_a_dict(options: object) -> None:
    with pytest.raises(TypeError, match="options must be a dict"):
        CountdownEnv().reset(options=options)  # type: ignore[arg-type]


def test_task_dicts_are_converted_and_validated_at_construction() -> None:
    env = gym.make(ENV_ID, tasks=[{"numbers": [2, 3, 4], "target": 20}])
    _, info = env.reset(seed=0)
    assert info["task"] == TASK
    with pytest.raises(ValueError, match=r"tasks\[1\]"):
        CountdownEnv(tasks=[TASK, {"numbers": [2, -3], "target": 1}])
    with pytest.raises(TypeError, match=r"tasks\[0\]"):
        CountdownEnv(tasks=["2 3 4 -> 20"])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_max_attempts_must_be_an_integer_of_at_least_one(bad: object) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        CountdownEnv(max_attempts=bad)  # type: ignore[arg-type]


def test_reset_refuses_unknown_options_and_names_the_known_ones() -> None:
    env = CountdownEnv(tasks=[TASK])
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['taks'\]; known options: \['task'\]"):
        env.reset(options={"taks": TASK})
    with pytest.raises(ValueError, match="'seed'"):
        env.reset(options={"task": TASK, "seed": 3})
    assert env.reset(options={})[1]["task"] == TASK


ATTEMPTS = {
    "right": RIGHT,
    "wrong": WRONG,  # well-formed, wrong value: 0.1 as a verdict
    "numbers": "<answer>2 + 3</answer>",  # wrong numbers: 0.1 as a verdict
    "malformed": "<answer>2 +</answer>",
    "none": "no answer",
}


def _episode(attempts: list[str], max_attempts: int) -> float:
    env = CountdownEnv(tasks=[TASK], max_attempts=max_attempts)
    env.reset(seed=0)
    total = 0.0
    for name in attempts:
        _, reward, terminated, truncated, _ = env.step(ATTEMPTS[name])
        total += reward
        if terminated or truncated:
            break
    return total


def test_a_later_right_answer_never_pays_more_than_an_immediate_one() -> None:
    import itertools

    assert _episode(["wrong", "wrong", "right"], 3) == _episode(["right"], 3) == 1.0  # the issue: 1.2 before
    for max_attempts in (1, 2, 3):
        for attempts in itertools.product(ATTEMPTS, repeat=max_attempts):
            total = _episode(list(attempts), max_attempts)
            assert total <= _episode(["right"], max_attempts), attempts
            # The return is the verdict on the last attempt made.
            made = list(attempts[: attempts.index("right") + 1] if "right" in attempts else attempts)
            last = score_response(ATTEMPTS[made[-1]], TASK).reward
            assert total == pytest.approx(last), attempts
