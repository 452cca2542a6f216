"""Batched generation: prompts -> completions, as tensors (PPO rollouts) or text (evaluation, SFT figures).

`generate` is the one batched generator (PPO rollouts, evaluation and `generate_completions`
use it), so every caller tokenises prompts the same way (`tokenize_prompts`).
`generate_completions` adds what rollouts don't need: batches of similar-length prompts, a
local seed, and the completions back in the prompts' order.

Two generators sit behind `generate` (issue 22): on a CPU, float32 Llama and Qwen2 models
(plain or with LoRA adapters) decode with `runtime.decoder.FastDecoder` (a preallocated KV
cache, the one-token attention as two matmuls, finished rows dropped: 1.4-4.6x transformers'
tokens per second, `bench/generation_bench.py`); anything else, and any GPU, with
transformers' `model.generate`. Both give the same tokens under greedy decoding and the same distribution
under sampling (`tests/runtime/test_decoder.py`). `decoder=` or $COUNTDOWN_DECODER (`auto`,
`fast`, `hf`) forces one.

Shapes: `B` completions, `Lq` prompt tokens (left-padded, so every completion starts at
the same column), `T` response tokens (right-padded after the first EOS).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


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


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end a completion: the tokenizer's EOS and the model's generation-config
    EOS ids (a chat model's end-of-turn token, e.g. SmolLM2's `<|im_end|>` or Llama 3's `<|eot_id|>`)."""
    ids = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += config_eos if isinstance(config_eos, list) else [config_eos]
    return list(dict.fromkeys(i for i in ids if i is not None))


#: Environment variable that picks the generator when `generate` is not told (`DECODERS`).
DECODER_ENV = "COUNTDOWN_DECODER"
#: auto: the fast decoder where it applies, else `model.generate`; fast: the fast decoder (an
#: error where it does not apply); hf: always transformers' `model.generate`.
DECODERS = ("auto", "fast", "hf")


def fast_decoder(model: Any, tokenizer: Any, decoder: str | None = None) -> Any:
    """The `FastDecoder` for `model` under the `decoder` choice (else $COUNTDOWN_DECODER, else
    auto), or None for `model.generate`. `fast` on a model it cannot decode raises ValueError."""
    choice = decoder or os.environ.get(DECODER_ENV) or "auto"
    if choice not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {choice!r} (from {'decoder=' if decoder else DECODER_ENV})")
    if choice == "hf":
        return None
    from runtime.decoder import FastDecoder, UnsupportedModel, unsupported_reason

    reason = unsupported_reason(model) or (None if tokenizer.pad_token_id is not None else "tokenizer without a pad token")
    if reason is None:
        return FastDecoder(model)
    if choice == "fast":
        raise UnsupportedModel(f"decoder='fast': unsupported {reason}")
    return None


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
    decoder: str | None = None,
) -> Generation:
    """Complete `prompts` in batches (left padding, stop at EOS) with the fast decoder or
    `model.generate` (`fast_decoder`: `decoder` or $COUNTDOWN_DECODER, default auto).

    Prompts are tokenised by `tokenize_prompts` (`prompt_style` decides the special tokens).
    Sampling is pure temperature sampling (top_k=0, top_p=1), so the sampled tokens'
    log-probabilities are those the PPO update computes from the logits.
    `return_logprobs` keeps them from the generation's own logits (saves PPO one forward
    pass; through `model.generate` it holds B x T x vocab floats per batch, so only for small
    vocabularies/batches; the fast decoder keeps just the sampled tokens' B x T).
    """
    from tqdm import tqdm

    device = next(model.parameters()).device
    batch_size = batch_size or len(prompts)
    eos = stop_token_ids(model, tokenizer)
    fast = fast_decoder(model, tokenizer, decoder)
    if fast is not None and do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    queries, query_masks, responses, logprobs = [], [], [], []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
        enc = tokenize_prompts(tokenizer, prompts[start : start + batch_size], prompt_style).to(device)
        if fast is not None:
            decoded = fast.decode(
                enc.input_ids, enc.attention_mask, max_new_tokens, eos_token_ids=eos, pad_token_id=tokenizer.pad_token_id,
                do_sample=do_sample, temperature=temperature, return_logprobs=return_logprobs,
            )  # fmt: skip
            # Clones: the decoder runs under inference mode, and PPO's update reads these with autograd on.
            new_tokens, new_logprobs = decoded.tokens.clone(), decoded.logprobs.clone() if return_logprobs else None
        else:
            new_tokens, new_logprobs = hf_generate(model, tokenizer, enc, max_new_tokens, eos, do_sample, temperature, return_logprobs)
        if new_logprobs is not None:
            logprobs.append(new_logprobs)
        queries.append(enc.input_ids)
        query_masks.append(enc.attention_mask)
        responses.append(new_tokens)
    query = pad_cat(queries, tokenizer.pad_token_id, left=True)
    query_mask = pad_cat(query_masks, 0, left=True)
    response = pad_cat(responses, tokenizer.pad_token_id, left=False)
    mask, finished = response_mask(response, eos)
    # Tokens after the first EOS are padding whatever generate filled them with.
    response = torch.where(mask.bool(), response, torch.full_like(response, tokenizer.pad_token_id))
    texts = tokenizer.batch_decode(response * mask.long() + tokenizer.pad_token_id * (1 - mask.long()), skip_special_tokens=True)
    lp = pad_cat(logprobs, 0.0, left=False) * mask if return_logprobs else None
    return Generation(query, query_mask, response, mask, finished, texts, lp)


def hf_generate(
    model: Any, tokenizer: Any, enc: Any, max_new_tokens: int, eos: list[int], do_sample: bool, temperature: float, return_logprobs: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch through transformers' `model.generate`: the (b, T) new tokens and, with
    `return_logprobs`, their (b, T) log-probabilities under logits / temperature."""
    # Greedy decoding warns about sampling knobs left in a generation config, hence the Nones.
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if do_sample
        else {"do_sample": False, "top_k": None, "top_p": None}
    )
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
        return_dict_in_generate=True, output_logits=return_logprobs, **sampling,
    )  # fmt: skip
    new_tokens = out.sequences[:, enc.input_ids.shape[1] :]
    if not return_logprobs:
        return new_tokens, None
    # out.logits: one (b, V) tensor per generated position, before temperature.
    logits = torch.stack(out.logits, dim=1).float() / temperature
    return new_tokens, torch.gather(torch.log_softmax(logits, -1), 2, new_tokens.unsqueeze(-1)).squeeze(-1)


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
            gen = generate(model, tokenizer, [prompts[i] for i in order], max_new_tokens, prompt_style=prompt_style, do_sample=do_sample,
                           temperature=temperature, batch_size=batch_size, progress=progress)  # fmt: skip
    finally:
        model.train(was_training)
    out: list[str] = [""] * len(prompts)
    for i, text in zip(order, gen.texts, strict=True):
        out[i] = text
    return out
