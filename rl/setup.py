"""What PPO trains with, set up before the loop (`rl.train`) starts, and the run directory it resumes from.

    config --make_accelerator--> accelerator (devices, processes, DeepSpeed/FSDP, mixed precision, trackers)
           --load_models-------> policy (+ LoRA), critic (`gae`), reference, one AdamW, prepared as one `PolicyCritic`
           --open_run----------> the step to resume after (accelerate state of the newest checkpoint), logs trimmed

`accelerate` places models on devices and, under `accelerate launch`, runs one process per GPU (or CPU
process with gloo), each generating and training on its own share of every step's prompts, with
gradients all-reduced by DDP, or sharded by DeepSpeed ZeRO-2/3 or FSDP (`sharding`; docs/scale.md).
For that, policy and critic are one module (`PolicyCritic`) with one optimiser, so one
`accelerator.prepare` wraps them (DeepSpeed takes one model per engine); generation and evaluation
run on every process with the parameters gathered (`gathered_for_generation`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from countdown_env.errors import UsageError
from countdown_env.files import read_jsonl, write_text_atomic
from rl.config import PPOConfig, accumulation_steps, check_batches, gathered_for_rollouts, micro_size
from runtime.logprobs import response_inputs, response_slice
from runtime.run_dir import RunDir, publish_checkpoint, truncate_after
from runtime.tracking import check_report_to

#: How long a process waits in a collective for the others (the main process evaluates alone).
PROCESS_GROUP_TIMEOUT_HOURS = 2


# ---- accelerator ----------------------------------------------------------------------
def start_accelerator(config: PPOConfig, output_dir: Path, report_to: str) -> Any:
    """The run's accelerator, after the checks that need the process count (`check_batches`, which `plan`
    runs too): every process gets an equal share of the prompts and of every mini-batch."""
    if not config.model:
        raise UsageError("no model: pass --model PATH (a local model folder or a hub id)")
    accelerator = make_accelerator(config, check_report_to(report_to), output_dir)
    check_batches(config, accelerator.num_processes)
    check_sharding(config, accelerator)
    return accelerator


def init_trackers(accelerator: Any, config: PPOConfig, report_to: str) -> None:
    """Start the tracker (`report_to`) with the hyperparameters as scalars: trackers refuse nested values."""
    if report_to != "none":
        accelerator.init_trackers("runs", config={k: v for k, v in config.to_dict().items() if isinstance(v, int | float | str | bool)})


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
    # The passes per optimiser step depend on the process count (a process holds 1/world of each global
    # mini-batch), known once the process group is up: one pass here, the count set right below.
    accumulation = GradientAccumulationPlugin(num_steps=1, sync_with_dataloader=False)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[timeout],
        gradient_accumulation_plugin=accumulation,
        # None: whatever the launcher says (`--mixed_precision`); bfloat16 turns autocast on regardless.
        mixed_precision="bf16" if config.dtype == "bfloat16" else None,
        **trackers,
    )
    accelerator.gradient_accumulation_steps = accumulation_steps(config, accelerator.num_processes)
    return accelerator


def check_sharding(config: PPOConfig, accelerator: Any) -> None:
    """Warn when the launcher shards differently from `sharding` (what `plan` assumed for memory)."""
    actual = running_sharding(accelerator)
    if config.sharding != actual:
        warnings.warn(
            f"sharding is {config.sharding!r} but accelerate runs {actual}; `countdown-lab plan` assumed {config.sharding!r}"
            f" (launch with --config_file rl/configs/accelerate/{config.sharding}.yaml)",
            stacklevel=2,
        )


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

    from runtime.models import adapter_base, load_model, resolve_model_path

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
        cut = response_slice(query)
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
    world = accelerator.num_processes
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_size(config, world)
    plugin.deepspeed_config["gradient_accumulation_steps"] = accumulation_steps(config, world)
    plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm


def unwrap(model: Any) -> Any:
    """The model inside DDP (what `generate` needs), as `accelerator.unwrap_model` gives it."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def running_sharding(accelerator: Any) -> str:
    """The sharding the launcher runs (`ddp`, `zero2`, `zero3`, `fsdp`), read from the accelerator."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return "zero3" if accelerator.state.deepspeed_plugin.zero_stage == 3 else "zero2"
    return "fsdp" if kind == DistributedType.FSDP else "ddp"


def gathered_parameters(inner: PolicyCritic, sharding: str) -> list[torch.nn.Parameter]:
    """The parameters a rollout gathers under `sharding` (`rl.config.gathered_for_rollouts`: under ZeRO-3 the
    policy's only; the critic takes no part in `generate`)."""
    names = gathered_for_rollouts(sharding, inner.critic is not None)
    return [p for name in names for p in getattr(inner, name).parameters()]


@contextmanager
def gathered_for_generation(module: Any, accelerator: Any) -> Iterator[PolicyCritic]:
    """The unwrapped `PolicyCritic` with the policy's full parameters, for `generate` (which calls the policy
    directly, outside the wrapper's forward). Every process must enter it together: gathering is a
    collective. DDP and ZeRO-2 hold full weights already. ZeRO-3 gathers the policy once and takes
    DeepSpeed's per-module fetch hooks off for the duration, as TRL's `unwrap_model_for_generation` does
    (`remove_hooks`/`add_hooks`: TRL measured generation 10x faster than with the hooks re-gathering every
    layer at every token); TRL's function itself gathers its whole engine, here policy and critic, so its
    parts are used on the policy alone. FSDP gathers the module (`summon_full_params`, or `unshard` for
    FSDP2 modules). Inside, the model runs under the run's autocast."""
    from accelerate.utils import DistributedType

    inner = unwrap(module)
    with accelerator.autocast():
        if accelerator.distributed_type == DistributedType.DEEPSPEED and running_sharding(accelerator) == "zero3":
            import deepspeed
            from trl.models.utils import add_hooks, remove_hooks

            with deepspeed.zero.GatheredParameters(gathered_parameters(inner, "zero3"), modifier_rank=None):
                remove_hooks(module)
                try:
                    yield inner
                finally:
                    add_hooks(module)
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
        info = {**config.to_dict(), "num_processes": accelerator.num_processes, "resumed_from": start}  # RUN_RECORD_FIELDS
        write_text_atomic(run.config, json.dumps(info, indent=2))
    accelerator.wait_for_everyone()
    return start


# ---- checkpoints ---------------------------------------------------------------------
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
    from runtime.models import quiet_model_io

    with quiet_model_io():  # accelerate's tied-weights note and the shard bar, at every checkpoint
        accelerator.save_state(str(tmp))
        state = accelerator.get_state_dict(module)
        if accelerator.is_main_process:
            policy_state = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
            unwrap(module).policy.save_pretrained(tmp / "policy", state_dict=policy_state)
            tokenizer.save_pretrained(tmp / "policy")
    if accelerator.is_main_process:
        write_text_atomic(tmp / "state.json", json.dumps({"step": step}))
        publish_checkpoint(tmp, run.checkpoint(step), keep)
    accelerator.wait_for_everyone()
    return run.checkpoint(step)
