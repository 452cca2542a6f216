"""Rollouts: the env's prompts -> sampled, scored completions -> rewards from the Gymnasium env -> masks.

Sampling and scoring go through the one path, `runtime.sampling.sample_and_score`, with the env's
observations as the prompts; this module adds what PPO needs on top: the episode loop over the env
(`collect`), the truncation rule and the loss mask. Shapes: `B` completions, `Lq` prompt tokens
(left-padded, so every completion starts at the same column), `T` response tokens (right-padded
after the first EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import torch

from countdown_env import ENV_ID, Score, Task
from runtime.generation import Generation, concat_generations
from runtime.prompt import Prompt
from runtime.sampling import Scored, sample_and_score


@dataclass
class Rollout:
    """Completions with their rewards, ready for the PPO update."""

    generation: Generation
    tasks: list[Task]
    scores: torch.Tensor
    """(B,) task reward per completion (after the truncation rule)."""
    verdicts: list[Score]
    loss_mask: torch.Tensor
    """(B, T) response mask with excluded completions (truncated, in `mask` mode) zeroed."""
    turns: list[int]
    """Turn of the episode each completion answered (always 0 single-turn)."""

    def rows(self, step: int) -> list[dict[str, Any]]:
        """rollouts.jsonl rows: step, text, numbers, target, reward, correct, ... (for `classify`)."""
        return [
            {
                "step": step,
                "text": text,
                "numbers": list(task.numbers),
                "target": task.target,
                "reward": round(float(score), 6),  # float32 -> 0.1, not 0.10000000149
                "correct": verdict.correct,
                "outcome": verdict.outcome.value,
                "finished": bool(done),
                "turn": turn,
            }
            for text, task, score, verdict, done, turn in zip(
                self.generation.texts,
                self.tasks,
                self.scores.tolist(),
                self.verdicts,
                self.generation.finished.tolist(),
                self.turns,
                strict=True,
            )
        ]


def make_env(prompt: Prompt, max_attempts: int = 1, tokenizer: Any = None) -> gymnasium.Env:
    """The Countdown env that renders `prompt` and scores completions under its rules
    (`tokenizer` renders the `chat` style, every turn of it)."""
    # The passive checker only inspects the first step's spaces, and our actions are untrusted text anyway.
    return gymnasium.make(
        ENV_ID, rules=prompt.rules, prompt_style=prompt.style, max_attempts=max_attempts, tokenizer=tokenizer, disable_env_checker=True
    )


@dataclass
class Episodes:
    """Completions of every turn so far, in the order they were sampled (turn 0 first, tasks in order)."""

    parts: list[Generation] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    verdicts: list[Score] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)


def collect(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    *,
    prompt: Prompt,
    max_new_tokens: int,
    temperature: float = 1.0,
    truncated: str = "zero",
    max_attempts: int = 1,
    batch_size: int = 0,
    return_logprobs: bool = False,
) -> Rollout:
    """Sample one episode per task (repeat tasks for several rollouts per prompt) and score it.

    The prompts are the env's observations: the first is what `reset` renders, so the env
    is the one place a prompt is made. Single-turn: one completion per task, rewarded by the
    env's one step. Multi-turn (`max_attempts > 1`): after a wrong attempt the env's next
    observation (the conversation so far, with its feedback, in the same prompt style) is the
    next prompt; every turn is one PPO sample with its own step's reward. Sampling draws from
    torch's RNG as the caller seeded it.
    """
    # One env per episode: each keeps its own task, attempt count and transcript.
    envs = [make_env(prompt, max_attempts, tokenizer) for _ in tasks]
    observations = [env.reset(options={"task": task})[0] for env, task in zip(envs, tasks, strict=True)]
    active = list(range(len(tasks)))
    episodes = Episodes()
    for turn in range(max_attempts):
        if not active:
            break
        scored = sample_and_score(
            model, tokenizer, [tasks[i] for i in active], prompt, prompts=[observations[i] for i in active],
            max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size, return_logprobs=return_logprobs,
            inference_mode=False,  # the update's backward pass reads these tensors
        )  # fmt: skip
        active = step_envs(envs, active, scored, observations, episodes, turn, truncated)
    for env in envs:
        env.close()
    generation = concat_generations(episodes.parts, tokenizer.pad_token_id)
    loss_mask = generation.response_mask.clone()
    if truncated == "mask":
        loss_mask[~generation.finished] = 0.0
    return Rollout(generation, episodes.tasks, torch.tensor(episodes.scores), episodes.verdicts, loss_mask, episodes.turns)


def step_envs(
    envs: list[gymnasium.Env], active: list[int], scored: Scored, observations: list[str], episodes: Episodes, turn: int, truncated: str
) -> list[int]:
    """Step each active episode with its completion and record the turn; returns the episodes still going.

    The env scores the completion under the same rules as `scored` did (its verdict is the same);
    its reward adds the multi-turn rule (a wrong answer's format reward only on the last turn)."""
    still_active = []
    for sample, i in zip(scored.samples, active, strict=True):
        observation, reward, terminated, cut, _ = envs[i].step(sample.text)
        if truncated == "zero" and not sample.finished:
            reward = 0.0
        episodes.scores.append(float(reward))
        episodes.verdicts.append(sample.score)
        episodes.tasks.append(sample.task)
        episodes.turns.append(turn)
        if not (terminated or cut):
            # The env's transcript (prompt, attempts, feedback) is the next turn's prompt.
            observations[i] = observation
            still_active.append(i)
    episodes.parts.append(scored.generation)
    return still_active
