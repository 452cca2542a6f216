"""The PPO math as small pure functions on tensors, each unit-tested by hand-computed values.

Shapes: `B` samples (one completion each), `T` response tokens (right-padded). `mask` is a
float `(B, T)` tensor, 1 on tokens the policy generated and that count in the loss, 0 on
padding (and on whole completions excluded from the update, e.g. truncated ones).

Why hand-written: TRL removed `PPOTrainer` in 1.13 and no maintained library exposes
token-level PPO with a learned critic for causal LMs as reusable functions; these follow
TRL 1.12's `PPOTrainer` and CleanRL's `ppo.py` term by term.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where `mask` is 1 (0 if there are none, not NaN)."""
    return masked_sum(x, mask) / mask.sum().clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked tokens (Bessel-corrected by default, as in TRL)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """(x - mean) / std over the masked tokens; padding is returned as 0.

    `shift_mean=False` only rescales (TRL does this to rewards, keeping their sign).
    `all_reduce` (a function summing a tensor over the processes) makes the mean and the
    variance those of the global batch: every process then whitens with the same numbers,
    as one process holding every completion would (two passes of sums, not sum of squares,
    so the result matches the single-process one to float rounding).
    """
    total = all_reduce or (lambda t: t)
    count = total(mask.sum())
    mean = total(masked_sum(x, mask)) / count.clamp(min=1.0)
    var = total(masked_sum((x - mean) ** 2, mask)) / count.clamp(min=1.0)
    if count > 1:
        var = var * count / (count - 1)  # Bessel-corrected, as masked_var and TRL
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) for each position: logits `(B, T, V)`, tokens `(B, T)` -> `(B, T)`."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's next-token distribution: `(B, T, V)` -> `(B, T)`."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from the sampled tokens' log-probabilities.

    k1 = log pi - log pi_ref (unbiased, can be negative; what TRL and the study use);
    k3 = exp(-k1) - 1 + k1 (unbiased, always >= 0; Schulman's low-variance estimator).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"KL estimator must be 'k1' or 'k3', got {estimator!r}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last masked token of each row (0 for a row with none): `(B,)`."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * (mask > 0)).amax(dim=1)


def kl_penalized_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float, estimator: str = "k1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * KL on every token, plus the task score on the last one.

    Returns `(rewards, kl)`, both `(B, T)` and zero on padding. `scores` is `(B,)`.
    """
    kl = token_kl(logprobs, ref_logprobs, estimator) * mask
    rewards = -kl_coef * kl
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype) * (mask.sum(1) > 0)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens: `(advantages, returns)`.

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1}; the
    value after the last token is 0 (the episode ends). Values and rewards on padding are
    zeroed first, so padding contributes nothing and gets advantage 0.
    """
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clipfrac: torch.Tensor
    """Fraction of tokens whose ratio was clipped."""
    approx_kl: torch.Tensor
    """0.5 * mean((log ratio)^2): how far this update moved from the rollout policy."""
    ratio: torch.Tensor
    """Mean probability ratio pi / pi_old."""


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> PolicyLoss:
    """PPO's clipped surrogate, averaged over masked tokens (to be minimised)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
        mean_ratio = masked_mean(ratio, mask)
    return PolicyLoss(loss, clipfrac, approx_kl, mean_ratio)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- clip) - R)^2) over masked tokens; and the clip fraction."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, clipfrac


def group_advantages(
    scores: torch.Tensor, group_size: int, normalize_std: bool = True, valid: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Group-relative advantages (GRPO, veRL's `grpo` estimator): `(B,)` scores -> `(B,)` advantages.

    Samples `[k * group_size, (k + 1) * group_size)` answer the same prompt. Each one's
    advantage is its score minus its group's mean score, divided by the group's standard
    deviation (Bessel-corrected, as in TRL and veRL) plus `eps` when `normalize_std`;
    without it this is REINFORCE with a group-mean baseline (Dr. GRPO). `valid` (`(B,)`
    bool) marks samples that count: the others (truncated completions in `mask` mode) keep
    their slot but enter neither the mean nor the std, and get advantage 0.
    """
    if scores.ndim != 1 or scores.shape[0] % group_size:
        raise ValueError(f"scores must be (B,) with B a multiple of group_size {group_size}, got shape {tuple(scores.shape)}")
    groups = scores.float().view(-1, group_size)
    weight = torch.ones_like(groups) if valid is None else valid.float().view(-1, group_size)
    count = weight.sum(1, keepdim=True)
    mean = (groups * weight).sum(1, keepdim=True) / count.clamp(min=1.0)
    centred = (groups - mean) * weight
    if normalize_std:
        # A group with fewer than two valid samples has no spread: its advantages are 0 anyway.
        var = (centred**2).sum(1, keepdim=True) / (count - 1).clamp(min=1.0)
        centred = centred / (var.sqrt() + eps)
    return centred.view(-1)


def mixed_groups(scores: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> float:
    """Share of groups whose scores are not all equal: `(B,)` scores, group k = samples
    `[k * group_size, (k + 1) * group_size)` (one prompt's completions, as in `group_advantages`).

    Only a mixed group gives a group baseline any signal: an all-correct or all-wrong group has
    advantage 0 everywhere. `valid` (`(B,)` bool) marks the samples that count (truncated
    completions in `mask` mode do not); a group with fewer than two that count is not mixed.
    0.0 for no groups.
    """
    if scores.ndim != 1 or scores.shape[0] % group_size:
        raise ValueError(f"scores must be (B,) with B a multiple of group_size {group_size}, got shape {tuple(scores.shape)}")
    if scores.numel() == 0:
        return 0.0
    groups = scores.float().view(-1, group_size)
    counted = torch.ones_like(groups, dtype=torch.bool) if valid is None else valid.bool().view(-1, group_size)
    # A group's largest and smallest counted score; a group with none counted gets -inf > inf: not mixed.
    highest = torch.where(counted, groups, torch.full_like(groups, -math.inf)).max(1).values
    lowest = torch.where(counted, groups, torch.full_like(groups, math.inf)).min(1).values
    return float((highest > lowest).float().mean())
