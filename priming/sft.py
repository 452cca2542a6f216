"""Supervised fine-tuning on reasoning traces ("priming") through TRL's `SFTTrainer`.

`SFTRunConfig` is the whole job in one typed, validated object (the CLI and notebooks
build the same one); `to_trl()` maps it onto `trl.SFTConfig`, and `run_sft` runs it.
TRL does the work: prompt/completion tokenisation, EOS appended to every completion so
the model learns to stop, completion-only loss, checkpoints and resuming. What this
module adds is the study's recipe, a CPU preset, CPU-safe defaults and the run directory:

    OUTPUT_DIR/config.json          the resolved configuration
    OUTPUT_DIR/metrics.jsonl        one row per logged step: step, train/..., eval/...
    OUTPUT_DIR/checkpoints/         checkpoint-N folders; `resume=True` picks the last one
    OUTPUT_DIR/model/               the final model + tokenizer (with LoRA: the adapter), loadable by path

The model lives in `model/` because a run directory's `config.json` is the run's
configuration, not the model's; `runtime.models.load_model` accepts the run directory too.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from countdown_env.errors import UsageError
from countdown_env.files import append_jsonl, read_jsonl, write_jsonl_atomic, write_text_atomic
from countdown_env.rules import PROMPT_STYLES
from countdown_env.tasks import PRESETS as TASK_PRESETS
from countdown_env.tasks import Task
from runtime.config import Shelf, load_dataclass, preset_names, read_mapping, resolve_source
from runtime.prompt import Prompt, adopt_old_name
from runtime.run_dir import truncate_after
from runtime.tracking import REPORT_TO, check_report_to

#: Learning-rate schedules offered (names of transformers' `SchedulerType`).
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")

#: `trl.SFTConfig` fields that `SFTRunConfig.trl_kwargs` sets, so `extra` must not (a test keeps this in step).
TRL_FIELDS_SET = frozenset(
    {
        "output_dir", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay",
        "adam_beta1", "adam_beta2",
        "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "completion_only_loss", "seed", "data_seed",
        "logging_steps", "logging_first_step", "save_strategy", "save_steps", "save_total_limit", "bf16", "gradient_checkpointing",
        "activation_checkpointing", "dataloader_pin_memory", "report_to", "use_cpu", "ddp_find_unused_parameters", "disable_tqdm",
        "dataset_num_proc", "eval_strategy", "eval_steps", "per_device_eval_batch_size", "train_sampling_strategy",
    }
)  # fmt: skip

#: Named recipes, one YAML file each (`priming/configs/<name>.yaml`); a preset's values are defaults that explicit options override.
PRESET_DIR = Path(__file__).parent / "configs"
DEFAULT_PRESET = "sft-paper-3b"
#: Each preset's values, read from PRESET_DIR (the files are the one home of SFT presets).
PRESETS: dict[str, dict[str, Any]] = {name: read_mapping(PRESET_DIR / f"{name}.yaml") for name in preset_names(PRESET_DIR)}
#: SFT presets are `sft-<name>.yaml`; an old name without the prefix still resolves, with a note.
SHELF = Shelf((PRESET_DIR,), prefix="sft")


@dataclass(frozen=True)
class SFTRunConfig:
    """One SFT job. Defaults are the study's recipe for 3B models (`PRESETS["sft-paper-3b"]`) except AdamW's betas
    (transformers' (0.9, 0.999); the study's 0.95 is set by the preset) and the batch (32 here, the preset's 64)."""

    model: str
    """Model to fine-tune: a local path (e.g. from `countdown-lab init-model`, or a run directory) or a hub id."""
    data: str
    """Training data: what `countdown-lab prime` wrote, a JSONL or parquet file, or a folder with train.jsonl/train.parquet
    (see `priming.sft_data`)."""
    output_dir: str
    """Run directory: config.json, metrics.jsonl, checkpoints/, model/."""
    prompt_field: str | None = None
    """Column of the data to read as the prompt (None: `prompt`, else `query`, else chat `messages` or trace rows)."""
    completion_field: str | None = None
    """Column of the data to read as the completion (None: `completion`)."""
    epochs: float = 5.0
    """Passes over the training split."""
    max_steps: int | None = None
    """Stop after this many optimiser steps (overrides `epochs`)."""
    learning_rate: float = 1e-5
    """Peak learning rate of AdamW."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warm-up (one of `SCHEDULERS`)."""
    warmup_ratio: float = 0.1
    """Share of all steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW's first-moment decay (the study: 0.9)."""
    adam_beta2: float = 0.999
    """AdamW's second-moment decay (transformers' default; the study's veRL SFT trainer: 0.95)."""
    batch_size: int = 4
    """Sequences per device per forward pass."""
    gradient_accumulation_steps: int = 8
    """Forward passes per optimiser step (the effective batch is batch_size x this x devices)."""
    length_balanced: bool = False
    """Each optimiser step's rows (drawn at random, as without it) sorted by length and cut into
    `gradient_accumulation_steps` micro-batches of near-equal padded cost, whose sizes vary (transformers'
    `BatchRebalanceSampler`, seeded by `seed`): the same rows and gradient per step, far less padding when lengths
    vary. The loss is summed over every token of the step and divided by their count, so the split does not
    change the gradient."""
    max_length: int | None = 1024
    """Longest prompt + completion in tokens; longer sequences are truncated (None: never)."""
    prompt_style: str = "tinyzero"
    """Prompt template for trace rows without a prompt (`countdown_env.rules.PROMPT_STYLES`)."""
    task_preset: str = "tinyzero"
    """Task preset whose rules the prompts of trace rows state and the held-out completions are scored under."""
    max_train_samples: int | None = None
    """Use only the first N training rows (None: all)."""
    seed: int = 0
    """Seed of initialisation (LoRA), data order and dropout."""
    logging_steps: int = 10
    """Optimiser steps between rows of metrics.jsonl."""
    save_steps: int = 500
    """Optimiser steps between checkpoints."""
    save_total_limit: int | None = 2
    """Checkpoints kept (older ones are deleted; None: keep all)."""
    eval_steps: int | None = None
    """Steps between evaluations on the `test` split (loss, and accuracy when rows carry tasks); None: only at the end."""
    eval_samples: int = 200
    """Held-out tasks whose greedy completions are scored for eval/accuracy (0: no generation)."""
    max_new_tokens: int = 512
    """Most tokens generated per held-out task (the accuracy evaluation)."""
    lora_r: int = 0
    """LoRA rank; 0 fine-tunes every weight."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    merge_lora: bool = False
    """With LoRA: save model/ as the merged model (False: as the adapter, which eval/ppo/sft load onto its base)."""
    bf16: bool | None = None
    """bf16 mixed precision; None: on only where a CUDA GPU supports it (TRL would turn it on everywhere)."""
    gradient_checkpointing: bool | None = None
    """Recompute activations to save memory; None: on only on a GPU (TRL turns it on everywhere, which only slows a CPU)."""
    report_to: str = "none"
    """Also log to a tracker: none, tensorboard, wandb or trackio (TRL's `report_to`; metrics.jsonl is always written)."""
    preset: str | None = None
    """Name of the preset these values came from (recorded in config.json)."""
    eval_max_new_tokens: int | None = None
    """Deprecated: the old name of max_new_tokens, still read from presets and run directories written before."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further `trl.SFTConfig` fields passed through unchanged (e.g. {"packing": True})."""

    def __post_init__(self) -> None:
        adopt_old_name(self, "eval_max_new_tokens")
        for name in ("model", "data", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None to train for `epochs`), got {self.max_steps}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {SCHEDULERS}, got {self.lr_scheduler!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_train_samples", "save_total_limit", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens or None, got {self.max_length}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {sorted(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if self.task_preset not in TASK_PRESETS:
            raise ValueError(f"task_preset must be one of {sorted(TASK_PRESETS)}, got {self.task_preset!r}")
        if self.eval_samples < 0:
            raise ValueError(f"eval_samples must be >= 0, got {self.eval_samples}")
        if self.lora_r < 0 or self.lora_alpha < 1:
            raise ValueError(f"lora_r must be >= 0 (0: no LoRA) and lora_alpha >= 1, got {self.lora_r}, {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown SFT preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        ours = {f.name for f in fields(self)}
        clash = sorted(set(self.extra) & (ours | TRL_FIELDS_SET))
        if clash:
            raise ValueError(f"extra must not set {clash}: `to_trl()` sets them (use the config fields of the same meaning)")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SFTRunConfig:
        """A preset's values, with `overrides` (None values are ignored, so CLI defaults pass through)."""
        return load_sft_config(name, {k: v for k, v in overrides.items() if v is not None})

    @property
    def prompt(self) -> Prompt:
        """The task preset's rules in this run's prompt style: how trace rows are prompted and held-out completions scored."""
        return Prompt.of_preset(self.task_preset, self.prompt_style)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def resolved_precision(self) -> dict[str, bool]:
        """bf16 and gradient checkpointing after resolving None for this machine."""
        gpu = _cuda_available()
        bf16 = self.bf16 if self.bf16 is not None else gpu and _cuda_bf16()
        checkpointing = self.gradient_checkpointing if self.gradient_checkpointing is not None else gpu
        return {"bf16": bool(bf16), "gradient_checkpointing": bool(checkpointing)}

    def to_trl(self, *, evaluate: bool = False, progress: bool = True) -> Any:
        """The `trl.SFTConfig` this job trains with (checkpoints go to `checkpoint_dir`)."""
        from trl import SFTConfig

        args = self.trl_kwargs(SFTConfig, evaluate=evaluate, progress=progress)
        # Checked again here, from the arguments themselves, in case TRL_FIELDS_SET falls behind them.
        clash = sorted(set(self.extra) & set(args))
        if clash:
            raise ValueError(f"extra must not set {clash}: `to_trl()` sets them (use the config fields of the same meaning)")
        return SFTConfig(**args, **self.extra)

    def trl_kwargs(self, config_cls: type, *, evaluate: bool = False, progress: bool = True) -> dict[str, Any]:
        """The `trl.SFTConfig` arguments this config sets itself (`extra` not included)."""
        precision = self.resolved_precision()
        eval_args: dict[str, Any] = {"eval_strategy": "no"}
        if evaluate and self.eval_steps is not None:
            eval_args = {"eval_strategy": "steps", "eval_steps": self.eval_steps, "per_device_eval_batch_size": self.batch_size}
        return dict(
            output_dir=str(self.checkpoint_dir),
            num_train_epochs=self.epochs,
            max_steps=self.max_steps if self.max_steps is not None else -1,
            learning_rate=self.learning_rate,
            lr_scheduler_type=self.lr_scheduler,
            # transformers 5 reads a float < 1 as a share of all steps (warmup_ratio is gone).
            warmup_steps=self.warmup_ratio,
            weight_decay=self.weight_decay,
            adam_beta1=self.adam_beta1,
            adam_beta2=self.adam_beta2,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            train_sampling_strategy="batch_rebalance" if self.length_balanced else "random",
            max_length=self.max_length,
            # Loss on the completion only: the prompt is given, not something to learn.
            completion_only_loss=True,
            seed=self.seed,
            data_seed=self.seed,
            logging_steps=self.logging_steps,
            logging_first_step=True,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            bf16=precision["bf16"],
            **_checkpointing_args(config_cls, precision["gradient_checkpointing"]),
            dataloader_pin_memory=_cuda_available(),
            report_to=self.report_to,
            # Without a GPU, say so: transformers then runs one DDP process per `torchrun` /
            # `accelerate launch` worker on CPU (gloo) instead of a single process.
            use_cpu=not _cuda_available(),
            ddp_find_unused_parameters=False,
            disable_tqdm=not progress,
            # Tokenising a few thousand short rows in worker processes costs more than it saves.
            dataset_num_proc=None,
            **eval_args,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_sft_config(source: str | Path = DEFAULT_PRESET, overrides: dict[str, Any] | None = None) -> SFTRunConfig:
    """A preset name (`priming/configs/<name>.yaml`) or a YAML path, then `overrides`, each value typed by its field.

    `preset` records the preset's name (a file's values are recorded in config.json instead)."""
    path = resolve_source(source, SHELF, what="SFT")
    preset = {"preset": path.stem} if path.parent == PRESET_DIR and not Path(source).is_file() else {}
    return load_dataclass(SFTRunConfig, path, {**preset, **(overrides or {})}, None, what="SFT")


def _checkpointing_args(config_cls: type, enabled: bool) -> dict[str, bool]:
    """Activation checkpointing on or off, under the name this transformers version reads.

    TRL defaults `gradient_checkpointing` to True; transformers 5 renamed it
    `activation_checkpointing` and uses the old name only when the new one is unset.
    """
    names = {f.name for f in fields(config_cls)}
    args = {"gradient_checkpointing": enabled}
    if "activation_checkpointing" in names:
        args["activation_checkpointing"] = enabled
    return args


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class SFTResult:
    """What a finished SFT run produced."""

    run_dir: Path
    model_dir: Path
    global_step: int
    train_loss: float
    """Mean training loss over the steps run in this call."""
    seconds: float
    """Wall-clock time of this call's training loop."""
    n_train: int
    resumed_from: str | None
    final_eval: dict[str, float]
    """The last evaluation (eval/loss, eval/accuracy, eval/format_rate), empty if there was no test split."""


# ---- metrics.jsonl -----------------------------------------------------------------


def namespaced(logs: dict[str, float]) -> dict[str, float]:
    """Trainer log keys as the run-directory contract names them: `train/...`, `eval/...`."""
    out = {}
    for key, value in logs.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key == "train_loss":  # the run's mean loss, not a step's
            out["train/mean_loss"] = float(value)
        elif key.startswith("eval_"):
            out["eval/" + key.removeprefix("eval_")] = float(value)
        elif key.startswith("train_"):
            out["train/" + key.removeprefix("train_")] = float(value)
        elif "/" in key:
            out[key] = float(value)
        else:
            out["train/" + key] = float(value)
    return out


class MetricsRows:
    """metrics.jsonl, one row per step: everything logged at a step goes into its row.

    Every value is on disk when `add` returns: a new step's row is appended, and what comes later for
    the same step (its evaluation) rewrites that last row (atomically). So a row is complete on disk
    before the checkpoint of its step is saved and before the next step starts: a kill loses no
    logged row, and a resume from that checkpoint keeps it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last: dict[str, Any] | None = None

    def add(self, step: int, values: dict[str, float]) -> None:
        if self.last is not None and self.last["step"] == step:
            self.last.update(values)
            rows = read_jsonl(self.path)
            if rows and rows[-1].get("step") == step:
                write_jsonl_atomic(self.path, [*rows[:-1], self.last])
                return
        self.last = {"step": step, **values}
        append_jsonl(self.path, [self.last])

    def flush(self) -> None:
        """Nothing to do: rows are written as they come (kept for the callbacks that call it)."""


@dataclass
class HeldOut:
    """The held-out tasks whose greedy completions are scored after every evaluation, with their prompts."""

    tasks: list[Task]
    prompts: list[str]
    """The test split's `prompt` column (as trained: the dataset's, not re-rendered)."""


def _make_callbacks(config: SFTRunConfig, tokenizer: Any, *, evaluate: bool, held_out: HeldOut | None) -> list[Any]:
    """[metrics logger, final and accuracy evaluation]: the run-directory callbacks, built here so that
    transformers is imported lazily."""
    from transformers import TrainerCallback

    class MetricsLogger(TrainerCallback):
        """Appends the trainer's logs to metrics.jsonl (`MetricsRows`)."""

        def __init__(self, rows: MetricsRows) -> None:
            self.rows = rows

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
            if state.is_world_process_zero and logs:
                self.rows.add(state.global_step, namespaced(logs))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.rows.flush()

    class FinalEval(TrainerCallback):
        """Evaluates at the last step too (inside the loop, so it shares that step's row), and
        after every evaluation scores greedy completions for held-out tasks."""

        def __init__(self, rows: MetricsRows) -> None:
            self.rows = rows
            self.last: dict[str, float] = {}

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if evaluate and state.global_step >= state.max_steps:
                control.should_evaluate = True

        def on_evaluate(
            self, args: Any, state: Any, control: Any, model: Any = None, metrics: dict[str, float] | None = None, **kwargs: Any
        ) -> None:
            self.last = namespaced({k: v for k, v in (metrics or {}).items() if k.startswith("eval_")})
            # FSDP / ZeRO-3: rank 0 alone cannot run the sharded model (each forward gathers from every rank).
            # Score the saved model instead: `countdown-lab eval --model OUTPUT_DIR`.
            if state.is_world_process_zero and model is not None and held_out is not None and not sharded_parameters(args):
                accuracy = evaluate_generation(model, tokenizer, held_out, config.prompt, max_new_tokens=config.max_new_tokens)
                self.last.update(accuracy)
                self.rows.add(state.global_step, accuracy)

    rows = MetricsRows(config.run_dir / "metrics.jsonl")
    return [MetricsLogger(rows), FinalEval(rows)]


def evaluate_generation(
    model: Any, tokenizer: Any, held_out: HeldOut, prompt: Prompt, *, max_new_tokens: int, batch_size: int = 32
) -> dict[str, float]:
    """eval/accuracy, eval/format_rate, eval/response_length (tokens) and eval/generation_seconds of greedy
    completions, scored under `prompt`'s rules: the names and units PPO's held-out evaluation reports
    (`rl.evaluate.evaluate_policy`)."""
    from runtime.sampling import sample_and_score

    start = time.perf_counter()
    scored = sample_and_score(model, tokenizer, held_out.tasks, prompt, prompts=held_out.prompts, max_new_tokens=max_new_tokens,
                              do_sample=False, batch_size=batch_size, seed=0, by_length=True)  # fmt: skip
    seconds = time.perf_counter() - start
    n = len(scored.samples)
    return {
        "eval/accuracy": sum(scored.correct) / n,
        "eval/format_rate": sum(s.well_formed for s in scored.scores) / n,
        # Tokens, as PPO counts them (the completion's own tokens, EOS not included).
        "eval/response_length": sum(len(tokenizer(c, add_special_tokens=False).input_ids) for c in scored.texts) / n,
        "eval/generation_seconds": seconds,
    }


# ---- the job -----------------------------------------------------------------------


def last_checkpoint(config: SFTRunConfig) -> str | None:
    """The newest checkpoint folder of a run, if any.

    This, not the existence of `checkpoints/`, is how a caller decides whether to resume:
    transformers creates that folder as soon as the trainer is built, before any checkpoint.
    """
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(config.checkpoint_dir)) if config.checkpoint_dir.is_dir() else None


@dataclass
class SFTJob:
    """A trainer ready to run, with what `run_sft` reports about it."""

    config: SFTRunConfig
    trainer: Any
    n_train: int
    n_test: int
    checkpoint: str | None
    """The checkpoint training resumes from, if any."""
    callbacks: list[Any]
    """[metrics logger, final and accuracy evaluation]."""


def build_job(config: SFTRunConfig, *, resume: bool = False, progress: bool = True) -> SFTJob:
    """Load the data, model and tokenizer and build the `SFTTrainer` (nothing is trained or written yet).

    `resume=True` continues from the last checkpoint, or starts afresh (saying so) when the
    run directory has none yet, e.g. a run killed before its first save. Without it, a run
    directory that already has checkpoints is refused rather than silently mixed with a new run.
    """
    from priming.sft_data import check_prompt_style, load_sft_data, tasks_of
    from runtime.hub import check_reachable
    from runtime.models import load_model, load_tokenizer

    checkpoint = last_checkpoint(config)
    if resume and checkpoint is None:
        # Like `rl`'s --resume: re-running an interrupted stage must work whether or not it got to its first save.
        print(f"sft: --resume: no checkpoint under {config.checkpoint_dir} yet; starting from scratch", file=sys.stderr)
    if not resume and checkpoint is not None:
        raise UsageError(
            f"{config.run_dir} already has checkpoints ({Path(checkpoint).name}); pass --resume or choose another --output-dir"
        )

    check_prompt_style(config.data, config.prompt_style)
    check_reachable(config.data)  # an offline hub id fails before the model loads
    tokenizer = load_tokenizer(config.model)
    data = load_sft_data(
        config.data,
        prompt_style=config.prompt_style,
        rules=config.prompt.rules,
        tokenizer=tokenizer,
        prompt_field=config.prompt_field,
        completion_field=config.completion_field,
    )
    train = data["train"]
    if config.max_train_samples is not None:
        train = train.select(range(min(config.max_train_samples, len(train))))
    test = data.get("test")
    eval_tasks = tasks_of(test) if test is not None and config.eval_samples else None
    held_out = None
    if eval_tasks:
        held_out = HeldOut(eval_tasks[: config.eval_samples], list(test["prompt"][: config.eval_samples]))

    model = load_model(config.model)
    peft_config = None
    if config.lora_r:
        from runtime.models import lora_config

        peft_config = lora_config(config.lora_r, config.lora_alpha, config.lora_dropout)
    callbacks = _make_callbacks(config, tokenizer, evaluate=test is not None, held_out=held_out)
    trainer = _trainer_class()(
        model=model,
        args=config.to_trl(evaluate=test is not None, progress=progress),
        train_dataset=train.select_columns(["prompt", "completion"]),
        eval_dataset=test.select_columns(["prompt", "completion"]) if test is not None else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    return SFTJob(config, trainer, len(train), len(test) if test is not None else 0, checkpoint if resume else None, callbacks)


def run_sft(config: SFTRunConfig, *, resume: bool = False, progress: bool = True) -> SFTResult:
    """Fine-tune `config.model` on `config.data` with TRL's SFTTrainer; see the module docstring for outputs.

    `resume=True` continues from the last checkpoint in the run directory (optimizer,
    schedule, data order and step count included), or starts from scratch if there is none yet;
    `resume=False` starts from scratch and refuses a run directory that has checkpoints.
    """
    check_report_to(config.report_to)
    job = build_job(config, resume=resume, progress=progress)
    trainer, accuracy = job.trainer, job.callbacks[1]
    if trainer.is_world_process_zero():
        open_run_dir(job)
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=job.checkpoint)
    seconds = time.perf_counter() - start
    final_eval = dict(accuracy.last)
    save_final_model(config, trainer)
    return SFTResult(
        run_dir=config.run_dir,
        model_dir=config.model_dir,
        global_step=trainer.state.global_step,
        train_loss=float(output.training_loss),
        seconds=seconds,
        n_train=job.n_train,
        resumed_from=job.checkpoint,
        final_eval=final_eval,
    )


def _trainer_class() -> type:
    """TRL's SFTTrainer, with the length-balanced sampler seeded by the run's seed: transformers builds
    `BatchRebalanceSampler` with its own default seed (42), and every random choice here flows from `seed`."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler
    from trl import SFTTrainer

    class SeededSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, BatchRebalanceSampler):
                sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return sampler

    return SeededSFTTrainer


def open_run_dir(job: SFTJob) -> None:
    """config.json with what was resolved, and metrics.jsonl trimmed to what the run resumes from (main process)."""
    config, trainer = job.config, job.trainer
    config.run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {
        **config.to_dict(),
        "resolved": {
            **config.resolved_precision(),
            "n_train": job.n_train,
            "n_test": job.n_test,
            "total_steps": _total_steps(config, job.n_train, trainer.args.world_size),
            "world_size": trainer.args.world_size,
            "resumed_from": job.checkpoint,
        },
    }
    write_text_atomic(config.run_dir / "config.json", json.dumps(resolved, indent=2) + "\n")
    metrics = config.run_dir / "metrics.jsonl"
    if job.checkpoint is not None:
        # Rows after the checkpoint will be written again by the resumed steps.
        truncate_after(metrics, int(Path(job.checkpoint).name.rsplit("-", 1)[-1]))
    else:
        # A fresh start: rows of an earlier attempt killed before its first checkpoint would
        # otherwise be followed by this run's rows for the same steps.
        metrics.unlink(missing_ok=True)


def save_final_model(config: SFTRunConfig, trainer: Any) -> None:
    """model/: the trained model and tokenizer (every process joins).

    With LoRA, model/ is the adapter (megabytes, not the base's gigabytes) naming its base; every loader
    (`runtime.models.load_model`) puts it onto the base. `merge_lora` saves the merged model instead. Every
    process calls the trainer's save path, which gathers the full weights under FSDP/ZeRO-3 and writes on the
    main process (a main-process-only save_pretrained or merge_and_unload would see shards, or hang)."""
    main_process = trainer.is_world_process_zero()
    if config.lora_r and config.merge_lora:
        adapter_dir = config.run_dir / "adapter"
        trainer.save_model(str(adapter_dir))
        trainer.accelerator.wait_for_everyone()
        if main_process:  # base + adapter loaded afresh on this process alone: no collective involved
            merge_adapter(config.model, adapter_dir, config.model_dir)
            trainer.processing_class.save_pretrained(str(config.model_dir))
    else:
        trainer.save_model(str(config.model_dir))  # the tokenizer too (the trainer's processing_class)
        trainer.accelerator.wait_for_everyone()
        if main_process and config.lora_r:
            point_adapter_at_base(config.model_dir, config.model)
    trainer.accelerator.wait_for_everyone()


def sharded_parameters(args: Any) -> bool:
    """Whether the trainer shards parameters across processes (FSDP, or DeepSpeed ZeRO-3), from its arguments
    or from `accelerate launch`'s environment."""
    import os

    if getattr(args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return True
    deepspeed = getattr(args, "hf_deepspeed_config", None)
    return bool(deepspeed is not None and deepspeed.is_zero3())


def merge_adapter(base: str, adapter_dir: Path, output_dir: Path) -> None:
    """Load `base` and the LoRA adapter saved in `adapter_dir`, merge, and save a plain model to `output_dir`."""
    from peft import PeftModel

    from runtime.models import load_model

    PeftModel.from_pretrained(load_model(base), str(adapter_dir)).merge_and_unload().save_pretrained(str(output_dir))


def point_adapter_at_base(adapter_dir: Path, base: str) -> None:
    """Record the base as the user named it: a hub id stays an id (not this machine's cache
    folder it resolved to), a local folder becomes an absolute path (valid from any directory)."""
    from runtime.models import ADAPTER_CONFIG, model_reference

    path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = model_reference(base)
    write_text_atomic(path, json.dumps(config, indent=2) + "\n")


def _total_steps(config: SFTRunConfig, n_train: int, world_size: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = math.ceil(math.ceil(n_train / (config.batch_size * world_size)) / config.gradient_accumulation_steps)
    return math.ceil(per_epoch * config.epochs)
