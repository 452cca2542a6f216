"""Rollouts: prompts -> batched sampled completions -> rewards from the Gymnasium env -> masks.

Shapes: `B` completions, `Lq` prompt tokens (left-padded, so every completion starts at
the same column), `T` response tokens (right-padded after the first EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import torch

from countdown_env import ENV_ID, Rules, Score, Task, chat_messages, render_prompt


def build_prompt(task: Task, style: str, rules: Rules, tokenizer: Any = None) -> str:
    """The prompt text for `task`: a countdown_env template, or `chat` through the tokenizer's chat template."""
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_style 'chat' needs a tokenizer with a chat template; use 'tinyzero' or 'compact'")
        return tokenizer.apply_chat_template(chat_messages(task, rules), tokenize=False, add_generation_prompt=True)
    return render_prompt(task, style, rules)


@dataclass
class Generation:
    """A batch of prompts and their completions, as tensors and text."""

    query: torch.Tensor
    """(B, Lq) prompt token ids, left-padded."""
    query_mask: torch.Tensor
    """(B, Lq) 1 on prompt tokens, 0 on padding."""
    response: torch.Tensor
    """(B, T) completion token ids, padded after the first EOS."""
    response_mask: torch.Tensor
    """(B, T) float: 1 on generated tokens up to and including the first EOS."""
    finished: torch.Tensor
    """(B,) bool: the completion ended with EOS (False: cut at max_new_tokens)."""
    texts: list[str]
    """Decoded completions without special tokens."""
    logprobs: torch.Tensor | None = None
    """(B, T) log-probabilities of the sampled tokens under the sampling policy (logits /
    temperature), when generated with `return_logprobs=True`."""

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)


def response_mask(response: torch.Tensor, eos_token_id: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask up to and including the first EOS, finished) for right-padded responses `(B, T)`."""
    eos_ids = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=response.device)
    is_eos = torch.isin(response, eos_ids)
    finished = is_eos.any(1)
    # Index of the first EOS, or T for rows without one.
    length = response.shape[1]
    first = torch.where(finished, is_eos.float().argmax(1), torch.full_like(finished, length, dtype=torch.long))
    positions = torch.arange(length, device=response.device).expand_as(response)
    return (positions <= first.unsqueeze(1)).float(), finished


def tokenize_prompts(tokenizer: Any, prompts: Sequence[str], prompt_style: str | None = None) -> Any:
    """Left-padded `input_ids`/`attention_mask` for `prompts`, tokenised as SFT tokenises them.

    The one place prompts become ids (PPO rollouts, evaluation, `generate_completions`), so a
    model is sampled with the ids it was primed on: TRL's SFTTrainer tokenises text with the
    tokenizer's special tokens (Llama's BOS), while a chat template already writes them into
    the text, so `chat` prompts get none added (no doubled BOS).
    """
    return tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left", add_special_tokens=prompt_style != "chat")


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    prompt_style: str | None = None,
    do_sample: bool = True,
    temperature: float = 1.0,
    batch_size: int = 0,
    return_logprobs: bool = False,
    progress: bool = False,
) -> Generation:
    """Complete `prompts` in batches with `model.generate` (left padding, stop at EOS).

    Prompts are tokenised by `tokenize_prompts` (`prompt_style` decides the special tokens).
    Sampling is pure temperature sampling (top_k=0, top_p=1), so the sampled tokens'
    log-probabilities are those the PPO update computes from the logits.
    `return_logprobs` keeps them from the generation's own logits (saves PPO one forward
    pass; holds B x T x vocab floats per batch, so only for small vocabularies/batches).
    """
    from tqdm import tqdm

    device = next(model.parameters()).device
    batch_size = batch_size or len(prompts)
    eos = tokenizer.eos_token_id
    # Greedy decoding warns about sampling knobs left in a generation config, hence the Nones.
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if do_sample
        else {"do_sample": False, "top_k": None, "top_p": None}
    )
    queries, query_masks, responses, logprobs = [], [], [], []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
        enc = tokenize_prompts(tokenizer, prompts[start : start + batch_size], prompt_style).to(device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=return_logprobs,
            **sampling,
        )
        new_tokens = out.sequences[:, enc.input_ids.shape[1] :]
        queries.append(enc.input_ids)
        query_masks.append(enc.attention_mask)
        responses.append(new_tokens)
        if return_logprobs:
            # out.logits: one (b, V) tensor per generated position, before temperature.
            logits = torch.stack(out.logits, dim=1).float() / temperature
            logprobs.append(torch.gather(torch.log_softmax(logits, -1), 2, new_tokens.unsqueeze(-1)).squeeze(-1))
    query = pad_cat(queries, tokenizer.pad_token_id, left=True)
    query_mask = pad_cat(query_masks, 0, left=True)
    response = pad_cat(responses, tokenizer.pad_token_id, left=False)
    mask, finished = response_mask(response, eos)
    # Tokens after the first EOS are padding whatever generate filled them with.
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    texts = tokenizer.batch_decode(response * mask.long() + tokenizer.pad_token_id * (1 - mask.long()), skip_special_tokens=True)
    lp = pad_cat(logprobs, 0.0, left=False) * mask if return_logprobs else None
    return Generation(query, query_mask, response, mask, finished, texts, lp)


def pad_cat(tensors: Sequence[torch.Tensor], value: int | float, *, left: bool) -> torch.Tensor:
    """Concatenate `(b_i, L_i)` tensors along dim 0, padding to the longest L on the left or right."""
    width = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        pad = (width - t.shape[1], 0) if left else (0, width - t.shape[1])
        padded.append(torch.nn.functional.pad(t, pad, value=value))
    return torch.cat(padded, 0)


def concat_generations(parts: Sequence[Generation], pad_token_id: int) -> Generation:
    return Generation(
        query=pad_cat([g.query for g in parts], pad_token_id, left=True),
        query_mask=pad_cat([g.query_mask for g in parts], 0, left=True),
        response=pad_cat([g.response for g in parts], pad_token_id, left=False),
        response_mask=pad_cat([g.response_mask for g in parts], 0.0, left=False),
        finished=torch.cat([g.finished for g in parts]),
        texts=[t for g in parts for t in g.texts],
        logprobs=pad_cat([g.logprobs for g in parts], 0.0, left=False) if all(g.logprobs is not None for g in parts) else None,
    )


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


def make_env(rules: Rules, prompt_style: str, max_attempts: int = 1) -> gymnasium.Env:
    """The Countdown env that scores completions (the same `Rules` as the prompts)."""
    style = "tinyzero" if prompt_style == "chat" else prompt_style
    # The passive checker only inspects the first step's spaces, and our actions are untrusted text anyway.
    return gymnasium.make(ENV_ID, rules=rules, prompt_style=style, max_attempts=max_attempts, disable_env_checker=True)


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

    Single-turn: one completion per task, rewarded by the env's one step. Multi-turn
    (`max_attempts > 1`): wrong attempts get the env's feedback appended to the prompt and
    the model tries again; every turn is one PPO sample with its own step's reward.
    """
    # One env per episode: each keeps its own task, attempt count and transcript.
    envs = [make_env(rules, prompt_style, max_attempts) for _ in tasks]
    transcripts = [build_prompt(task, prompt_style, rules, tokenizer) for task in tasks]
    for env, task in zip(envs, tasks, strict=True):
        env.reset(options={"task": task})
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
