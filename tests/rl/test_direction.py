"""The learning direction: updates raise the probability of rewarded actions, the reference
stays frozen, and the rollout-time numbers (KL, values, log-probs) are computed as intended."""

import math

import pytest
import torch

from countdown_env.files import read_jsonl
from rl.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    group_advantages,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_whiten,
)

PROMPTS, GROUP = 4, 8


def bandit_probability_after(estimator: str, sign: float = 1.0, updates: int = 20, seed: int = 0) -> float:
    """A two-action bandit (action 0 pays 1, action 1 pays 0) trained with rl/ppo.py's losses;
    returns the probability of action 0 after `updates` steps, starting from 0.3.

    The policy is a pair of logits; each response is one token (T = 1), so `logits` has the
    `(B, T, V)` shape of a language model's. `sign=-1` negates the policy loss.
    """
    generator = torch.Generator().manual_seed(seed)
    logits = torch.nn.Parameter(torch.tensor([0.0, math.log(7 / 3)]))  # p(action 0) = 0.3
    value = torch.nn.Parameter(torch.zeros(()))
    actor_opt = torch.optim.Adam([logits], lr=0.05)
    critic_opt = torch.optim.Adam([value], lr=0.05)
    n = PROMPTS * GROUP
    mask = torch.ones(n, 1)
    for _ in range(updates):
        actions = torch.multinomial(torch.softmax(logits.detach(), -1), n, replacement=True, generator=generator).unsqueeze(1)
        scores = (actions[:, 0] == 0).float()
        old_logprobs = logprobs_from_logits(logits.detach().expand(n, 1, 2), actions)
        if estimator == "group":
            advantages = group_advantages(scores, GROUP, normalize_std=True).unsqueeze(1) * mask
        else:
            old_values = value.detach().expand(n, 1)
            rewards, _ = kl_penalized_rewards(scores, old_logprobs, old_logprobs, mask, kl_coef=0.0)
            advantages, returns = gae(rewards, old_values, mask)
            advantages = masked_whiten(advantages, mask)
        logprobs = logprobs_from_logits(logits.expand(n, 1, 2), actions)
        loss = clipped_policy_loss(logprobs, old_logprobs, advantages, mask).loss
        actor_opt.zero_grad()
        (sign * loss).backward()
        actor_opt.step()
        if estimator == "gae":
            vf_loss, _ = clipped_value_loss(value.expand(n, 1), old_values, returns, mask)
            critic_opt.zero_grad()
            vf_loss.backward()
            critic_opt.step()
    return float(torch.softmax(logits.detach(), -1)[0])


@pytest.mark.parametrize("estimator", ["group", "gae"])
def test_updates_raise_the_rewarded_action_and_the_negated_loss_lowers_it(estimator):
    assert bandit_probability_after(estimator) > 0.6
    assert bandit_probability_after(estimator, sign=-1.0) < 0.1


def tiny_config(model, **changes):
    from rl.config import load_config, parse_overrides
    from tests.rl.conftest import FAST

    return load_config("tiny-cpu", {**parse_overrides(FAST), "model": str(model), **changes})


@pytest.mark.parametrize("changes", [{}, {"advantage_estimator": "group", "kl_coef": 0.01}])
def test_kl_to_the_reference_is_zero_at_step_one(tiny_model, tmp_path, changes):
    """Before the first update the policy is the reference: the logged KL is 0 (up to float error)."""
    from rl.train import train

    out = train(tiny_config(tiny_model, total_steps=1, eval_every=0, **changes), tmp_path / "run", progress=False)
    (row,) = [r for r in read_jsonl(out / "metrics.jsonl") if r["step"] == 1]
    assert abs(row["objective/kl"]) < 1e-4


def test_the_reference_stays_frozen(tiny_model, tmp_path, monkeypatch):
    import rl.train
    from runtime.models import load_model

    seen = []

    def spy(config, accelerator):
        seen.append(load_models(config, accelerator))
        return seen[-1]

    load_models = rl.train.load_models
    monkeypatch.setattr(rl.train, "load_models", spy)
    rl.train.train(tiny_config(tiny_model, total_steps=3, eval_every=0, actor_lr=1e-2), tmp_path / "run", progress=False)
    models, start = seen[0], load_model(tiny_model)
    assert all(not p.requires_grad for p in models.ref.parameters())
    assert all(torch.equal(a, b) for a, b in zip(models.ref.parameters(), start.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(models.policy.parameters(), start.parameters(), strict=True))


def test_values_and_old_logprobs_are_computed_in_eval_mode(tiny_model):
    """The critic has no dropout; and even with dropout forced on, two rollout-time passes agree."""
    from countdown_env import generate_tasks
    from rl.rollout import collect
    from rl.setup import Models, PolicyCritic, load_critic
    from rl.train import prepare_batch
    from runtime.models import load_model, load_tokenizer

    critic = load_critic(str(tiny_model))
    assert critic.config.classifier_dropout == 0.0
    assert all(m.p == 0.0 for m in critic.modules() if isinstance(m, torch.nn.Dropout))

    config = tiny_config(tiny_model, logprobs_from_generation=False)  # old log-probs from a forward pass
    policy, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    tasks = [t for t in generate_tasks(2, seed=0, preset="tiny") for _ in range(config.rollouts_per_prompt)]
    rollout = collect(policy, tokenizer, tasks, prompt=config.prompt, max_new_tokens=8)
    # Dropout on, models left in train mode: only eval mode makes two passes agree.
    for m in critic.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    for m in policy.modules():
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = 0.5
    models = Models(PolicyCritic(policy, critic), tokenizer, torch.optim.SGD(policy.parameters(), lr=0.0), load_model(tiny_model).eval())
    batches = []
    for _ in range(2):
        policy.train(), critic.train()
        batches.append(prepare_batch(models, rollout, config, torch.device("cpu")))
    assert not policy.training and not critic.training
    assert torch.equal(batches[0].old_values, batches[1].old_values)
    assert torch.equal(batches[0].old_logprobs, batches[1].old_logprobs)


def test_rollout_time_passes_cut_to_their_rows_give_the_uncut_numbers(tiny_model):
    """prepare_batch runs its no-grad passes over completions of similar length, each cut to its own padding
    (`cut_rows`), and places the outputs back: on every attended token, the old log-probs, reference log-probs
    and values equal one uncut forward pass over the whole padded batch."""
    from countdown_env import generate_tasks
    from rl.rollout import collect
    from rl.setup import Models, PolicyCritic, load_critic
    from rl.train import prepare_batch
    from runtime.logprobs import forward_response
    from runtime.models import load_model, load_tokenizer

    config = tiny_config(tiny_model, logprobs_from_generation=False, micro_batch_size=2, mini_batch_size=8)
    policy, tokenizer = load_model(tiny_model).eval(), load_tokenizer(tiny_model)
    tasks = [t for t in generate_tasks(2, seed=3, preset="tiny") for _ in range(config.rollouts_per_prompt)]
    torch.manual_seed(0)
    rollout = collect(policy, tokenizer, tasks, prompt=config.prompt, max_new_tokens=12, temperature=1.0)
    gen = rollout.generation
    for row, length in enumerate([12, 3, 7, 1][: len(gen.response_mask)]):  # ragged, as stopped completions are
        gen.response_mask[row, length:] = 0
        rollout.loss_mask[row, length:] = 0
    lengths = gen.response_mask.sum(1)
    assert lengths.min() < lengths.max(), "ragged completions: the cut matters"
    critic = load_critic(str(tiny_model)).eval()
    ref = load_model(tiny_model).eval()
    models = Models(PolicyCritic(policy, critic), tokenizer, torch.optim.SGD(policy.parameters(), lr=0.0), ref)
    batch = prepare_batch(models, rollout, config, torch.device("cpu"))
    attn = gen.response_mask.bool()
    with torch.no_grad():
        whole = logprobs_from_logits(forward_response(policy, gen.query, gen.query_mask, gen.response, gen.response_mask), gen.response)
        whole_ref = logprobs_from_logits(forward_response(ref, gen.query, gen.query_mask, gen.response, gen.response_mask), gen.response)
        _, values = models.module(gen.query, gen.query_mask, gen.response, gen.response_mask)
    torch.testing.assert_close(batch.old_logprobs[attn], whole[attn], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.ref_logprobs[attn], whole_ref[attn], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.old_values[attn], values[attn], rtol=1e-5, atol=1e-5)
