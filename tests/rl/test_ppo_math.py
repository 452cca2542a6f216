"""The PPO math against values computed by hand."""

import math

import pytest
import torch

from rl.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    group_advantages,
    kl_penalized_rewards,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    mixed_groups,
    token_kl,
)

T = torch.tensor


def test_masked_mean_and_var_ignore_padding():
    x, m = T([[1.0, 2.0, 3.0, 100.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_var(x, m).item() == pytest.approx(1.0)  # ((1+0+1) / 3) * 3/2
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0  # no tokens: 0, not NaN


def test_whiten_is_zero_mean_unit_variance_on_masked_tokens_and_zero_on_padding():
    x, m = T([[1.0, 2.0, 3.0, 7.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert w[0, 3].item() == 0.0
    # shift_mean=False keeps the mean: (x - 2) / 1 + 2
    assert masked_whiten(x, m, shift_mean=False)[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)


def test_token_kl_estimators():
    lp, ref = T([[math.log(0.5), math.log(0.2)]]), T([[math.log(0.25), math.log(0.4)]])
    assert token_kl(lp, ref, "k1")[0].tolist() == pytest.approx([math.log(2), math.log(0.5)])
    # k3 = r - 1 - log r with r = p_ref / p: 0.5 - 1 + log 2 and 2 - 1 - log 2
    assert token_kl(lp, ref, "k3")[0].tolist() == pytest.approx([-0.5 + math.log(2), 1 - math.log(2)])
    with pytest.raises(ValueError, match="k1"):
        token_kl(lp, ref, "k2")


def test_kl_penalty_per_token_and_score_on_last_real_token():
    lp = T([[0.0, -1.0, -2.0], [-1.0, -1.0, -1.0]])
    ref = T([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards, kl = kl_penalized_rewards(T([1.0, 0.1]), lp, ref, mask, kl_coef=0.5)
    assert kl.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # padding carries no KL
    assert rewards.flatten().tolist() == pytest.approx([-0.5, 1.0, 0.0, 0.0, 0.0, 0.1])
    assert last_token_index(mask).tolist() == [1, 2]


def test_gae_gamma_lambda_one_is_return_minus_value():
    rewards, values, mask = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), T([[1.0, 1.0, 1.0]])
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    assert adv[0].tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert ret[0].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_gae_discounted_by_hand():
    # gamma=0.9, lam=0.5, rewards [1, 2], values [0.5, 1.0]:
    # delta1 = 2 - 1 = 1;  A1 = 1
    # delta0 = 1 + 0.9*1 - 0.5 = 1.4;  A0 = 1.4 + 0.45*1 = 1.85
    adv, ret = gae(T([[1.0, 2.0, 9.0]]), T([[0.5, 1.0, 9.0]]), T([[1.0, 1.0, 0.0]]), 0.9, 0.5)
    assert adv[0].tolist() == pytest.approx([1.85, 1.0, 0.0])
    assert ret[0].tolist() == pytest.approx([2.35, 2.0, 0.0])  # padding's value is not bootstrapped


def test_clipped_policy_loss_by_hand():
    old = T([[0.0, 0.0, 0.0]])
    new = T([[math.log(1.5), math.log(0.5), math.log(1.1)]])
    adv = T([[1.0, -1.0, 1.0]])
    out = clipped_policy_loss(new, old, adv, torch.ones(1, 3), clip=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped);  token 2: max(0.5, 0.8) = 0.8 (clipped);  token 3: -1.1
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 1.1) / 3)
    assert out.clipfrac.item() == pytest.approx(2 / 3)
    assert out.ratio.item() == pytest.approx((1.5 + 0.5 + 1.1) / 3)


def test_clipped_policy_loss_gradient_is_zero_where_clipped():
    new = T([[math.log(1.5), math.log(1.1)]]).requires_grad_()
    out = clipped_policy_loss(new, torch.zeros(1, 2), T([[1.0, 1.0]]), torch.ones(1, 2), clip=0.2)
    out.loss.backward()
    assert new.grad[0, 0].item() == 0.0 and new.grad[0, 1].item() == pytest.approx(-1.1 / 2)


def test_clipped_value_loss_by_hand():
    values, old, returns = T([[1.0, 0.0]]), T([[0.0, 0.0]]), T([[0.0, 1.0]])
    loss, clipfrac = clipped_value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 1: max(1, 0.04) = 1 ; token 2: max(1, 1) = 1 -> 0.5 * mean = 0.5
    assert loss.item() == pytest.approx(0.5)
    values = T([[0.5, 0.0]])
    loss, clipfrac = clipped_value_loss(values, old, T([[1.0, 0.0]]), torch.ones(1, 2), clip=0.2)
    # token 1: unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> 0.64
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.0) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_logprobs_and_entropy_from_logits():
    logits = T([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    assert logprobs_from_logits(logits, T([[0, 0]]))[0].tolist() == pytest.approx([math.log(0.5), math.log(0.75)])
    assert entropy_from_logits(logits)[0].tolist() == pytest.approx([math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))])


def test_group_advantages_by_hand():
    scores = T([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    # Group means 0.25, 0.5, 0.5: score - mean.
    plain = group_advantages(scores, 4, normalize_std=False)
    assert plain.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    # Bessel-corrected group std: sqrt((0.5625 + 3 x 0.0625) / 3) = 0.5; sqrt(4 x 0.25 / 3) = 1/sqrt(3); 0 (eps only).
    scaled = group_advantages(scores, 4, normalize_std=True)
    r3 = math.sqrt(3) / 2
    assert scaled.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5, r3, r3, -r3, -r3, 0.0, 0.0, 0.0, 0.0], rel=1e-5)


def test_group_advantages_leave_invalid_samples_out_of_the_baseline():
    # Group 1: the truncated 0 is left out, so the mean is 0.5 over [1, 0], not 1/3; group 2: one valid sample, advantage 0.
    scores, valid = T([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]), T([True, True, False, True, False, False])
    assert group_advantages(scores, 3, False, valid).tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    # std of [1, 0] (Bessel) = sqrt(0.5): 0.5 / sqrt(0.5) = sqrt(0.5)
    assert group_advantages(scores, 3, True, valid).tolist() == pytest.approx([math.sqrt(0.5), -math.sqrt(0.5), 0, 0, 0, 0], rel=1e-5)
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(T([1.0, 0.0, 1.0]), 2)


@pytest.mark.parametrize(
    ("scores", "valid", "expected"),
    [
        ([1.0, 0.0, 1.0, 1.0], None, 0.5),  # one group mixed, one all-correct
        ([0.0, 0.0, 0.0, 0.0], None, 0.0),  # nothing to learn from
        ([0.1, 0.0, 1.0, 0.1], None, 1.0),  # a format reward against nothing is a difference too
        ([1.0, 0.0, 1.0, 0.0], [True, False, True, True], 0.5),  # the masked 0 leaves group 1 with one counted score
        ([1.0, 0.0, 1.0, 0.0], [False, False, True, True], 0.5),  # group 1 has none counted: not mixed
        ([], None, 0.0),
    ],
)
def test_mixed_groups_by_hand(scores, valid, expected):
    assert mixed_groups(T(scores), 2, None if valid is None else T(valid)) == expected


def test_mixed_groups_are_the_groups_with_a_nonzero_advantage():
    scores = T([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    advantages = group_advantages(scores, 3, normalize_std=False).view(-1, 3)
    assert mixed_groups(scores, 3) == float((advantages != 0).any(1).float().mean()) == 0.5
    with pytest.raises(ValueError, match="multiple of group_size"):
        mixed_groups(T([1.0, 0.0, 1.0]), 2)

