"""Batched generation: order, padding invariance, seeded sampling."""

from __future__ import annotations

import pytest
import torch

from countdown_env.rules import render_prompt
from countdown_env.tasks import generate_tasks
from runtime.generation import generate_completions
from runtime.models import build_model, prepare_tokenizer

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


def bos_model_and_tokenizer():
    """A tiny model whose tokenizer adds a BOS to every text, as Llama-3's does."""
    from tokenizers.processors import TemplateProcessing

    from runtime.models import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)])
    model, tokenizer = build_model("llama", "tiny", seed=2, tokenizer=tokenizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3, generator=generator)
    return model.eval(), prepare_tokenizer(tokenizer)


def test_rollouts_evaluation_and_sft_tokenise_prompts_alike():
    """SFT (TRL's tokenisation: BOS added), PPO rollouts, greedy_eval and generate_completions see the same prompt ids."""
    from trl.data_utils import _tokenize

    from countdown_env import DEFAULT_RULES
    from rl.evaluate import greedy_eval
    from rl.rollout import collect
    from runtime.generation import tokenize_prompts
    from runtime.prompt import Prompt

    model, tokenizer = bos_model_and_tokenizer()
    tasks = generate_tasks(3, seed=0, preset="tiny")
    prompts = [render_prompt(t, "compact") for t in tasks]
    sft_ids = [_tokenize(tokenizer, p)["input_ids"] for p in prompts]
    assert all(ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1 for ids in sft_ids)

    rollout = collect(model, tokenizer, tasks, prompt=Prompt(DEFAULT_RULES, "compact"), max_new_tokens=4)
    gen = rollout.generation
    assert [q[m.bool()].tolist() for q, m in zip(gen.query, gen.query_mask, strict=True)] == sft_ids

    # Greedy completions from exactly the SFT ids: what evaluation must reproduce.
    expected = []
    for ids in sft_ids:
        out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected.append(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
    without_bos = [
        tokenizer.decode(
            model.generate(torch.tensor([ids[1:]]), max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)[
                0, len(ids) - 1 :
            ],
            skip_special_tokens=True,
        )
        for ids in sft_ids
    ]
    assert expected != without_bos  # the BOS changes what this model says, so the checks below can fail
    assert generate_completions(model, tokenizer, prompts, max_new_tokens=8, batch_size=2) == expected
    rows: list[dict] = []
    greedy_eval(model, tokenizer, tasks, Prompt(DEFAULT_RULES, "compact"), max_new_tokens=8, rows=rows)
    assert [r["text"] for r in rows] == expected

    # A chat template writes its own BOS into the text: none is added on top.
    chat = tokenize_prompts(tokenizer, ["<s>user: hi"], "chat").input_ids[0].tolist()
    assert chat.count(tokenizer.bos_token_id) == 1
