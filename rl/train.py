"""PPO on Countdown, readable top to bottom (after CleanRL's `ppo.py`).

    policy  --generate-->  completions  --env-->  scores
    policy, reference, critic  --forward-->  log-probs, ref log-probs, values
    gae:    scores - kl_coef * KL  --GAE-->  advantages, returns  --clipped losses-->  updates
    group:  score - mean score of the prompt's completions  --clipped loss + kl_coef * KL-->  update

`train` reads like CleanRL's loop: setup and resume, then per step `collect_rollouts`,
`prepare_batch` (log-probs, values, advantages), `update` (`minibatch_step` over `ppo_losses`)
and the logging and checkpoint. The math lives in `rl/ppo.py` (unit-tested); this file is
the loop, the logging and the checkpoints. `accelerate` places models on devices and, under `accelerate launch`, runs
one process per GPU (or CPU process with gloo), each generating and training on its own
share of every step's prompts, with gradients all-reduced by DDP, or sharded by DeepSpeed
ZeRO-2/3 or FSDP (`sharding`; docs/scale.md). For that, policy and critic are one module
(`PolicyCritic`) with one optimiser, so one `accelerator.prepare` wraps them (DeepSpeed takes
one model per engine); generation and evaluation run on every process with the parameters
gathered (`gathered_for_generation`); advantages are whitened over the global batch.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from countdown_env import Task, generate_tasks
from countdown_env.errors import UsageError
from rl.config import PPOConfig, generation_batch, keeps_generation_logits, per_process_samples
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
from countdown_env.files import append_jsonl, read_jsonl, write_text_atomic
from runtime.run_dir import RunDir, publish_checkpoint, truncate_after
from runtime.tracking import check_report_to

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

    from runtime.models import load_model, resolve_model_path
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


def response_inputs(query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor) -> dict[str, Any]:
    """Model inputs for prompt + response. Position ids follow the attention mask, as in
    `generate` with left padding, so the log-probabilities computed are those of the sampled tokens."""
    input_ids = torch.cat([query, response], dim=1)
    attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}


def forward_response(
    model: Any, query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Outputs of a transformers model at the positions that predict each response token: `(B, T, ...)`."""
    logits = model(**response_inputs(query, query_mask, response, response_mask)).logits
    return logits[:, query.shape[1] - 1 : -1]


class PolicyCritic(torch.nn.Module):
    """The trained models as one module, so that one `accelerator.prepare` wraps them with one
    optimiser: DeepSpeed builds one engine per model and accelerate refuses two trained models
    under it; DDP and FSDP then also see a single forward and backward per micro-batch.

    `forward` returns `(logits, values)` at the positions predicting each response token:
    `(B, T, V)` and `(B, T)` (None without a critic, or when not asked for)."""

    def __init__(self, policy: Any, critic: Any | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.critic = critic
        # FSDP's transformer-based auto wrap reads the block class names from here.
        blocks = [*(getattr(policy, "_no_split_modules", None) or []), *(getattr(critic, "_no_split_modules", None) or [])]
        self._no_split_modules = sorted(set(blocks))

    def forward(
        self, query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor,
        with_logits: bool = True, with_values: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
        inputs = response_inputs(query, query_mask, response, response_mask)
        cut = slice(query.shape[1] - 1, -1)
        logits = self.policy(**inputs).logits[:, cut] if with_logits else None
        values = None
        if with_values and self.critic is not None:
            values = self.critic(**inputs).logits[:, cut].squeeze(-1).float()
        return logits, values


@dataclass
class Models:
    """What the loop trains and reads: `module` (policy and, for `gae`, critic) as prepared by
    accelerate with its one `optimizer` (a parameter group per model); `ref` unless `group` with kl_coef 0."""

    module: Any
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    ref: Any | None = None

    @property
    def inner(self) -> PolicyCritic:
        return unwrap(self.module)

    @property
    def policy(self) -> Any:
        return self.inner.policy

    @property
    def critic(self) -> Any | None:
        return self.inner.critic


def torch_dtype(config: PPOConfig) -> torch.dtype:
    return torch.bfloat16 if config.dtype == "bfloat16" else torch.float32


def make_accelerator(config: PPOConfig | None = None, report_to: str = "none", project_dir: Path | None = None) -> Any:
    """`cpu=True` on a machine without a GPU: under `accelerate launch --multi_gpu` / torchrun
    this makes accelerate form a gloo process group (MULTI_CPU) instead of N lone runs. The
    held-out evaluation can outlast the default process-group timeout (10 min with NCCL) on
    a 3B model, which would kill a healthy run, hence the longer timeout. `report_to` names
    accelerate's tracker (`runtime.tracking.REPORT_TO`), writing under `project_dir`.

    `dtype: bfloat16` is bf16 autocast over fp32 weights, not bf16 weights: at the study's
    actor lr of 1e-6 an AdamW update is far below bf16's resolution (8 bits of mantissa, a
    relative step of 2^-8), so pure-bf16 weights would not move; fp32 master weights keep
    the update (under DeepSpeed, its bf16 mode keeps the fp32 master copy in the optimiser).
    Gradient accumulation is accelerate's, so DeepSpeed's engine sees the accumulation
    boundaries (`accumulate`); `sync_with_dataloader` is off as we have no dataloader."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, InitProcessGroupKwargs

    config = config or PPOConfig()
    timeout = InitProcessGroupKwargs(timeout=timedelta(hours=PROCESS_GROUP_TIMEOUT_HOURS))
    trackers = {} if report_to == "none" else {"log_with": report_to, "project_dir": str(project_dir)}
    accumulation = GradientAccumulationPlugin(num_steps=config.accumulation_steps, sync_with_dataloader=False)
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[timeout],
        gradient_accumulation_plugin=accumulation,
        # None: whatever the launcher says (`--mixed_precision`); bfloat16 turns autocast on regardless.
        mixed_precision="bf16" if config.dtype == "bfloat16" else None,
        **trackers,
    )


def check_sharding(config: PPOConfig, accelerator: Any) -> None:
    """Warn when the launcher shards differently from `sharding` (what `plan` assumed for memory)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    actual = "zero" if kind == DistributedType.DEEPSPEED else "fsdp" if kind == DistributedType.FSDP else "ddp"
    if not config.sharding.startswith(actual):
        warnings.warn(
            f"sharding is {config.sharding!r} but accelerate runs {kind.value}; `countdown-lab plan` assumed {config.sharding!r}"
            f" (launch with --config_file rl/configs/accelerate/{config.sharding}.yaml)",
            stacklevel=2,
        )


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
    """Policy (trained), reference (frozen, in the run's dtype; not loaded when nothing reads it), critic (`gae` only).

    The trained weights are fp32 (master weights; `dtype: bfloat16` autocasts the compute).

    With `lora_r`, the policy trains LoRA adapters only, the reference is the policy with
    its adapters off (`AdaptersOff`), and the critic is a LoRA copy: its own frozen base, its own
    adapters and value head. A value head on the policy's trunk would save that copy but
    couple the two losses through shared adapters; a separate critic keeps PPO's two models
    (and this loop) as they are, at the cost of one more frozen set of weights.
    """
    from runtime.models import load_model, load_tokenizer

    policy = load_model(config.model, dtype=torch.float32)
    if config.lora_r:
        policy = with_lora(policy, config)
    ref = None
    if (config.uses_critic or config.kl_coef > 0) and not config.lora_r:
        ref = load_model(config.model, dtype=torch_dtype(config)).eval().requires_grad_(False).to(accelerator.device)
    critic = load_critic(config.model) if config.uses_critic else None
    if critic is not None and config.lora_r:
        critic = with_lora(critic, config, task_type="TOKEN_CLS")  # PEFT trains the new `score` head too
    groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": config.actor_lr}]
    for model in (policy, critic):
        if model is not None and config.gradient_checkpointing:
            # Non-reentrant checkpointing works with DDP's hooks and with inputs that need no grad.
            if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.2x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if critic is not None:
        groups.append({"params": [p for p in critic.parameters() if p.requires_grad], "lr": config.critic_lr})
    module = PolicyCritic(policy, critic)
    optimizer = torch.optim.AdamW(groups, lr=config.actor_lr, weight_decay=config.weight_decay)
    configure_deepspeed(config, accelerator)
    module, optimizer = accelerator.prepare(module, optimizer)
    if config.lora_r and (config.uses_critic or config.kl_coef > 0):
        ref = AdaptersOff(unwrap(module).policy)
    return Models(module, load_tokenizer(config.model), optimizer, ref)


def configure_deepspeed(config: PPOConfig, accelerator: Any) -> None:
    """Under DeepSpeed, the batch numbers it would take from a dataloader (we have none): the
    micro-batch, the accumulation steps and the clipping norm of this config."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.micro
    plugin.deepspeed_config["gradient_accumulation_steps"] = config.accumulation_steps
    plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm


@contextmanager
def gathered_for_generation(module: Any, accelerator: Any) -> Iterator[PolicyCritic]:
    """The unwrapped `PolicyCritic` with full parameters, for `generate` (which calls the policy
    directly, outside the wrapper's forward). Every process must enter it together: gathering
    is a collective. DDP and ZeRO-2 hold full weights already; ZeRO-3 gathers them
    (`GatheredParameters`), FSDP too (`summon_full_params`, or `unshard` for FSDP2 modules).
    Inside, the model runs under the run's autocast."""
    from accelerate.utils import DistributedType

    inner = unwrap(module)
    with accelerator.autocast():
        if accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                yield inner
        elif accelerator.distributed_type == DistributedType.FSDP:
            from torch.distributed.fsdp import FSDPModule
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            if isinstance(module, FSDP):
                with FSDP.summon_full_params(module, writeback=False, recurse=True):
                    yield inner
            else:  # FSDP2 (`fully_shard` changes the modules' classes in place)
                # FSDP2 sets itself up in the root's first forward and refuses a first forward through an inner
                # block (which `generate` on the policy would be): an empty pass through the root comes first.
                stub = torch.zeros(1, 1, dtype=torch.long, device=accelerator.device)
                with torch.no_grad():
                    module(stub, stub, stub, stub, with_logits=False, with_values=False)
                sharded = [m for m in module.modules() if isinstance(m, FSDPModule)]
                for m in sharded:
                    m.unshard()
                try:
                    yield inner
                finally:
                    for m in sharded:
                        m.reshard()
        else:
            yield inner


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
        write_text_atomic(run.config, json.dumps(info, indent=2))
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
            rules=config.rules,
            prompt_style=config.prompt_style,
            max_new_tokens=config.max_response_length,
            temperature=config.temperature,
            truncated=config.truncated,
            max_attempts=config.max_attempts,
            batch_size=config.generation_batch_size,
            return_logprobs=keeps_generation_logits(config, inner.policy.config.vocab_size, generation_batch(config, world)),
        )


def micro_chunks(n: int, config: PPOConfig, world: int) -> int:
    """How many micro-batches a no-grad pass over `n` samples takes: the same count in every
    process (FSDP and ZeRO-3 gather in every forward, so every process must make as many)."""
    return max(1, math.ceil(max(n, per_process_samples(config, world)) / config.micro))


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
    chunks = torch.arange(response.shape[0], device=device).tensor_split(micro_chunks(n, config, world))

    def run(fn: Any) -> torch.Tensor:
        return torch.cat([fn(query[i], query_mask[i], response[i], attn[i], i) for i in chunks])

    def logprobs(logits: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return logprobs_from_logits(logits / config.temperature, response[i])

    models.module.eval()
    autocast = accelerator.autocast() if accelerator is not None else torch.autocast("cpu", enabled=False)
    with autocast:
        need_logits = gen.logprobs is None
        old_logprobs = old_values = None
        if need_logits or config.uses_critic:
            outputs = [models.module(query[i], query_mask[i], response[i], attn[i], with_logits=need_logits) for i in chunks]
            if need_logits:
                old_logprobs = torch.cat([logprobs(logits, i) for (logits, _), i in zip(outputs, chunks, strict=True)])
            if config.uses_critic:
                old_values = torch.cat([values for _, values in outputs])
            del outputs
        if not need_logits:
            old_logprobs = gen.logprobs.to(device)
        ref_logprobs = None
        if models.ref is not None:
            ref_logprobs = run(lambda q, qm, r, a, i: logprobs(forward_response(models.ref, q, qm, r, a), i))
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
    q, qm, r, am, m = batch.query[idx], batch.query_mask[idx], batch.response[idx], batch.attn[idx], batch.mask[idx]
    logits, values = models.module(q, qm, r, am)
    logits = logits / config.temperature
    logprobs = logprobs_from_logits(logits, r)
    pl = clipped_policy_loss(logprobs, batch.old_logprobs[idx], batch.advantages[idx], m, config.cliprange)
    entropy = masked_mean(entropy_from_logits(logits if config.entropy_coef else logits.detach()), m)
    loss = pl.loss - config.entropy_coef * entropy
    stats = {"pg_loss": pl.loss, "entropy": entropy, "clipfrac": pl.clipfrac, "approx_kl": pl.approx_kl, "ratio": pl.ratio}
    if not config.uses_critic and batch.ref_logprobs is not None:
        stats["kl_loss"] = masked_mean(token_kl(logprobs, batch.ref_logprobs[idx], "k3"), m)
        loss = loss + config.kl_coef * stats["kl_loss"]
    if config.uses_critic:
        vf_loss, vf_clipfrac = clipped_value_loss(values, batch.old_values[idx], batch.returns[idx], m, config.cliprange_value)
        loss = loss + vf_loss
        stats |= {"vf_loss": vf_loss, "vf_clipfrac": vf_clipfrac}
    return loss, stats


def minibatch_step(models: Models, batch: Batch, idx: torch.Tensor, config: PPOConfig, accelerator: Any) -> dict[str, torch.Tensor]:
    """One optimiser step on mini-batch `idx`, accumulated over `accumulation_steps` micro-batches.

    Each micro-batch's token-mean loss is weighted by its share of the mini-batch's tokens, so
    the accumulated gradient is that of the mini-batch's token mean, as without accumulation
    (accelerate, or DeepSpeed's engine, divides each backward by the accumulation steps: the
    weight multiplies them back). Gradients are clipped per model, as two optimisers would
    (under DeepSpeed the engine clips the joint norm, `gradient_clipping` in its config)."""
    micros = idx.tensor_split(config.accumulation_steps)
    total = batch.mask[idx].sum().clamp(min=1.0)
    stats: dict[str, torch.Tensor] = {}
    for micro in micros:
        with accelerator.accumulate(models.module):
            share = batch.mask[micro].sum() / total
            loss, micro_stats = ppo_losses(models, batch, micro, config)
            accelerator.backward(loss * share * config.accumulation_steps)
            for key, value in micro_stats.items():
                stats[key] = stats.get(key, 0.0) + value.detach() * share
            if accelerator.sync_gradients:
                for model in (models.policy, models.critic):
                    if model is not None:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                models.optimizer.step()
                models.optimizer.zero_grad()
    return stats


def update(models: Models, batch: Batch, config: PPOConfig, accelerator: Any, shuffle: torch.Generator) -> dict[str, list[float]]:
    """`ppo_epochs` passes over the step's rollouts in shuffled mini-batches; each statistic per mini-batch."""
    models.module.train()  # the critic has every dropout at 0: the same values as in eval mode
    stats: dict[str, list[float]] = {}
    n = batch.response.shape[0]
    # The same number of mini-batches, and of micro-batches in each, in every process (DDP
    # all-reduces, FSDP/ZeRO-3 gather, in every one of them).
    n_batches = max(1, math.ceil(per_process_samples(config, accelerator.num_processes) / config.mini_batch_size))
    for _ in range(config.ppo_epochs):
        for idx in torch.randperm(n, generator=shuffle).to(batch.response.device).tensor_split(n_batches):
            for key, value in minibatch_step(models, batch, idx, config, accelerator).items():
                stats.setdefault(key, []).append(float(value))
    return stats


# ---- the loop -----------------------------------------------------------------------
def train(
    config: PPOConfig,
    output_dir: str | Path,
    *,
    tasks: Sequence[Task] | None = None,
    resume: bool = False,
    progress: bool = True,
    report_to: str = "none",
) -> Path:
    """Run PPO as configured; returns the run directory. `config.model` is the start model.
    `report_to` also logs every metrics row to a tracker (`runtime.tracking`)."""
    from accelerate.utils import set_seed
    from tqdm import tqdm

    if not config.model:
        raise UsageError("no model: pass --model PATH (a local model folder or a hub id)")
    started = time.perf_counter()
    accelerator = make_accelerator(config, check_report_to(report_to), Path(output_dir))
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if config.prompts_per_step % world:
        raise UsageError(f"prompts_per_step {config.prompts_per_step} must be divisible by the number of processes {world}")
    check_batches(config, world)
    check_sharding(config, accelerator)
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
    if report_to != "none":  # hyperparameters as scalars: trackers refuse nested values
        accelerator.init_trackers("runs", config={k: v for k, v in config.to_dict().items() if isinstance(v, int | float | str | bool)})

    def evaluate(step: int) -> dict[str, float]:
        return evaluate_sharded(models, accelerator, eval_tasks, config, log=run.eval_completions if main else None, step=step)

    if start == 0 and config.eval_every and eval_tasks:
        first = evaluate(0)
        if main:
            append_jsonl(run.metrics, [first := {"step": 0, **first, **totals.row(started)}])
            accelerator.log(first, step=0)
    bar = tqdm(
        range(start + 1, config.total_steps + 1), initial=start, total=config.total_steps, desc="ppo", disable=not (main and progress)
    )
    for step in bar:
        t0 = time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + step * 1009 + rank)
        shuffle = torch.Generator().manual_seed(config.seed * 7919 + step * 31 + rank)
        # 5. Rollouts, 6. log-probs, values and advantages, 7. the update.
        rollout = collect_rollouts(models, train_tasks, config, step, rank, world, accelerator)
        t_gen = time.perf_counter() - t0
        batch = prepare_batch(models, rollout, config, accelerator.device, accelerator)
        stats = update(models, batch, config, accelerator, shuffle)

        # 8. Metrics, averaged over processes (compute summed); logs and checkpoint on the main process.
        row = reduce_metrics(accelerator, step_metrics(rollout, batch.kl, batch.mask, batch.rewards, batch.old_values, stats))
        totals.add_step(accelerator, rollout.generation.lengths.sum(), batch.mask.sum(), config.ppo_epochs)
        row |= {
            "time/seconds_per_step": time.perf_counter() - t0,
            "time/generation_seconds": t_gen,
            "samples/total": step * config.batch_size,
        }
        if config.eval_every and eval_tasks and (step % config.eval_every == 0 or step == config.total_steps):
            row |= evaluate(step)  # every process: each evaluates its share of the held-out tasks
        if main:
            append_jsonl(run.metrics, [{"step": step, **row, **totals.row(started)}])
            accelerator.log({**row, **totals.row(started)}, step=step)  # a no-op without trackers
            append_jsonl(run.rollouts, rollout.rows(step)[: config.log_rollouts])
            bar.set_postfix(reward=f"{row['reward/mean']:.3f}", acc=f"{row['reward/accuracy']:.3f}")
        if step % config.save_every == 0 or step == config.total_steps:
            save_checkpoint(accelerator, run, step, models.module, models.tokenizer, config.keep_checkpoints)
    bar.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run.root


def check_batches(config: PPOConfig, world: int) -> None:
    """Every micro-batch of every process must hold at least one completion."""
    samples = per_process_samples(config, world)
    n_batches = max(1, math.ceil(samples / config.mini_batch_size))
    if n_batches * config.accumulation_steps > samples:
        raise UsageError(
            f"{samples} completions per process make {n_batches} mini-batches of {config.accumulation_steps} micro-batches each:"
            " more micro-batches than completions; raise micro_batch_size or make mini_batch_size divide the completions per process"
        )


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
        append_jsonl(log, sampled[: config.eval_samples] if config.eval_samples else greedy)
    return eval_metrics(greedy, sampled)


def eval_metrics(greedy: Sequence[dict[str, Any]], sampled: Sequence[dict[str, Any]] = ()) -> dict[str, float]:
    """`eval/accuracy`, `eval/format_rate`, `eval/response_length` of the greedy rows, and `eval/sample_*` of the sampled ones."""
    from rl.evaluate import rows_summary

    return {**rows_summary(greedy, "eval/"), **(rows_summary(sampled, "eval/sample_") if sampled else {})}


def unwrap(model: Any) -> Any:
    """The model inside DDP (what `generate` needs), as `accelerator.unwrap_model` gives it."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    eval_tasks: Sequence[Task],
    config: PPOConfig,
    *,
    log: Path | None = None,
    step: int = 0,
    rows: list[dict[str, Any]] | None = None,
    sample_rows: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """`eval/accuracy`, `eval/format_rate`, `eval/response_length` of greedy completions on the
    held-out tasks under the tolerant rules (the same numbers for PPO and TRL runs). With `log`,
    the completions are appended there with `step` (behaviour counts of held-out completions
    at each evaluation). With `config.eval_samples` N > 0, as the study measured: one completion
    per task sampled at temperature 1 too (`eval/sample_*`, rows into `sample_rows`), and N of them
    logged instead of the greedy ones."""
    from rl.evaluate import greedy_eval, sampled_eval

    greedy = [] if rows is None else rows
    sampled = [] if sample_rows is None else sample_rows
    rules = config.rules.with_(strict_ending=False)
    common = {"rules": rules, "prompt_style": config.prompt_style, "max_new_tokens": config.max_response_length, "step": step}
    greedy_eval(model, tokenizer, eval_tasks, rows=greedy, **common)
    if config.eval_samples:
        # the same samples after a resume; new ones at each evaluation
        sampled_eval(model, tokenizer, eval_tasks, seed=config.seed * 100_003 + step, rows=sampled, **common)
    if log is not None:
        append_jsonl(log, sampled[: config.eval_samples] if config.eval_samples else greedy)
    return eval_metrics(greedy, sampled)


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


def save_checkpoint(accelerator: Any, run: RunDir, step: int, module: Any, tokenizer: Any, keep: int) -> Path:
    """Models, optimizers and every process's RNG states (accelerate's `save_state`), plus the
    policy as a loadable model folder, written to a temp folder and renamed into place. The
    policy's weights come from `get_state_dict`, which every process joins (it gathers shards
    under FSDP and ZeRO-3)."""
    tmp = run.checkpoints / f".tmp-step-{step:06d}"
    if accelerator.is_main_process and tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    state = accelerator.get_state_dict(module)
    if accelerator.is_main_process:
        policy_state = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
        unwrap(module).policy.save_pretrained(tmp / "policy", state_dict=policy_state)
        tokenizer.save_pretrained(tmp / "policy")
        write_text_atomic(tmp / "state.json", json.dumps({"step": step}))
        publish_checkpoint(tmp, run.checkpoint(step), keep)
    accelerator.wait_for_everyone()
    return run.checkpoint(step)
