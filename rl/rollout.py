"""Rollouts: prompts -> batched sampled completions -> rewards from the Gymnasium env -> masks.

The batched generator (`generate`, `Generation`, ...) lives in `runtime.generation`; this module
adds what PPO needs on top: the env that scores completions and the episode loop (`collect`).
Shapes: `B` completions, `Lq` prompt tokens (left-padded, so every completion starts at
the same column), `T` response tokens (right-padded after the first EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import torch

from countdown_env import ENV_ID, Rules, Score, Task, render_prompt
from runtime.generation import Generation, concat_generations, generate, pad_cat, response_mask, tokenize_prompts

# Re-exported: callers and tests import the generator from here too.
__all__ = [
    "Generation",
    "Rollout",
    "build_prompt",
    "collect",
    "concat_generations",
    "generate",
    "make_env",
    "pad_cat",
    "response_mask",
    "tokenize_prompts",
]


def build_prompt(task: Task, style: str, rules: Rules, tokenizer: Any = None) -> str:
    """The prompt text for `task` (`countdown_env.render_prompt`; `chat` goes through `tokenizer`'s chat template)."""
    return render_prompt(task, style, rules, tokenizer=tokenizer)


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


def make_env(rules: Rules, prompt_style: str, max_attempts: int = 1, tokenizer: Any = None) -> gymnasium.Env:
    """The Countdown env that renders the prompts and scores completions under `rules`
    (`tokenizer` renders the `chat` style, every turn of it)."""
    # The passive checker only inspects the first step's spaces, and our actions are untrusted text anyway.
    return gymnasium.make(
        ENV_ID, rules=rules, prompt_style=prompt_style, max_attempts=max_attempts, tokenizer=tokenizer, disable_env_checker=True
    )


def collect(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    *,
    rules: Rules,
    prompt_style: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    truncated: str = "mask",
    max_attempts: int = 1,
    batch_size: int = 0,
    return_logprobs: bool = False,
) -> Rollout:
    """Sample one episode per task (repeat tasks for several rollouts per prompt) and score it.

    The prompts are the env's observations: the first is what `reset` renders, so the env
    is the one place a prompt is made. Single-turn: one completion per task, rewarded by the
    env's one step. Multi-turn (`max_attempts > 1`): after a wrong attempt the env's next
    observation (the conversation so far, with its feedback, in the same prompt style) is the
    next prompt; every turn is one PPO sample with its own step's reward.
    """
    # One env per episode: each keeps its own task, attempt count and transcript.
    envs = [make_env(rules, prompt_style, max_attempts, tokenizer) for _ in tasks]
    transcripts = [env.reset(options={"task": task})[0] for env, task in zip(envs, tasks, strict=True)]
    active = list(range(len(tasks)))
    parts: list[Generation] = []
    episode_tasks: list[Task] = []
    scores: list[float] = []
    verdicts: list[Score] = []
    turns: list[int] = []
    for turn in range(max_attempts):
        if not active:
            break
        gen = generate(
            model,
            tokenizer,
            [transcripts[i] for i in active],
            max_new_tokens,
            prompt_style=prompt_style,
            temperature=temperature,
            batch_size=batch_size,
            return_logprobs=return_logprobs,
        )
        still_active = []
        for row, i in enumerate(active):
            observation, reward, terminated, trunc, info = envs[i].step(gen.texts[row])
            if truncated == "zero" and not bool(gen.finished[row]):
                reward = 0.0
            scores.append(float(reward))
            verdicts.append(info["score"])
            episode_tasks.append(tasks[i])
            turns.append(turn)
            if not (terminated or trunc):
                # The env's transcript (prompt, attempts, feedback) is the next turn's prompt.
                transcripts[i] = observation
                still_active.append(i)
        parts.append(gen)
        active = still_active
    for env in envs:
        env.close()
    generation = concat_generations(parts, tokenizer.pad_token_id)
    loss_mask = generation.response_mask.clone()
    if truncated == "mask":
        loss_mask[~generation.finished] = 0.0
    return Rollout(generation, episode_tasks, torch.tensor(scores), verdicts, loss_mask, turns)
