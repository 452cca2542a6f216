"""The one sample -> score path: render, generate, score; seeded or not, by length or not."""

from __future__ import annotations

import pytest
import torch

from countdown_env import Task, generate_tasks, preset_rules, score_response
from runtime.generation import Generation, generate, generate_completions
from runtime.models import build_model, prepare_tokenizer
from runtime.prompt import Prompt
from runtime.sampling import reorder, sample_and_score

TASKS = [*generate_tasks(5, seed=0, preset="tiny"), Task((1,), 1), Task((11, 12, 13, 14), 20)]  # prompts of several lengths
PROMPT = Prompt.of_preset("tiny", "compact")


@pytest.fixture(scope="module")
def model_and_tokenizer():
    model, tokenizer = build_model("qwen2", "tiny", seed=1)
    # Larger random weights than a fresh initialisation, so completions depend on the prompt.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3, generator=generator)
    return model.eval(), prepare_tokenizer(tokenizer)


def test_it_is_render_then_generate_then_score(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    scored = sample_and_score(model, tokenizer, TASKS, PROMPT, max_new_tokens=8, do_sample=False, batch_size=3)
    prompts = [PROMPT.render(t) for t in TASKS]
    gen = generate(model, tokenizer, prompts, 8, prompt_style="compact", do_sample=False, batch_size=3)
    assert scored.texts == gen.texts and len(set(gen.texts)) > 1
    assert [s.prompt for s in scored.samples] == prompts and [s.task for s in scored.samples] == TASKS
    assert scored.scores == [score_response(text, t, preset_rules("tiny")) for text, t in zip(gen.texts, TASKS, strict=True)]
    assert [s.length for s in scored.samples] == gen.lengths.int().tolist()
    assert [s.finished for s in scored.samples] == gen.finished.tolist()
    assert torch.equal(scored.generation.response, gen.response)
    assert scored.accuracy == sum(s.correct for s in scored.scores) / len(TASKS)


def test_by_length_batches_come_back_in_the_tasks_order(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    scored = sample_and_score(model, tokenizer, TASKS, PROMPT, max_new_tokens=8, do_sample=False, batch_size=2, seed=0, by_length=True)
    # What `generate_completions` (which batches by length too) returns, row for row ...
    assert scored.texts == generate_completions(model, tokenizer, [PROMPT.render(t) for t in TASKS], max_new_tokens=8, batch_size=2)
    # ... and every tensor row belongs to its task's completion.
    gen = scored.generation
    for i, sample in enumerate(scored.samples):
        assert tokenizer.decode(gen.response[i][gen.response_mask[i].bool()], skip_special_tokens=True) == sample.text
        assert tokenizer.decode(gen.query[i][gen.query_mask[i].bool()], skip_special_tokens=True) == sample.prompt


def test_a_seed_repeats_the_samples_and_leaves_the_callers_rng_alone(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = sample_and_score(model, tokenizer, TASKS, PROMPT, max_new_tokens=8, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    assert sample_and_score(model, tokenizer, TASKS, PROMPT, max_new_tokens=8, seed=7).texts == first.texts
    assert sample_and_score(model, tokenizer, TASKS, PROMPT, max_new_tokens=8, seed=8).texts != first.texts
    # Without a seed, the samples come from the caller's RNG (PPO reseeds it every step).
    torch.manual_seed(5)
    unseeded = sample_and_score(model, tokenizer, TASKS, PROMPT, max_new_tokens=8)
    torch.manual_seed(5)
    assert sample_and_score(model, tokenizer, TASKS, PROMPT, max_new_tokens=8).texts == unseeded.texts


def test_given_prompts_are_used_and_the_model_mode_restored(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [PROMPT.render(t) + "Let me think.\n" for t in TASKS[:2]]
    model.train()
    try:
        scored = sample_and_score(model, tokenizer, TASKS[:2], PROMPT, prompts=prompts, max_new_tokens=4, do_sample=False)
        assert model.training
    finally:
        model.eval()
    assert [s.prompt for s in scored.samples] == prompts
    assert scored.texts == generate(model, tokenizer, prompts, 4, prompt_style="compact", do_sample=False).texts
    with pytest.raises(ValueError, match="2 prompts for 3 tasks"):
        sample_and_score(model, tokenizer, TASKS[:3], PROMPT, prompts=prompts, max_new_tokens=4)
    empty = sample_and_score(model, tokenizer, [], PROMPT, max_new_tokens=4)
    assert empty.samples == [] and empty.generation is None and empty.accuracy == 0.0


def test_rollout_tensors_can_enter_a_backward_pass(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    embedding = torch.nn.Embedding(len(tokenizer), 2)
    kept = sample_and_score(model, tokenizer, TASKS[:2], PROMPT, max_new_tokens=4, inference_mode=False)
    embedding(kept.generation.response).sum().backward()  # what PPO's update does with a rollout's tokens
    inference = sample_and_score(model, tokenizer, TASKS[:2], PROMPT, max_new_tokens=4)
    with pytest.raises(RuntimeError, match="[Ii]nference tensors"):
        embedding(inference.generation.response).sum().backward()


def test_reorder_puts_rows_back_in_the_prompts_order():
    order = [2, 0, 1]  # row i of the generation answers prompt order[i]
    rows = torch.tensor([[20], [0], [10]])
    gen = Generation(rows, rows, rows, rows.float(), torch.tensor([True, False, True]), ["c", "a", "b"], rows.float())
    back = reorder(gen, order)
    assert back.texts == ["a", "b", "c"] and back.query.flatten().tolist() == [0, 10, 20]
    assert back.finished.tolist() == [False, True, True] and back.logprobs.flatten().tolist() == [0.0, 10.0, 20.0]
