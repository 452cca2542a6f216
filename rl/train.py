"""PPO on Countdown, readable top to bottom (after CleanRL's `ppo.py`).

    policy  --generate-->  completions  --env-->  scores
    policy, reference, critic  --forward-->  log-probs, ref log-probs, values
    gae:    scores - kl_coef * KL  --GAE-->  advantages, returns  --clipped losses-->  updates
    group:  score - mean score of the prompt's completions  --clipped loss + kl_coef * KL-->  update

`train` reads like CleanRL's loop: setup and resume, then per step `collect_rollouts`,
`prepare_batch` (log-probs, values, advantages), `update` (`policy_step`, `critic_step`)
and the logging and checkpoint. The math lives in `rl/ppo.py` (unit-tested); this file is
the loop, the logging and the checkpoints. `accelerate` places models on devices and, under `accelerate launch`, runs
one process per GPU (or CPU process with gloo), each generating and training on its own
share of every step's prompts, with gradients all-reduced by DDP.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
    group_advantages,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    token_kl,
)
from rl.rollout import Rollout, collect
from rl.run_dir import RunDir, append_jsonl, publish_checkpoint, read_jsonl, truncate_after, write_atomic

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
#: Dropout probabilities a config may carry; the critic zeroes every one it has.
DROPOUT_FIELDS = ("classifier_dropout", "hidden_dropout", "hidden_dropout_prob", "attention_dropout", "attention_probs_dropout_prob")


def load_critic(model_path: str) -> Any:
    """The critic: the policy's weights with a scalar head per token (a fresh linear `score`).

    Dropout off: Qwen2/Llama configs set no `classifier_dropout`, so the token-classification
    head would get transformers' default of 0.1, making old values and the value targets
    noisy. With every dropout at 0 the critic's train and eval modes compute the same values.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    from rl.models import load_model, resolve_model_path
    from runtime.models import adapter_base

    path = resolve_model_path(model_path)
    # A LoRA adapter (`sft --lora-r`): the critic's trunk is the merged model's.
    merged = load_model(path, dtype=torch.float32) if adapter_base(path) is not None else None
    config = AutoConfig.from_pretrained(path, num_labels=1) if merged is None else merged.config
    config.num_labels = 1
    for name in DROPOUT_FIELDS:
        if name == "classifier_dropout" or getattr(config, name, None) is not None:
            setattr(config, name, 0.0)
    if merged is None:
        critic = AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=torch.float32)
    else:
        critic = AutoModelForTokenClassification.from_config(config, dtype=torch.float32)
        critic.base_model.load_state_dict(merged.base_model.state_dict())
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


@dataclass
class Models:
    """What the loop trains and reads; `critic` only for `gae`, `ref` unless `group` with kl_coef 0."""

    policy: Any
    tokenizer: Any
    actor_opt: torch.optim.Optimizer
    ref: Any | None = None
    critic: Any | None = None
    critic_opt: torch.optim.Optimizer | None = None


def make_accelerator() -> Any:
    """`cpu=True` on a machine without a GPU: under `accelerate launch --multi_gpu` / torchrun
    this makes accelerate form a gloo process group (MULTI_CPU) instead of N lone runs. The
    held-out evaluation runs on the main process while the others wait in the next
    collective; on a 3B model it can outlast the default process-group timeout (10 min with
    NCCL), which would kill a healthy run, hence the longer timeout."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    timeout = InitProcessGroupKwargs(timeout=timedelta(hours=PROCESS_GROUP_TIMEOUT_HOURS))
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[timeout])


class AdaptersOff:
    """The reference of a LoRA policy: the policy's own forward with its adapters disabled,
    i.e. the start model, with no second copy of the weights."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def __call__(self, **inputs: Any) -> Any:
        with unwrap(self.policy).disable_adapter():
            return self.policy(**inputs)


def with_lora(model: Any, config: PPOConfig, task_type: str = "CAUSAL_LM") -> Any:
    """`model` with fresh trainable LoRA adapters (`lora_r`, `lora_alpha`), the rest frozen.

    The adapter records `config.model` as its base, so a checkpoint's `policy/` adapter loads
    onto the start model (itself perhaps an SFT adapter) by `runtime.models.load_model`."""
    from peft import get_peft_model

    from runtime.models import lora_config, model_reference

    model = get_peft_model(model, lora_config(config.lora_r, config.lora_alpha, task_type=task_type))
    # get_peft_model records the loaded folder (for a hub id offline: this machine's cache).
    model.peft_config["default"].base_model_name_or_path = model_reference(config.model)
    return model


def load_models(config: PPOConfig, accelerator: Any) -> Models:
    """Policy (trained), reference (frozen; not loaded when nothing reads it), critic (`gae` only).

    With `lora_r`, the policy trains LoRA adapters only, the reference is the policy with
    its adapters off (`AdaptersOff`), and the critic is a LoRA copy: its own frozen base, its own
    adapters and value head. A value head on the policy's trunk would save that copy but
    couple the two losses through shared adapters; a separate critic keeps PPO's two models
    (and this loop) as they are, at the cost of one more frozen set of weights.
    """
    from rl.models import load_model, load_tokenizer

    policy = load_model(config.model, dtype=torch.float32)
    if config.lora_r:
        policy = with_lora(policy, config)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    actor_opt = torch.optim.AdamW(trainable, lr=config.actor_lr, weight_decay=config.weight_decay)
    ref = None
    if (config.uses_critic or config.kl_coef > 0) and not config.lora_r:
        ref = load_model(config.model).eval().requires_grad_(False).to(accelerator.device)
    if not config.uses_critic:
        policy, actor_opt = accelerator.prepare(policy, actor_opt)
        if config.lora_r and config.kl_coef > 0:
            ref = AdaptersOff(policy)
        return Models(policy, load_tokenizer(config.model), actor_opt, ref)
    critic = load_critic(config.model)
    if config.lora_r:
        critic = with_lora(critic, config, task_type="TOKEN_CLS")  # PEFT trains the new `score` head too
    critic_opt = torch.optim.AdamW(
        [p for p in critic.parameters() if p.requires_grad], lr=config.critic_lr, weight_decay=config.weight_decay
    )
    policy, critic, actor_opt, critic_opt = accelerator.prepare(policy, critic, actor_opt, critic_opt)
    if config.lora_r:
        ref = AdaptersOff(policy)
    return Models(policy, load_tokenizer(config.model), actor_opt, ref, critic, critic_opt)


# ---- run directory and totals ---------------------------------------------------------
@dataclass
class Totals:
    """Compute spent so far, carried across a resume by the last kept metrics row."""

    generated_tokens: float = 0.0
    """Response tokens sampled (every process, every turn)."""
    trained_tokens: float = 0.0
    """Tokens in the policy loss, counted once per PPO epoch."""
    elapsed_before: float = 0.0
    """Wall seconds of the earlier runs of this run directory."""

    @classmethod
    def from_log(cls, metrics: Path, step: int) -> Totals:
        rows = [row for row in read_jsonl(metrics) if row.get("step") == step]
        if not rows:
            return cls()
        last = rows[-1]
        return cls(
            last.get("compute/generated_tokens", 0.0), last.get("compute/trained_tokens", 0.0), last.get("time/elapsed_seconds", 0.0)
        )

    def add_step(self, accelerator: Any, generated: torch.Tensor, in_loss: torch.Tensor, epochs: int) -> None:
        """Add one step's tokens (this process's counts, summed over the processes)."""
        spent = torch.stack([generated.float().to(accelerator.device), in_loss.float().to(accelerator.device)])
        spent = accelerator.reduce(spent, reduction="sum").tolist()
        self.generated_tokens += spent[0]
        self.trained_tokens += spent[1] * epochs

    def row(self, started: float) -> dict[str, float]:
        return {
            "compute/generated_tokens": self.generated_tokens,
            "compute/trained_tokens": self.trained_tokens,
            "time/elapsed_seconds": self.elapsed_before + time.perf_counter() - started,
        }


def open_run(accelerator: Any, run: RunDir, config: PPOConfig, resume: bool) -> int:
    """The last completed step (0 for a new run): resume from the newest complete checkpoint,
    or refuse to mix two runs' logs. Drops the log rows of the steps that will be redone."""
    start = 0
    if resume and (latest := run.latest_checkpoint()):
        start, folder = latest
        accelerator.load_state(str(folder))
    elif not resume and run.has_logs():
        raise UsageError(f"{run.root} already holds a run; pass --resume to continue it or choose another --output-dir")
    if accelerator.is_main_process:
        run.root.mkdir(parents=True, exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        for log in (run.metrics, run.rollouts, run.eval_completions):
            # With no checkpoint, the step-0 evaluation is redone too, so nothing is kept
            # (else step 0 appears twice).
            truncate_after(log, start if start > 0 else -1)
        info = {**config.to_dict(), "num_processes": accelerator.num_processes, "resumed_from": start}
        write_atomic(run.config, json.dumps(info, indent=2))
    accelerator.wait_for_everyone()
    return start


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


def collect_rollouts(models: Models, tasks: Sequence[Task], config: PPOConfig, step: int, rank: int, world: int) -> Rollout:
    """Sample this process's completions for `step` at the rollout temperature and score them in the env."""
    models.policy.eval()
    return collect(
        unwrap(models.policy),
        models.tokenizer,
        step_tasks(tasks, config, step, rank, world),
        rules=config.rules,
        prompt_style=config.prompt_style,
        max_new_tokens=config.max_response_length,
        temperature=config.temperature,
        truncated=config.truncated,
        max_attempts=config.max_attempts,
        batch_size=config.generation_batch_size,
        return_logprobs=config.logprobs_from_generation,
    )


@torch.no_grad()
def prepare_batch(models: Models, rollout: Rollout, config: PPOConfig, device: Any) -> Batch:
    """Log-probs under the rollout policy and the reference, values, then advantages.

    Everything here runs in eval mode, so the old log-probs and values are those of the
    models that sampled, not of a dropout-perturbed copy.
    """
    gen = rollout.generation
    query, query_mask = gen.query.to(device), gen.query_mask.to(device)
    response, attn, mask = gen.response.to(device), gen.response_mask.to(device), rollout.loss_mask.to(device)
    scores = rollout.scores.to(device)

    def logprobs_of(model: Any) -> torch.Tensor:
        return logprobs_from_logits(forward_response(model, query, query_mask, response, attn) / config.temperature, response)

    models.policy.eval()
    old_logprobs = gen.logprobs.to(device) if gen.logprobs is not None else logprobs_of(models.policy)
    ref_logprobs = logprobs_of(models.ref) if models.ref is not None else None
    if config.uses_critic:
        models.critic.eval()
        old_values = forward_response(models.critic, query, query_mask, response, attn).squeeze(-1).float()
        # Rewards with the KL penalty folded in, then GAE and whitening.
        rewards, kl = kl_penalized_rewards(scores, old_logprobs, ref_logprobs, mask, config.kl_coef, config.kl_estimator)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
    else:
        # A prompt's completions are consecutive (`step_tasks`): one group per prompt. The KL
        # is a loss term here (`policy_step`), computed only to be logged.
        old_values = rewards = returns = None
        kl = token_kl(old_logprobs, ref_logprobs, config.kl_estimator) * mask if ref_logprobs is not None else None
        valid = mask.sum(1) > 0
        advantages = group_advantages(scores, config.rollouts_per_prompt, config.group_normalize_std, valid=valid).unsqueeze(1) * mask
    return Batch(query, query_mask, response, attn, mask, scores, old_logprobs, advantages, ref_logprobs, kl, rewards, old_values, returns)


def policy_step(models: Models, batch: Batch, idx: torch.Tensor, config: PPOConfig, accelerator: Any) -> dict[str, torch.Tensor]:
    """One gradient step of the policy on mini-batch `idx`: clipped surrogate (token mean),
    minus the entropy bonus, plus (`group`) kl_coef x k3 KL to the reference."""
    q, qm, r, am, m = batch.query[idx], batch.query_mask[idx], batch.response[idx], batch.attn[idx], batch.mask[idx]
    logits = forward_response(models.policy, q, qm, r, am) / config.temperature
    logprobs = logprobs_from_logits(logits, r)
    pl = clipped_policy_loss(logprobs, batch.old_logprobs[idx], batch.advantages[idx], m, config.cliprange)
    entropy = masked_mean(entropy_from_logits(logits if config.entropy_coef else logits.detach()), m)
    loss = pl.loss - config.entropy_coef * entropy
    stats = {"pg_loss": pl.loss, "entropy": entropy, "clipfrac": pl.clipfrac, "approx_kl": pl.approx_kl, "ratio": pl.ratio}
    if not config.uses_critic and batch.ref_logprobs is not None:
        stats["kl_loss"] = masked_mean(token_kl(logprobs, batch.ref_logprobs[idx], "k3"), m)
        loss = loss + config.kl_coef * stats["kl_loss"]
    models.actor_opt.zero_grad()
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(models.policy.parameters(), config.max_grad_norm)
    models.actor_opt.step()
    return stats


def critic_step(models: Models, batch: Batch, idx: torch.Tensor, config: PPOConfig, accelerator: Any) -> dict[str, torch.Tensor]:
    """One gradient step of the critic on mini-batch `idx`: the clipped value loss."""
    values = forward_response(models.critic, batch.query[idx], batch.query_mask[idx], batch.response[idx], batch.attn[idx])
    vf_loss, vf_clipfrac = clipped_value_loss(
        values.squeeze(-1).float(), batch.old_values[idx], batch.returns[idx], batch.mask[idx], config.cliprange_value
    )
    models.critic_opt.zero_grad()
    accelerator.backward(vf_loss)
    accelerator.clip_grad_norm_(models.critic.parameters(), config.max_grad_norm)
    models.critic_opt.step()
    return {"vf_loss": vf_loss, "vf_clipfrac": vf_clipfrac}


def update(models: Models, batch: Batch, config: PPOConfig, accelerator: Any, shuffle: torch.Generator) -> dict[str, list[float]]:
    """`ppo_epochs` passes over the step's rollouts in shuffled mini-batches; each statistic per mini-batch."""
    models.policy.train()
    if models.critic is not None:
        models.critic.train()  # with every dropout at 0, the same values as in eval mode
    stats: dict[str, list[float]] = {}
    n = batch.response.shape[0]
    # The same number of mini-batches in every process (DDP all-reduces once per batch).
    n_batches = max(
        1, math.ceil(config.prompts_per_step // accelerator.num_processes * config.rollouts_per_prompt / config.mini_batch_size)
    )
    for _ in range(config.ppo_epochs):
        for idx in torch.randperm(n, generator=shuffle).to(batch.response.device).tensor_split(n_batches):
            step_stats = policy_step(models, batch, idx, config, accelerator)
            if models.critic is not None:
                step_stats |= critic_step(models, batch, idx, config, accelerator)
            for key, value in step_stats.items():
                stats.setdefault(key, []).append(float(value.detach()))
    return stats


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
    from accelerate.utils import set_seed
    from tqdm import tqdm

    if not config.model:
        raise UsageError("no model: pass --model PATH (a local model folder or a hub id)")
    started = time.perf_counter()
    accelerator = make_accelerator()
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if config.prompts_per_step % world:
        raise UsageError(f"prompts_per_step {config.prompts_per_step} must be divisible by the number of processes {world}")
    run = RunDir(Path(output_dir))

    # 1. Seeding: the one place the global RNGs are seeded. Each step reseeds sampling
    #    from (seed, step, rank) below, so a resumed run draws what it would have drawn.
    set_seed(config.seed)
    # 2. Data: RL prompts and held-out eval tasks, disjoint.
    train_tasks, eval_tasks = split_tasks(config, tasks)
    # 3. Models, then 4. resume from the newest complete checkpoint.
    models = load_models(config, accelerator)
    start = open_run(accelerator, run, config, resume)
    totals = Totals.from_log(run.metrics, start) if start else Totals()

    def evaluate(step: int) -> dict[str, float]:
        return evaluate_policy(unwrap(models.policy), models.tokenizer, eval_tasks, config, log=run.eval_completions, step=step)

    if main and start == 0 and config.eval_every and eval_tasks:
        append_jsonl(run.metrics, [{"step": 0, **evaluate(0), **totals.row(started)}])
    bar = tqdm(
        range(start + 1, config.total_steps + 1), initial=start, total=config.total_steps, desc="ppo", disable=not (main and progress)
    )
    for step in bar:
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + step * 1009 + rank)
        shuffle = torch.Generator().manual_seed(config.seed * 7919 + step * 31 + rank)
        # 5. Rollouts, 6. log-probs, values and advantages, 7. the update.
        rollout = collect_rollouts(models, train_tasks, config, step, rank, world)
        t_gen = time.perf_counter() - t0
        batch = prepare_batch(models, rollout, config, accelerator.device)
        stats = update(models, batch, config, accelerator, shuffle)

        # 8. Metrics, averaged over processes (compute summed); logs and checkpoint on the main process.
        row = reduce_metrics(accelerator, step_metrics(rollout, batch.kl, batch.mask, batch.rewards, batch.old_values, stats))
        totals.add_step(accelerator, rollout.generation.lengths.sum(), batch.mask.sum(), config.ppo_epochs)
        row |= {
            "time/seconds_per_step": time.perf_counter() - t0,
            "time/generation_seconds": t_gen,
            "samples/total": step * config.batch_size,
        }
        if main:
            if config.eval_every and eval_tasks and (step % config.eval_every == 0 or step == config.total_steps):
                row |= evaluate(step)
            append_jsonl(run.metrics, [{"step": step, **row, **totals.row(started)}])
            append_jsonl(run.rollouts, rollout.rows(step)[: config.log_rollouts])
            bar.set_postfix(reward=f"{row['reward/mean']:.3f}", acc=f"{row['reward/accuracy']:.3f}")
        if step % config.save_every == 0 or step == config.total_steps:
            save_checkpoint(accelerator, run, step, models.policy, models.tokenizer, config.keep_checkpoints)
    bar.close()
    accelerator.wait_for_everyone()
    return run.root


def unwrap(model: Any) -> Any:
    """The model inside DDP (what `generate` needs), as `accelerator.unwrap_model` gives it."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def evaluate_policy(
    model: Any, tokenizer: Any, eval_tasks: Sequence[Task], config: PPOConfig, *, log: Path | None = None, step: int = 0
) -> dict[str, float]:
    """`eval/accuracy`, `eval/format_rate`, `eval/response_length` of greedy completions on the
    held-out tasks under the tolerant rules (the same numbers for PPO and TRL runs). With `log`,
    the completions are appended there with `step` (behaviour counts of held-out completions
    at each evaluation, as the study measured them)."""
    from rl.evaluate import greedy_eval

    rows: list[dict[str, Any]] = []
    report = greedy_eval(
        model,
        tokenizer,
        eval_tasks,
        rules=config.rules.with_(strict_ending=False),
        prompt_style=config.prompt_style,
        max_new_tokens=config.max_response_length,
        rows=rows,
        step=step,
    )
    if log is not None:
        append_jsonl(log, rows)
    return {f"eval/{k}": v for k, v in report.items()}


def reduce_metrics(accelerator: Any, row: dict[str, float]) -> dict[str, float]:
    """Each metric averaged over the processes (every process has the same keys)."""
    values = accelerator.reduce(torch.tensor(list(row.values()), device=accelerator.device), reduction="mean")
    return dict(zip(row, values.tolist(), strict=True))


def step_metrics(
    rollout: Rollout,
    kl: torch.Tensor | None,
    mask: torch.Tensor,
    rewards: torch.Tensor | None,
    values: torch.Tensor | None,
    stats: dict[str, list[float]],
) -> dict[str, float]:
    """The namespaced numbers of one step (this process's share). KL, reward-with-penalty and
    value metrics appear only when the step computed them (no reference, no critic: none)."""
    gen = rollout.generation
    verdicts = rollout.verdicts
    row = {
        "reward/mean": float(rollout.scores.mean()),
        "reward/accuracy": float(np.mean([v.correct for v in verdicts])),
        "reward/format_rate": float(np.mean([v.well_formed for v in verdicts])),
        "reward/truncated_rate": float((~gen.finished).float().mean()),
        "response/length": float(gen.lengths.mean()),
        "response/length_max": float(gen.lengths.max()),
    }
    if kl is not None:
        row["objective/kl"] = float((kl * mask).sum(1).mean())
    if rewards is not None:
        row["objective/rlhf_reward"] = float(rewards.sum(1).mean())
    if values is not None:
        row["value/mean"] = float(masked_mean(values, mask))
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
