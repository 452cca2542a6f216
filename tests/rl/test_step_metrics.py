"""A PPO step's reward metrics: accuracy, truncation and the share of prompt groups that carry signal."""

from __future__ import annotations

import pytest
import torch

from countdown_env import Task
from rl.rollout import Rollout
from rl.train import reward_metrics
from runtime.generation import Generation
from runtime.prompt import Prompt

TASK = Task((3, 5, 7), 15)
RIGHT, WRONG = "<answer>3+5+7</answer>", "<answer>3*5-7</answer>"


def rollout(texts: list[str], finished: list[bool], scores: list[float], mask_truncated: bool, turns: list[int] | None = None) -> Rollout:
    """A rollout of one-token completions, with the loss mask `collect` builds."""
    n = len(texts)
    gen = Generation(
        query=torch.ones(n, 2, dtype=torch.long), query_mask=torch.ones(n, 2, dtype=torch.long),
        response=torch.ones(n, 1, dtype=torch.long), response_mask=torch.ones(n, 1), finished=torch.tensor(finished), texts=texts,
    )  # fmt: skip
    loss_mask = gen.response_mask.clone()
    if mask_truncated:
        loss_mask[~gen.finished] = 0.0
    verdicts = [Prompt().score(text, TASK) for text in texts]
    return Rollout(gen, [TASK] * n, torch.tensor(scores), verdicts, loss_mask, turns or [0] * n)


def test_reward_metrics_of_two_groups():
    # Group 1 (right, wrong) is mixed; group 2 (wrong, wrong) is not.
    r = rollout([RIGHT, WRONG, WRONG, WRONG], [True, True, True, True], [1.0, 0.0, 0.0, 0.0], mask_truncated=False)
    row = reward_metrics(r, group_size=2)
    assert row["reward/accuracy"] == 0.25 and row["reward/mean"] == 0.25
    assert row["reward/mixed_groups"] == 0.5 and row["reward/truncated_rate"] == 0.0
    assert list(row) == ["reward/mean", "reward/accuracy", "reward/format_rate", "reward/truncated_rate", "reward/mixed_groups"]


@pytest.mark.parametrize(("mask_truncated", "mixed"), [(False, 1.0), (True, 0.0)])
def test_a_masked_completion_does_not_make_its_group_mixed(mask_truncated, mixed):
    # The second completion ran out of tokens: scored 0 (`zero`) it differs from its partner's 1;
    # masked out of the loss (`mask`) it leaves the group one counted completion, which carries no signal.
    r = rollout([RIGHT, WRONG], [True, False], [1.0, 0.0], mask_truncated=mask_truncated)
    row = reward_metrics(r, group_size=2)
    assert row["reward/mixed_groups"] == mixed and row["reward/truncated_rate"] == 0.5


def test_groups_are_the_first_turns_completions():
    # Multi-turn: turn 0 answers tasks in order (two groups of 2); the retry after the wrong one is not in a group.
    r = rollout([RIGHT, RIGHT, WRONG, WRONG, RIGHT], [True] * 5, [1.0, 1.0, 0.0, 0.0, 1.0], mask_truncated=False, turns=[0, 0, 0, 0, 1])
    assert reward_metrics(r, group_size=2)["reward/mixed_groups"] == 0.0
