"""PPO on Countdown, readable top to bottom (after CleanRL's `ppo.py`).

    policy  --generate-->  completions  --env-->  scores
    policy, reference, critic  --forward-->  log-probs, ref log-probs, values
    gae:    scores - kl_coef * KL  --GAE-->  advantages, returns  --clipped losses-->  updates
    group:  score - mean score of the prompt's completions  --clipped loss + kl_coef * KL-->  update

`train` is the loop: per step `collect_rollouts` (sample and score, `rl.rollout.collect`),
`prepare_batch` (log-probs, values, advantages), `update` (`minibatch_step` over `ppo_losses`),
the step's metrics, the held-out evaluation and the checkpoint. What it trains with (accelerator,
models, optimiser, resume) is set up by `rl/setup.py`; the math lives in `rl/ppo.py` (unit-tested).
Under `accelerate launch` every process runs this loop on its share of each step's prompts;
advantages are whitened over the global batch, and the mini-batches are global too (`minibatch_labels`:
the same completions, optimiser steps and gradients on any number of processes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from countdown_env import Task, generate_tasks
from countdown_env.errors import UsageError
from countdown_env.files import append_jsonl
from rl.config import PPOConfig, accumulation_steps, generation_batch, keeps_generation_logits, micro_size, per_process_samples
from rl.evaluate import eval_metrics, evaluate_policy, logged_eval_rows
from rl.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    group_advantages,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    mixed_groups,
    token_kl,
)
from rl.rollout import Rollout, collect
from rl.setup import (
    Models,
    Totals,
    gathered_for_generation,
    init_trackers,
    load_models,
    open_run,
    save_checkpoint,
    start_accelerator,
)
from runtime.logprobs import forward_response
from runtime.run_dir import RunDir


# ---- data ---------------------------------------------------------------------------
def split_tasks(
    config: PPOConfig, tasks: Sequence[Task] | None = None, eval_tasks: Sequence[Task] | None = None
) -> tuple[list[Task], list[Task]]:
    """(RL tasks, held-out eval tasks): eval from the preset's test split (or `eval_tasks`, e.g. an
    experiment's dev and test tasks), RL tasks from its train split (or `tasks`), with any task that is
    also an eval task dropped."""
    if eval_tasks is None:
        eval_tasks = generate_tasks(config.num_eval_tasks, seed=config.seed, preset=config.task_preset, split="test")
    eval_tasks = list(eval_tasks)
    if tasks is None:
        train = generate_tasks(config.num_train_tasks, seed=config.seed, preset=config.task_preset, split="train")
    else:
        held_out = {t.key for t in eval_tasks}
        train = [t for t in tasks if t.key not in held_out]
    if not train:
        raise UsageError("no RL tasks left after removing the held-out eval tasks; pass a bigger --tasks file")
    return train, eval_tasks


def step_tasks(tasks: Sequence[Task], config: PPOConfig, step: int, rank: int, world: int) -> list[Task]:
    """This process's prompts for `step` (1-based), each repeated `rollouts_per_prompt` times.

    Prompts walk through a fresh permutation of the tasks each epoch, a function of
    (seed, epoch) only, so a resumed run sees exactly the prompts it would have seen.
    """
    per_step, n = config.prompts_per_step, len(tasks)
    chosen, orders = [], {}
    for i in range((step - 1) * per_step, step * per_step):
        epoch, pos = divmod(i, n)
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([config.seed, epoch]).permutation(n)
        chosen.append(tasks[int(orders[epoch][pos])])
    share = per_step // world
    mine = chosen[rank * share : (rank + 1) * share]
    return [task for task in mine for _ in range(config.rollouts_per_prompt)]


# ---- the loop -----------------------------------------------------------------------
def train(
    config: PPOConfig,
    output_dir: str | Path,
    *,
    tasks: Sequence[Task] | None = None,
    eval_tasks: Sequence[Task] | None = None,
    resume: bool = False,
    progress: bool = True,
    report_to: str = "none",
) -> Path:
    """Run PPO as configured; returns the run directory. `config.model` is the start model.
    `eval_tasks` replaces the held-out tasks drawn from the preset's test split.
    `report_to` also logs every metrics row to a tracker (`runtime.tracking`)."""
    from accelerate.utils import set_seed

    started = time.perf_counter()
    accelerator = start_accelerator(config, Path(output_dir), report_to)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    run = RunDir(Path(output_dir))
    # 1. Seeding: the one place the global RNGs are seeded. Each step reseeds sampling
    #    from (seed, step, rank) below, so a resumed run draws what it would have drawn.
    set_seed(config.seed)
    # 2. Data: RL prompts and held-out eval tasks, disjoint.
    train_tasks, eval_tasks = split_tasks(config, tasks, eval_tasks)
    # 3. Models, then 4. resume from the newest complete checkpoint.
    models = load_models(config, accelerator)
    start = open_run(accelerator, run, config, resume)
    totals = Totals.from_log(run.metrics, start) if start else Totals()
    init_trackers(accelerator, config, report_to)
    # Every process evaluates its share of the held-out tasks; the main one logs the completions.
    evaluate = partial(evaluate_sharded, models, accelerator, eval_tasks, config, log=run.eval_completions if main else None)
    if start == 0 and eval_due(config, eval_tasks, 0):
        log_step(accelerator, run, 0, evaluate(step=0), totals.row(started))  # every process evaluates, the main one logs
    bar = progress_bar(config, start, disable=not (main and progress))
    for step in bar:
        t0 = time.perf_counter()
        seed_step(config, step, rank)
        # 5. Rollouts: this process's completions for the step, sampled and scored.
        rollout = collect_rollouts(models, train_tasks, config, step, rank, world, accelerator)
        t_gen = time.perf_counter() - t0
        # 6. Log-probs, values and advantages; 7. the update.
        batch = prepare_batch(models, rollout, config, accelerator.device, accelerator)
        stats = update(models, batch, config, accelerator, step)
        # 8. Metrics, averaged over processes (compute summed); 9. the held-out evaluation when due.
        row = reduce_metrics(accelerator, step_metrics(rollout, batch, stats, config.rollouts_per_prompt))
        totals.add_step(accelerator, rollout.generation.lengths.sum(), batch.mask.sum(), config.ppo_epochs)
        row |= timing_row(t0, t_gen, step, config)
        if eval_due(config, eval_tasks, step):
            row |= evaluate(step=step)
        # 10. Logs on the main process, then the checkpoint (every process joins it).
        log_step(accelerator, run, step, row, totals.row(started), rollout.rows(step)[: config.log_rollouts])
        bar.set_postfix(reward=f"{row['reward/mean']:.3f}", acc=f"{row['reward/accuracy']:.3f}")  # shown on the main process only
        if step % config.save_every == 0 or step == config.total_steps:
            save_checkpoint(accelerator, run, step, models.module, models.tokenizer, config.keep_checkpoints)
    close_run(bar, accelerator)
    return run.root


def seed_step(config: PPOConfig, step: int, rank: int) -> None:
    """Reseed sampling for `step` on this process: a function of (seed, step, rank) only, so a resumed run
    draws what it would have drawn. (The mini-batches are drawn apart, by `minibatch_labels`.)"""
    torch.manual_seed(config.seed * 1_000_003 + step * 1009 + rank)


def timing_row(t0: float, t_gen: float, step: int, config: PPOConfig) -> dict[str, float]:
    """Seconds of the step (since `t0`) and of its generation, and completions sampled so far over all processes."""
    return {"time/seconds_per_step": time.perf_counter() - t0, "time/generation_seconds": t_gen, "samples/total": step * config.batch_size}


def eval_due(config: PPOConfig, eval_tasks: Sequence[Task], step: int) -> bool:
    """Whether `step` evaluates: step 0, every `eval_every` steps and the last step (never with eval_every 0)."""
    return bool(config.eval_every and eval_tasks and (step % config.eval_every == 0 or step == config.total_steps))


def close_run(bar: Any, accelerator: Any) -> None:
    """After the last step: every process done, the trackers closed."""
    bar.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()


def progress_bar(config: PPOConfig, start: int, *, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(range(start + 1, config.total_steps + 1), initial=start, total=config.total_steps, desc="ppo", disable=disable)


def log_step(
    accelerator: Any, run: RunDir, step: int, row: dict[str, float], totals: dict[str, float], rollouts: list[dict[str, Any]] | None = None
) -> None:
    """One metrics.jsonl row (and the tracker's), and the step's logged rollouts: on the main process only
    (the others return), so every process can call it."""
    if not accelerator.is_main_process:
        return
    append_jsonl(run.metrics, [{"step": step, **row, **totals}])
    accelerator.log({**row, **totals}, step=step)  # a no-op without trackers
    if rollouts is not None:
        append_jsonl(run.rollouts, rollouts)


# ---- one step -----------------------------------------------------------------------
@dataclass
class Batch:
    """One step's rollouts on the device with what the update needs; `(B, T)` unless noted."""

    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    attn: torch.Tensor
    """Attention over every generated token, even those masked out of the loss."""
    mask: torch.Tensor
    """Tokens in the loss (`Rollout.loss_mask`)."""
    scores: torch.Tensor
    """(B,) task rewards."""
    old_logprobs: torch.Tensor
    advantages: torch.Tensor
    ref_logprobs: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    """Per-token KL estimate to the reference (`kl_estimator`), for the reward (`gae`) and the logs."""
    rewards: torch.Tensor | None = None
    """`gae` only: per-token rewards, the KL penalty folded in."""
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def rows(self, idx: torch.Tensor) -> Batch:
        """Rows `idx`, cut to their own padding (`cut_rows`)."""
        q, qm, r, attn, end = cut_rows(self.query, self.query_mask, self.response, self.attn, idx)

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx][:, :end] if t.dim() == 2 else t[idx]

        return Batch(q, qm, r, attn, cut(self.mask), self.scores[idx], cut(self.old_logprobs), cut(self.advantages),
                     cut(self.ref_logprobs), cut(self.kl), cut(self.rewards), cut(self.old_values), cut(self.returns))  # fmt: skip


def cut_rows(
    query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, attn: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Rows `idx` of a prompt + response batch without the columns none of them uses: query columns no row attends
    to (left padding) and response columns past the longest row; also how many response columns are kept. Exact
    (positions follow the attention mask; a causal model's output at a kept position does not see later columns)
    and, for completions of mixed lengths, much cheaper: a pass costs its longest row, so `length_sorted` passes
    are cut short."""
    qm, a = query_mask[idx], attn[idx]
    used = (qm.sum(0) > 0).nonzero()
    start = int(used[0]) if len(used) else 0
    end = max(1, int(a.sum(1).max())) if a.numel() else 1
    return query[idx][:, start:], qm[:, start:], response[idx][:, :end], a[:, :end], end


def placed(parts: Sequence[torch.Tensor], chunks: Sequence[torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """Per-pass `(rows, columns kept)` outputs back at their rows, zero on the cut columns (padding: masked)."""
    out = parts[0].new_zeros(shape)
    for part, rows in zip(parts, chunks, strict=True):
        out[rows, : part.shape[1]] = part
    return out


def length_sorted(idx: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """`idx` from the shortest completion to the longest, so the accumulation passes of a mini-batch hold
    completions of similar length and `Batch.rows` cuts each pass to its own longest (the gradient is the same
    whichever rows share a pass: each pass is weighted by its tokens)."""
    return idx[torch.argsort(attn[idx].sum(1), stable=True)]


def collect_rollouts(
    models: Models, tasks: Sequence[Task], config: PPOConfig, step: int, rank: int, world: int, accelerator: Any
) -> Rollout:
    """Sample this process's completions for `step` at the rollout temperature and score them in the env."""
    models.module.eval()
    with gathered_for_generation(models.module, accelerator) as inner:
        return collect(
            inner.policy,
            models.tokenizer,
            step_tasks(tasks, config, step, rank, world),
            prompt=config.prompt,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            truncated=config.truncated,
            max_attempts=config.max_attempts,
            batch_size=config.generation_batch_size,
            return_logprobs=keeps_generation_logits(config, inner.policy.config.vocab_size, generation_batch(config, world)),
        )


def micro_chunks(n: int, config: PPOConfig, world: int) -> int:
    """How many micro-batches a no-grad pass over `n` samples takes: the same count in every
    process (FSDP and ZeRO-3 gather in every forward, so every process must make as many)."""
    return max(1, math.ceil(max(n, per_process_samples(config, world)) / micro_size(config, world)))


@torch.no_grad()
def prepare_batch(models: Models, rollout: Rollout, config: PPOConfig, device: Any, accelerator: Any = None) -> Batch:
    """Log-probs under the rollout policy and the reference, values, then advantages.

    Everything here runs in eval mode, so the old log-probs and values are those of the
    models that sampled, not of a dropout-perturbed copy. Forward passes go `micro_batch_size`
    completions at a time (the logits of a whole step would not fit a GPU). With `accelerator`,
    advantages are whitened with the mean and variance of every process's tokens.
    """
    gen = rollout.generation
    query, query_mask = gen.query.to(device), gen.query_mask.to(device)
    response, attn, mask = gen.response.to(device), gen.response_mask.to(device), rollout.loss_mask.to(device)
    scores = rollout.scores.to(device)
    world = accelerator.num_processes if accelerator is not None else 1
    n = response.shape[0]
    if world > 1:  # multi-turn episodes give processes different counts: chunk by the largest
        n = int(accelerator.gather(torch.tensor([n], device=device)).max())
    # Passes of completions of similar length, each cut to its own padding (`cut_rows`); outputs placed back.
    chunks = length_sorted(torch.arange(response.shape[0], device=device), attn).tensor_split(micro_chunks(n, config, world))
    cuts = [cut_rows(query, query_mask, response, attn, i) for i in chunks]

    def run(fn: Any) -> torch.Tensor:
        return placed([fn(q, qm, r, a) for q, qm, r, a, _ in cuts], chunks, response.shape)

    def logprobs(logits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return logprobs_from_logits(logits / config.temperature, r)

    models.module.eval()
    autocast = accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)
    with autocast:
        need_logits = gen.logprobs is None
        old_logprobs = old_values = None
        if need_logits or config.uses_critic:
            outputs = [models.module(q, qm, r, a, with_logits=need_logits) for q, qm, r, a, _ in cuts]
            if need_logits:
                old_logprobs = placed(
                    [logprobs(logits, c[2]) for (logits, _), c in zip(outputs, cuts, strict=True)], chunks, response.shape
                )
            if config.uses_critic:
                old_values = placed([values for _, values in outputs], chunks, response.shape)
            del outputs
        if not need_logits:
            old_logprobs = gen.logprobs.to(device)
        ref_logprobs = None
        if models.ref is not None:
            ref_logprobs = run(lambda q, qm, r, a: logprobs(forward_response(models.ref, q, qm, r, a), r))
    if config.uses_critic:
        # Rewards with the KL penalty folded in, then GAE and whitening (over every process's tokens).
        rewards, kl = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, config.kl_coef, config.kl_estimator)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            total = (lambda t: accelerator.reduce(t, reduction="sum")) if world > 1 else None
            advantages = masked_whiten(advantages, mask, all_reduce=total)
    else:
        # A prompt's completions are consecutive (`step_tasks`): one group per prompt, within a process. The KL
        # is a loss term here (`ppo_losses`), computed only to be logged.
        rewards = returns = None
        kl = token_kl(old_logprobs, ref_logprobs, config.kl_estimator) * mask if ref_logprobs is not None else None
        valid = mask.sum(1) > 0
        advantages = group_advantages(scores, config.rollouts_per_prompt, config.group_normalize_std, valid=valid).unsqueeze(1) * mask
    return Batch(query, query_mask, response, attn, mask, scores, old_logprobs, advantages, ref_logprobs, kl, rewards, old_values, returns)


def ppo_losses(models: Models, batch: Batch, idx: torch.Tensor, config: PPOConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss on samples `idx` (token means over them): policy's clipped surrogate, minus the
    entropy bonus, plus (`group`) kl_coef x k3 KL to the reference, plus (`gae`) the critic's
    clipped value loss. The two models share no parameters, so one backward of the sum gives
    each its own gradient."""
    batch = batch.rows(idx)
    q, qm, r, am, m = batch.query, batch.query_mask, batch.response, batch.attn, batch.mask
    logits, values = models.module(q, qm, r, am)
    logits = logits / config.temperature
    logprobs = logprobs_from_logits(logits, r)
    pl = clipped_policy_loss(logprobs, batch.old_logprobs, batch.advantages, m, config.cliprange)
    entropy = masked_mean(entropy_from_logits(logits if config.entropy_coef else logits.detach()), m)
    loss = pl.loss - config.entropy_coef * entropy
    stats = {"pg_loss": pl.loss, "entropy": entropy, "clipfrac": pl.clipfrac, "approx_kl": pl.approx_kl, "ratio": pl.ratio}
    if not config.uses_critic and batch.ref_logprobs is not None:
        stats["kl_loss"] = masked_mean(token_kl(logprobs, batch.ref_logprobs, "k3"), m)
        loss = loss + config.kl_coef * stats["kl_loss"]
    if config.uses_critic:
        vf_loss, vf_clipfrac = clipped_value_loss(values, batch.old_values, batch.returns, m, config.cliprange_value)
        loss = loss + vf_loss
        stats |= {"vf_loss": vf_loss, "vf_clipfrac": vf_clipfrac}
    return loss, stats


def minibatch_step(models: Models, batch: Batch, idx: torch.Tensor, config: PPOConfig, accelerator: Any) -> dict[str, torch.Tensor]:
    """One optimiser step on this process's share `idx` of a global mini-batch, in `accumulation_steps` passes.

    The gradient is that of the token mean over the WHOLE mini-batch (every process's share), as one
    process holding it all would compute: each pass's token-mean loss is weighted by its tokens over the
    mini-batch's tokens on all processes, times the process count (DDP, ZeRO and FSDP average gradients over
    processes), times the passes (accelerate, or DeepSpeed's engine, divides each backward by them).
    Gradients are clipped per model, as two optimisers would (under DeepSpeed the engine clips the joint
    norm, `gradient_clipping` in its config). The statistics are this process's token means (averaged over
    processes when logged)."""
    world = accelerator.num_processes
    passes = accumulation_steps(config, world)
    micros = length_sorted(idx, batch.attn).tensor_split(passes)
    local = batch.mask[idx].sum()
    total = accelerator.reduce(local.clone(), reduction="sum") if world > 1 else local
    total, local = total.clamp(min=1.0), local.clamp(min=1.0)
    stats: dict[str, torch.Tensor] = {}
    for micro in micros:
        with accelerator.accumulate(models.module):
            tokens = batch.mask[micro].sum()
            loss, micro_stats = ppo_losses(models, batch, micro, config)
            accelerator.backward(loss * (tokens / total) * world * passes)
            for key, value in micro_stats.items():
                stats[key] = stats.get(key, 0.0) + value.detach() * (tokens / local)
            if accelerator.sync_gradients:
                for model in (models.policy, models.critic):
                    if model is not None:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                models.optimizer.step()
                models.optimizer.zero_grad()
    return stats


def minibatch_labels(config: PPOConfig, step: int, epoch: int, n: int) -> torch.Tensor:
    """(n,) the mini-batch of each of the step's first `n` completions, by their index over all processes
    (process r holds indices r*share...): every run of `optimizer_steps` consecutive completions is dealt one to
    each mini-batch in a random order, a function of (seed, step, epoch) only. So a mini-batch is the same set
    of completions on any number of processes, and each process holds an equal share of it."""
    k = config.optimizer_steps
    g = torch.Generator().manual_seed(config.seed * 7919 + step * 31 + epoch * 1_000_033)
    runs = math.ceil(n / k)
    return torch.stack([torch.randperm(k, generator=g) for _ in range(runs)]).flatten()[:n]


def update(models: Models, batch: Batch, config: PPOConfig, accelerator: Any, step: int) -> dict[str, list[float]]:
    """`ppo_epochs` passes over the step's rollouts in `optimizer_steps` random mini-batches (global: the same
    completions and optimiser steps on any number of processes); each statistic per mini-batch."""
    models.module.train()  # the critic has every dropout at 0: the same values as in eval mode
    stats: dict[str, list[float]] = {}
    n = batch.response.shape[0]
    first = accelerator.process_index * n  # this process's first completion in the step's global order
    for epoch in range(config.ppo_epochs):
        labels = minibatch_labels(config, step, epoch, first + n)[first:].to(batch.response.device)
        for k in range(config.optimizer_steps):
            idx = (labels == k).nonzero().squeeze(1)
            for key, value in minibatch_step(models, batch, idx, config, accelerator).items():
                stats.setdefault(key, []).append(float(value))
    return stats


def evaluate_sharded(
    models: Models, accelerator: Any, eval_tasks: Sequence[Task], config: PPOConfig, *, log: Path | None = None, step: int = 0
) -> dict[str, float]:
    """`evaluate_policy` with the held-out tasks split over the processes (each evaluates every
    `world`-th task with gathered parameters), the completions gathered: the same numbers as
    one process evaluating them all, and no process idles (or, under FSDP, hangs) alone."""
    from accelerate.utils import gather_object

    greedy: list[dict[str, Any]] = []
    sampled: list[dict[str, Any]] = []
    models.module.eval()
    mine = list(eval_tasks)[accelerator.process_index :: accelerator.num_processes]
    with gathered_for_generation(models.module, accelerator) as inner:
        evaluate_policy(inner.policy, models.tokenizer, mine, config, rows=greedy, sample_rows=sampled, step=step)
    if accelerator.num_processes > 1:
        greedy, sampled = gather_object(greedy), gather_object(sampled)
    if log is not None:
        append_jsonl(log, logged_eval_rows(greedy, sampled, config))
    return eval_metrics(greedy, sampled)


def reduce_metrics(accelerator: Any, row: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes (every process has the same keys)."""
    values = accelerator.reduce(torch.tensor(list(row.values()), device=accelerator.device), reduction="mean")
    return dict(zip(row, values.tolist(), strict=True))


def step_metrics(rollout: Rollout, batch: Batch, stats: dict[str, list[float]], group_size: int) -> dict[str, float]:
    """The namespaced numbers of one step (this process's share). KL, reward-with-penalty and
    value metrics appear only when the step computed them (no reference, no critic: none)."""
    gen = rollout.generation
    row = reward_metrics(rollout, group_size) | {
        "response/length": float(gen.lengths.mean()),
        "response/length_max": float(gen.lengths.max()),
    }
    if batch.kl is not None:
        row["objective/kl"] = float((batch.kl * batch.mask).sum(1).mean())
    if batch.rewards is not None:
        row["objective/rlhf_reward"] = float(batch.rewards.sum(1).mean())
    if batch.old_values is not None:
        row["value/mean"] = float(masked_mean(batch.old_values, batch.mask))
    names = {
        "entropy": "policy/entropy",
        "clipfrac": "policy/clipfrac",
        "approx_kl": "policy/approx_kl",
        "ratio": "policy/ratio",
        "pg_loss": "losses/policy_loss",
        "vf_loss": "losses/value_loss",
        "vf_clipfrac": "value/clipfrac",
        "kl_loss": "losses/kl_loss",
    }
    row |= {name: float(np.mean(stats[key])) for key, name in names.items() if stats.get(key)}
    return row


def reward_metrics(rollout: Rollout, group_size: int) -> dict[str, float]:
    """`reward/*` of one step: mean reward (after the truncation rule), accuracy, format rate, the share
    of completions cut at `max_new_tokens`, and `reward/mixed_groups`, the share of prompt groups whose
    rewards differ (only those carry a group advantage; in `mask` mode masked completions do not count).
    Groups are a prompt's `group_size` first-turn completions, which `step_tasks` keeps consecutive."""
    first = [i for i, turn in enumerate(rollout.turns) if turn == 0]
    valid = rollout.loss_mask.sum(1) > 0
    return {
        "reward/mean": float(rollout.scores.mean()),
        "reward/accuracy": float(np.mean([v.correct for v in rollout.verdicts])),
        "reward/format_rate": float(np.mean([v.well_formed for v in rollout.verdicts])),
        "reward/truncated_rate": float((~rollout.generation.finished).float().mean()),
        "reward/mixed_groups": mixed_groups(rollout.scores[first], group_size, valid=valid[first]),
    }
