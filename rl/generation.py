"""Batched generation of completions for a list of prompts (evaluation, SFT figures).

A thin wrapper over `rl.rollout.generate`, the one batched generator (PPO rollouts and
evaluation use it too), so every caller tokenises prompts the same way (`tokenize_prompts`).
It adds what rollouts don't need: batches of similar-length prompts, a local seed, and
the completions back in the prompts' order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    prompt_style: str | None = None,
) -> list[str]:
    """The completion (text after the prompt) for each prompt, in the prompts' order.

    Greedy by default; sampling is pure temperature sampling. Special tokens (padding, EOS)
    are dropped from the text; the answer-format tags are ordinary added tokens and stay.
    `max_new_tokens` bounds the work any prompt can cause. Sampling draws from a torch RNG
    forked for this call and seeded with `seed`, so the caller's RNG state is untouched and
    the same seed gives the same completions. `prompt_style="chat"` marks prompts rendered
    by a chat template (no special tokens added: the template wrote them).
    """
    import torch

    from rl.rollout import generate

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}; use do_sample=False for greedy")
    if not prompts:
        return []
    # Prompts of similar length share a batch: less padding, same results (each row is
    # decoded independently of its neighbours).
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    was_training = model.training
    model.eval()
    # Fork the RNG of the device that samples (the CPU's is always forked).
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed)
            gen = generate(
                model,
                tokenizer,
                [prompts[i] for i in order],
                max_new_tokens,
                prompt_style=prompt_style,
                do_sample=do_sample,
                temperature=temperature,
                batch_size=batch_size,
                progress=progress,
            )
    finally:
        model.train(was_training)
    out: list[str] = [""] * len(prompts)
    for i, text in zip(order, gen.texts, strict=True):
        out[i] = text
    return out
