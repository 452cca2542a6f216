"""Batched generation of completions for a list of prompts (evaluation, SFT figures, rollouts).

`model.generate` does the decoding; this module only does what it leaves to the caller:
left padding, batching in an order that wastes little padding, a local seed, and
decoding just the new tokens.
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
) -> list[str]:
    """The completion (text after the prompt) for each prompt, in the prompts' order.

    Greedy by default. Special tokens (padding, EOS) are dropped from the text; the
    answer-format tags are ordinary added tokens and stay. `max_new_tokens` bounds the
    work any prompt can cause. Sampling draws from a torch RNG forked for this call and
    seeded with `seed`, so the caller's RNG state is untouched and the same seed gives
    the same completions.
    """
    import torch
    from tqdm import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}; use do_sample=False for greedy")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Prompts of similar length share a batch: less padding, same results (each row is
    # decoded independently of its neighbours).
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
    batches = range(0, len(order), batch_size)
    # Fork the RNG of the device that samples (the CPU's is always forked).
    devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            for start in tqdm(batches, desc="generate", disable=not progress):
                idx = order[start : start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, padding_side="left").to(model.device)
                generated = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad_id,
                    # Greedy decoding warns about sampling knobs left in a generation config.
                    top_p=None,
                    top_k=None,
                    **sampling,
                )
                # With left padding every row's prompt ends at the same column.
                new_tokens = generated[:, enc["input_ids"].shape[1] :]
                for i, text in zip(idx, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                    out[i] = text
    finally:
        model.train(was_training)
    return out
