"""Batched generation: order, padding invariance, seeded sampling."""

from __future__ import annotations

import pytest
import torch

from countdown_env.rules import render_prompt
from countdown_env.tasks import generate_tasks
from rl.generation import generate_completions
from rl.models import build_model, prepare_tokenizer

PROMPTS = [render_prompt(task, "compact") for task in generate_tasks(5, seed=0, preset="tinyzero")] + ["Numbers: 1\nTarget: 1\n"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    model, tokenizer = build_model("qwen2", "tiny", seed=1)
    # Freshly initialised weights are so small that every prompt gets the same text; larger
    # random weights make completions depend on the prompt, which the tests need to see.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3, generator=generator)
    return model, prepare_tokenizer(tokenizer)


def test_batched_greedy_equals_one_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert len({len(p) for p in PROMPTS}) > 1  # left padding is exercised
    batched = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=4)
    single = [generate_completions(model, tokenizer, [p], max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1  # a random model still answers each prompt differently


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, do_sample=True, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert a == generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, do_sample=True, seed=7)
    assert a != generate_completions(model, tokenizer, PROMPTS, max_new_tokens=12, do_sample=True, seed=8)


def test_training_mode_is_restored_and_bad_arguments_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.train()
    generate_completions(model, tokenizer, PROMPTS[:1], max_new_tokens=2)
    assert model.training
    model.eval()
    for kwargs in ({"max_new_tokens": 0}, {"batch_size": 0}, {"do_sample": True, "temperature": 0.0}):
        with pytest.raises(ValueError):
            generate_completions(model, tokenizer, PROMPTS, **kwargs)
