"""PPO on Countdown, readable top to bottom (after CleanRL's `ppo.py`).

    policy  --generate-->  completions  --env-->  scores
    policy, reference, critic  --forward-->  log-probs, ref log-probs, values
    scores - kl_coef * KL  --GAE-->  advantages, returns  --clipped losses-->  updates

The math lives in `rl/ppo.py` (unit-tested); this file is the loop, the logging and the
checkpoints. `accelerate` places models on devices and, under `accelerate launch`, runs
one process per GPU (or CPU process with gloo), each generating and training on its own
share of every step's prompts, with gradients all-reduced by DDP.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from countdown_env import Task, generate_tasks
from countdown_env.errors import UsageError
from rl.config import PPOConfig
from rl.ppo import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
)
from rl.rollout import Rollout, collect
from rl.run_dir import RunDir, append_jsonl, publish_checkpoint, truncate_after, write_atomic

#: How long a process waits in a collective for the others (the main process evaluates alone).
PROCESS_GROUP_TIMEOUT_HOURS = 2


# ---- data ---------------------------------------------------------------------------
def split_tasks(config: PPOConfig, tasks: Sequence[Task] | None = None) -> tuple[list[Task], list[Task]]:
    """(RL tasks, held-out eval tasks): eval from the preset's test split, RL tasks from its
    train split (or `tasks`), with any task that is also an eval task dropped."""
    eval_tasks = generate_tasks(config.num_eval_tasks, seed=config.seed, preset=config.task_preset, split="test")
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


# ---- models -------------------------------------------------------------------------
def load_critic(model_path: str) -> Any:
    """The critic: the policy's weights with a scalar head per token (a fresh linear `score`)."""
    from transformers import AutoModelForTokenClassification

    from rl.models import resolve_model_path

    critic = AutoModelForTokenClassification.from_pretrained(resolve_model_path(model_path), num_labels=1, dtype=torch.float32)
    critic.config.pad_token_id = critic.config.pad_token_id if critic.config.pad_token_id is not None else critic.config.eos_token_id
    return critic


def forward_response(
    model: Any, query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Outputs at the positions that predict each response token: `(B, T, ...)`.

    Position ids follow the attention mask, as in `generate` with left padding, so the
    log-probabilities here are those of the sampled tokens.
    """
    input_ids = torch.cat([query, response], dim=1)
    attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits
    return logits[:, query.shape[1] - 1 : -1]


# ---- the loop -----------------------------------------------------------------------
def train(
    config: PPOConfig,
    output_dir: str | Path,
    *,
    tasks: Sequence[Task] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Run PPO as configured; returns the run directory. `config.model` is the start model."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed
    from tqdm import tqdm

    from rl.evaluate import greedy_eval
    from rl.models import load_model, load_tokenizer

    if not config.model:
        raise UsageError("no model: pass --model PATH (a local model folder or a hub id)")
    # cpu=True on a machine without a GPU: under `accelerate launch --multi_gpu` / torchrun
    # this makes accelerate form a gloo process group (MULTI_CPU) instead of N lone runs.
    # The held-out evaluation runs on the main process while the others wait in the next
    # collective; on a 3B model it can outlast the default process-group timeout (10 min
    # with NCCL), which would kill a healthy run, hence the longer timeout.
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(), kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=PROCESS_GROUP_TIMEOUT_HOURS))]
    )
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if config.prompts_per_step % world:
        raise UsageError(f"prompts_per_step {config.prompts_per_step} must be divisible by the number of processes {world}")
    run = RunDir(Path(output_dir))

    # 1. Seeding: the one place the global RNGs are seeded. Each step reseeds sampling
    #    from (seed, step, rank) below, so a resumed run draws what it would have drawn.
    set_seed(config.seed)

    # 2. Data: RL prompts and held-out eval tasks, disjoint.
    train_tasks, eval_tasks = split_tasks(config, tasks)

    # 3. Models: policy (trained), reference (frozen), critic (policy weights + scalar head).
    tokenizer = load_tokenizer(config.model)
    policy = load_model(config.model, dtype=torch.float32)
    ref = load_model(config.model).eval().requires_grad_(False).to(accelerator.device)
    critic = load_critic(config.model)
    actor_opt = torch.optim.AdamW(policy.parameters(), lr=config.actor_lr, weight_decay=config.weight_decay)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=config.critic_lr, weight_decay=config.weight_decay)
    policy, critic, actor_opt, critic_opt = accelerator.prepare(policy, critic, actor_opt, critic_opt)

    # 4. Resume from the newest complete checkpoint, or refuse to mix two runs' logs.
    start = 0
    if resume and (latest := run.latest_checkpoint()):
        start, folder = latest
        accelerator.load_state(str(folder))
    elif not resume and run.has_logs():
        raise UsageError(f"{run.root} already holds a run; pass --resume to continue it or choose another --output-dir")
    if main:
        run.root.mkdir(parents=True, exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        for log in (run.metrics, run.rollouts):
            # Rows of steps after the checkpoint will be redone; with no checkpoint that
            # includes the step-0 evaluation, so nothing is kept (else step 0 appears twice).
            truncate_after(log, start if start > 0 else -1)
        write_atomic(run.config, json.dumps({**config.to_dict(), "num_processes": world, "resumed_from": start}, indent=2))
    accelerator.wait_for_everyone()

    def evaluate_now(step: int) -> dict[str, float]:
        report = greedy_eval(accelerator.unwrap_model(policy), tokenizer, eval_tasks, rules=config.rules.with_(strict_ending=False),
                             prompt_style=config.prompt_style, max_new_tokens=config.max_response_length)  # fmt: skip
        return {f"eval/{k}": v for k, v in report.items()}

    if main and start == 0 and config.eval_every and eval_tasks:
        append_jsonl(run.metrics, [{"step": 0, **evaluate_now(0)}])
    bar = tqdm(
        range(start + 1, config.total_steps + 1), initial=start, total=config.total_steps, desc="ppo", disable=not (main and progress)
    )
    for step in bar:
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + step * 1009 + rank)
        shuffle = torch.Generator().manual_seed(config.seed * 7919 + step * 31 + rank)

        # 5. Rollouts: sample completions at temperature 1 and score them in the env.
        policy.eval()
        rollout = collect(accelerator.unwrap_model(policy), tokenizer, step_tasks(train_tasks, config, step, rank, world),
                          rules=config.rules, prompt_style=config.prompt_style, max_new_tokens=config.max_response_length,
                          temperature=config.temperature, truncated=config.truncated, max_attempts=config.max_attempts,
                          batch_size=config.generation_batch_size, return_logprobs=config.logprobs_from_generation)  # fmt: skip
        t_gen = time.perf_counter() - t0
        gen = rollout.generation
        device = accelerator.device
        query, query_mask = gen.query.to(device), gen.query_mask.to(device)
        response, mask = gen.response.to(device), rollout.loss_mask.to(device)
        attn = gen.response_mask.to(device)  # attention covers every generated token, even masked-out ones
        scores = rollout.scores.to(device)

        # 6. Log-probs under the rollout policy and the reference, values from the critic.
        with torch.no_grad():
            if gen.logprobs is not None:
                old_logprobs = gen.logprobs.to(device)
            else:
                old_logprobs = logprobs_from_logits(
                    forward_response(policy, query, query_mask, response, attn) / config.temperature, response
                )
            ref_logprobs = logprobs_from_logits(forward_response(ref, query, query_mask, response, attn) / config.temperature, response)
            old_values = forward_response(critic, query, query_mask, response, attn).squeeze(-1).float()

            # 7. Rewards with the KL penalty folded in, then GAE and whitening.
            rewards, kl = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, config.kl_coef, config.kl_estimator)
            advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
            if config.whiten_advantages:
                advantages = masked_whiten(advantages, mask)

        # 8. PPO epochs over shuffled mini-batches: clipped policy loss, clipped value loss.
        policy.train()
        critic.train()
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "entropy", "clipfrac", "vf_clipfrac", "approx_kl", "ratio")}
        n = response.shape[0]
        # The same number of mini-batches in every process (DDP all-reduces once per batch).
        n_batches = max(1, math.ceil(config.prompts_per_step // world * config.rollouts_per_prompt / config.mini_batch_size))
        for _ in range(config.ppo_epochs):
            for idx in torch.randperm(n, generator=shuffle).to(device).tensor_split(n_batches):
                q, qm, r, m, am = query[idx], query_mask[idx], response[idx], mask[idx], attn[idx]
                logits = forward_response(policy, q, qm, r, am) / config.temperature
                logprobs = logprobs_from_logits(logits, r)
                pl = clipped_policy_loss(logprobs, old_logprobs[idx], advantages[idx], m, config.cliprange)
                entropy = entropy_from_logits(logits) if config.entropy_coef else entropy_from_logits(logits.detach())
                entropy = masked_mean(entropy, m)
                actor_opt.zero_grad()
                accelerator.backward(pl.loss - config.entropy_coef * entropy)
                accelerator.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                actor_opt.step()

                values = forward_response(critic, q, qm, r, am).squeeze(-1).float()
                vf_loss, vf_clipfrac = clipped_value_loss(values, old_values[idx], returns[idx], m, config.cliprange_value)
                critic_opt.zero_grad()
                accelerator.backward(vf_loss)
                accelerator.clip_grad_norm_(critic.parameters(), config.max_grad_norm)
                critic_opt.step()
                for key, value in (("pg_loss", pl.loss), ("vf_loss", vf_loss), ("entropy", entropy), ("clipfrac", pl.clipfrac),
                                   ("vf_clipfrac", vf_clipfrac), ("approx_kl", pl.approx_kl), ("ratio", pl.ratio)):  # fmt: skip
                    stats[key].append(float(value.detach()))

        # 9. Metrics, averaged over processes; logs and checkpoint on the main process.
        row = step_metrics(rollout, kl, mask, rewards, old_values, stats)
        row = dict(zip(row, accelerator.reduce(torch.tensor(list(row.values()), device=device), reduction="mean").tolist(), strict=True))
        row["time/seconds_per_step"] = time.perf_counter() - t0
        row["time/generation_seconds"] = t_gen
        row["samples/total"] = step * config.batch_size
        if main:
            if config.eval_every and eval_tasks and (step % config.eval_every == 0 or step == config.total_steps):
                row.update(evaluate_now(step))
            append_jsonl(run.metrics, [{"step": step, **row}])
            append_jsonl(run.rollouts, rollout.rows(step)[: config.log_rollouts])
            bar.set_postfix(reward=f"{row['reward/mean']:.3f}", acc=f"{row['reward/accuracy']:.3f}")
        if step % config.save_every == 0 or step == config.total_steps:
            save_checkpoint(accelerator, run, step, policy, tokenizer, config.keep_checkpoints)
    bar.close()
    accelerator.wait_for_everyone()
    return run.root


def step_metrics(
    rollout: Rollout, kl: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor, values: torch.Tensor, stats: dict[str, list[float]]
) -> dict[str, float]:
    """The namespaced numbers of one step (this process's share)."""
    gen = rollout.generation
    verdicts = rollout.verdicts
    seq_kl = (kl * mask).sum(1)
    return {
        "reward/mean": float(rollout.scores.mean()),
        "reward/accuracy": float(np.mean([v.correct for v in verdicts])),
        "reward/format_rate": float(np.mean([v.well_formed for v in verdicts])),
        "reward/truncated_rate": float((~gen.finished).float().mean()),
        "response/length": float(gen.lengths.mean()),
        "response/length_max": float(gen.lengths.max()),
        "objective/kl": float(seq_kl.mean()),
        "objective/rlhf_reward": float(rewards.sum(1).mean()),
        "value/mean": float(masked_mean(values, mask)),
        "policy/entropy": float(np.mean(stats["entropy"])),
        "policy/clipfrac": float(np.mean(stats["clipfrac"])),
        "policy/approx_kl": float(np.mean(stats["approx_kl"])),
        "policy/ratio": float(np.mean(stats["ratio"])),
        "losses/policy_loss": float(np.mean(stats["pg_loss"])),
        "losses/value_loss": float(np.mean(stats["vf_loss"])),
        "value/clipfrac": float(np.mean(stats["vf_clipfrac"])),
    }


def save_checkpoint(accelerator: Any, run: RunDir, step: int, policy: Any, tokenizer: Any, keep: int) -> Path:
    """Models, optimizers and every process's RNG states (accelerate's `save_state`), plus the
    policy as a loadable model folder, written to a temp folder and renamed into place."""
    tmp = run.checkpoints / f".tmp-step-{step:06d}"
    if accelerator.is_main_process and tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        accelerator.unwrap_model(policy).save_pretrained(tmp / "policy")
        tokenizer.save_pretrained(tmp / "policy")
        write_atomic(tmp / "state.json", json.dumps({"step": step}))
        publish_checkpoint(tmp, run.checkpoint(step), keep)
    accelerator.wait_for_everyone()
    return run.checkpoint(step)
