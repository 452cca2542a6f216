"""`PPOConfig`: every knob of a PPO run, typed, documented and validated; YAML presets over it.

The CLI and notebooks build it the same way: `load_config(path_or_preset, overrides)`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from countdown_env import PRESETS, PROMPT_STYLES, Rules, preset_rules
from runtime import config as config_helper
from runtime.prompt import Prompt, adopt_old_name

CONFIG_DIR = Path(__file__).parent / "configs"
#: RL presets are `ppo-<name>.yaml`; an old name without the prefix still resolves, with a note.
SHELF = config_helper.Shelf((CONFIG_DIR,), prefix="ppo")
DEFAULT_PRESET = "ppo-tiny-cpu"
TRUNCATION_MODES = ("mask", "zero", "keep")
KL_ESTIMATORS = ("k1", "k3")
#: `gae`: a learned critic and GAE (PPO). `group` (veRL's `grpo`, accepted as an alias): no
#: critic; each completion's score minus the mean of its prompt's `rollouts_per_prompt` completions.
ADVANTAGE_ESTIMATORS = ("gae", "group", "grpo")
DTYPES = ("float32", "bfloat16")
#: How `accelerate launch` spreads the trained models over the GPUs: `ddp` replicates them; `zero2`
#: shards gradients and optimiser states (DeepSpeed); `zero3` and `fsdp` shard the weights too.
#: Each is an accelerate config file, `rl/configs/accelerate/<sharding>.yaml`.
SHARDINGS = ("ddp", "zero2", "zero3", "fsdp")


@dataclass(frozen=True)
class PPOConfig:
    """A PPO run on Countdown (defaults: the `tiny-cpu` preset's spirit, small and safe)."""

    # ---- data ---------------------------------------------------------------------
    seed: int = 0
    """Seeds everything: prompt order, sampling, mini-batch shuffles, generated tasks."""
    task_preset: str = "tiny"
    """countdown_env task preset: generated RL and eval tasks, and the rules every prompt states and the reward
    enforces (e.g. `classic`: numbers at most once), also for RL tasks given by --tasks."""
    num_train_tasks: int = 4000
    """RL prompts generated from the preset's train split (disjoint from the eval tasks)."""
    num_eval_tasks: int = 200
    """Held-out tasks (the preset's test split) for the periodic greedy evaluation."""
    prompt_style: str = "compact"
    """Prompt template: `compact` for tiny character-level models, `tinyzero` (or `chat`) for real LMs."""
    # ---- reward -------------------------------------------------------------------
    strict_ending: bool = True
    """Reward 0 unless the completion ends at its final </answer> (stops babbling after the answer)."""
    format_reward: float = 0.1
    """Reward for a well-formed but wrong answer."""
    truncated: str = "zero"
    """Completions that hit max_new_tokens without EOS: `zero` (reward 0, as TinyZero and veRL score them: running
    out of tokens is paid like a wrong answer), `mask` (left out of the update, so never penalised), or `keep`
    (scored like any other)."""
    max_attempts: int = 1
    """Turns per episode in the Gymnasium env: 1 = single-turn; >1 = multi-turn with feedback,
    each turn one PPO sample rewarded by its own step."""
    # ---- rollouts -----------------------------------------------------------------
    prompts_per_step: int = 16
    """Prompts per PPO step (over all processes)."""
    rollouts_per_prompt: int = 4
    """Completions sampled per prompt."""
    max_new_tokens: int = 64
    """Most tokens generated per completion (rollouts and evaluation)."""
    temperature: float = 1.0
    """Sampling temperature for rollouts."""
    generation_batch_size: int = 0
    """Completions generated per `generate` call (0 = all of a step's at once)."""
    logprobs_from_generation: bool | None = None
    """Take the rollout policy's log-probs from generate's logits instead of a second forward
    pass (faster, but keeps batch x length x vocab floats). None (default): only while those
    logits stay under `KEPT_LOGITS_LIMIT` (a 1M-parameter model yes; SmolLM2's 49k vocabulary
    at 16 x 256 tokens, 0.8 GB per copy, no: it took a 135M PPO run to 16 GB)."""
    # ---- optimisation -------------------------------------------------------------
    total_steps: int = 100
    """PPO steps (each: rollouts, then `ppo_epochs` passes over them)."""
    actor_lr: float = 3e-5
    """Policy learning rate (AdamW)."""
    critic_lr: float = 1e-4
    """Critic learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay for both models."""
    ppo_epochs: int = 1
    """Passes over each step's rollouts."""
    mini_batch_size: int = 32
    """Completions per optimiser step over ALL processes (veRL's `ppo_mini_batch_size` x `rollout.n`): a step's
    prompts_per_step x rollouts_per_prompt completions make batch / mini_batch_size optimiser steps on any number of
    processes, each process holding an equal share of every mini-batch."""
    micro_batch_size: int = 0
    """Completions per forward/backward pass on one process, the memory knob: a process's share of a mini-batch
    goes through in passes of at most this many, accumulated into one optimiser step (0 = the whole share, no
    accumulation). Passes hold completions of similar length, each cut to its own longest: the same gradient.
    Also the chunk of the no-grad log-prob and value passes."""
    dtype: str = "float32"
    """`float32`, or `bfloat16`: bf16 autocast for the trained models (fp32 master weights and AdamW states) and a
    bf16 frozen reference. Halves activations and the reference; the trained models' states stay 16 bytes/parameter."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass (keeps only layer inputs: ~1/3 more compute, far less memory)."""
    sharding: str = "ddp"
    """How the GPUs share the trained models (`ddp`, `zero2`, `zero3`, `fsdp`): the accelerate config
    `rl/configs/accelerate/<sharding>.yaml` that `experiment` launches with and `countdown-lab plan` assumes."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    kl_coef: float = 0.001
    """Coefficient of the per-token KL penalty to the reference, folded into the reward."""
    kl_estimator: str = "k1"
    """`k1` (log ratio, TRL/veRL default) or `k3` (non-negative)."""
    gamma: float = 1.0
    """Discount over tokens."""
    lam: float = 1.0
    """GAE lambda."""
    cliprange: float = 0.2
    """Policy ratio clip."""
    cliprange_value: float = 0.2
    """Value clip around the rollout-time value."""
    entropy_coef: float = 0.0
    """Entropy bonus weight."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean, unit variance over the step's tokens (`gae` only)."""
    advantage_estimator: str = "gae"
    """`gae`: critic + GAE, the KL penalty folded into the reward (PPO). `group` (alias `grpo`):
    no critic; advantage = score - mean score of the same prompt's completions this step, on
    every token; the KL to the reference is a loss term (kl_coef x k3), skipped at kl_coef 0."""
    group_normalize_std: bool = True
    """`group` only: divide by the group's score std (GRPO); false = Dr. GRPO / REINFORCE with a group baseline."""
    # ---- logging and checkpoints --------------------------------------------------
    eval_every: int = 25
    """Greedy evaluation on the held-out tasks every this many steps (and at the end); 0 = never."""
    eval_samples: int = 0
    """0: each evaluation logs its greedy completions to eval_completions.jsonl. N > 0: as the study measured, each
    evaluation also samples one completion per held-out task at temperature 1 (`eval/sample_accuracy`) and logs N
    of those (the first N tasks) instead, for behaviour counts of held-out completions."""
    eval_log_greedy: bool = False
    """With eval_samples > 0, log the greedy completions too (rows carry `mode`): accuracy per task of both
    decodings, e.g. per split of an experiment's held-out tasks."""
    save_every: int = 10
    """Checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept on disk."""
    log_rollouts: int = 16
    """Completions per step written to rollouts.jsonl (for behaviour analysis)."""
    model: str = ""
    """Model path or hub id (usually given by --model, which overrides this)."""
    lora_r: int = 0
    """LoRA rank of the trained policy (and critic) adapters; 0 trains every weight."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    # ---- deprecated names ---------------------------------------------------------
    max_response_length: int | None = None
    """Deprecated: the old name of max_new_tokens, still read from presets and run directories written before."""

    def __post_init__(self) -> None:
        adopt_old_name(self, "max_response_length")
        positive = (
            "num_train_tasks",
            "prompts_per_step",
            "rollouts_per_prompt",
            "max_new_tokens",
            "total_steps",
            "ppo_epochs",
            "mini_batch_size",
            "save_every",
            "keep_checkpoints",
            "max_attempts",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_eval_tasks", "eval_every", "eval_samples", "log_rollouts", "generation_batch_size", "lora_r"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("actor_lr", "critic_lr", "temperature", "max_grad_norm", "cliprange", "cliprange_value"):
            if not 0 < getattr(self, name) < math.inf:  # nan and inf fail too: they would train on garbage
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in ("kl_coef", "entropy_coef", "weight_decay"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"gamma and lam must be in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        if self.lora_alpha < 1:
            raise ValueError(f"lora_alpha must be >= 1, got {self.lora_alpha}")
        if self.task_preset not in PRESETS:
            raise ValueError(f"task_preset must be one of {sorted(PRESETS)}, got {self.task_preset!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {sorted(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if self.truncated not in TRUNCATION_MODES:
            raise ValueError(f"truncated must be one of {TRUNCATION_MODES}, got {self.truncated!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {self.advantage_estimator!r}")
        if not self.uses_critic and self.max_attempts != 1:
            raise ValueError("advantage_estimator 'group' is single-turn (a group is one prompt's completions); set max_attempts=1")
        if not self.uses_critic and self.rollouts_per_prompt < 2:
            raise ValueError("advantage_estimator 'group' needs rollouts_per_prompt >= 2 (a group of one has advantage 0)")
        if self.micro_batch_size < 0:
            raise ValueError(f"micro_batch_size must be >= 0 (0 = mini_batch_size), got {self.micro_batch_size}")
        if self.micro_batch_size and self.micro_batch_size < self.mini_batch_size and self.mini_batch_size % self.micro_batch_size:
            raise ValueError(
                f"mini_batch_size {self.mini_batch_size} must be a multiple of micro_batch_size {self.micro_batch_size}"
                " (one optimiser step accumulates mini/micro forward-backward passes)"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.sharding not in SHARDINGS:
            raise ValueError(f"sharding must be one of {SHARDINGS}, got {self.sharding!r}")
        self.rules  # noqa: B018 - validates format_reward through Rules

    @property
    def rules(self) -> Rules:
        """The run's rules: the task preset's, plus this run's strict ending and format reward."""
        return preset_rules(self.task_preset, strict_ending=self.strict_ending, format_reward=self.format_reward)

    @property
    def prompt(self) -> Prompt:
        """The rollouts' prompt: this run's rules in its prompt style."""
        return Prompt(self.rules, self.prompt_style)

    @property
    def eval_prompt(self) -> Prompt:
        """The held-out evaluation's prompt: the run's, scored under the tolerant rules (text after the final
        `</answer>` allowed), so PPO and TRL runs report comparable accuracies whatever their `strict_ending`."""
        return self.prompt.with_rules(strict_ending=False)

    @property
    def uses_critic(self) -> bool:
        """True for `gae` (critic + GAE); False for the critic-free group baseline (`group`/`grpo`)."""
        return self.advantage_estimator == "gae"

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps per PPO epoch over a step's rollouts: the same on any number of processes."""
        return max(1, math.ceil(self.batch_size / self.mini_batch_size))

    @property
    def batch_size(self) -> int:
        """Completions per step over all processes."""
        return self.prompts_per_step * self.rollouts_per_prompt

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> PPOConfig:
        return dataclasses.replace(self, **changes)


def field_docs() -> dict[str, str]:
    """Each PPOConfig field's docstring (the string under it), for `--help`."""
    return config_helper.field_docs(PPOConfig)


def help_text(source: str | Path | None = DEFAULT_PRESET) -> str:
    """`--set` fields with their values in `source` (a preset name or YAML file; None: the dataclass defaults) and docs."""
    return config_helper.preset_epilog(PPOConfig, source, SHELF, what="ppo")


def preset_path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.yaml"


def presets() -> list[str]:
    return config_helper.preset_names(CONFIG_DIR)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["key=value", ...]` -> dict, each value parsed as YAML (`3e-5`, `true`, `[1, 2]`)."""
    return config_helper.parse_set(items)


#: What a run's `config.json` records beside the config (`rl.setup`): not settings, so a run's config.json loads as a config.
RUN_RECORD_FIELDS = ("num_processes", "resumed_from")


def run_settings(path: str | Path) -> dict[str, Any] | None:
    """The settings a run's `config.json` records (its run record dropped), or None if `path` is not one. One reader
    for `--config <run>/config.json` and for `--resume`."""
    if Path(path).name != "config.json" or not Path(path).is_file():
        return None
    try:
        recorded = json.loads(Path(path).read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); give a YAML preset or a run's intact config.json") from None
    if not isinstance(recorded, dict) or not any(k in recorded for k in RUN_RECORD_FIELDS):
        return None
    return {k: v for k, v in recorded.items() if k not in RUN_RECORD_FIELDS}


def load_config(source: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PPOConfig:
    """A config from a YAML file or preset name (`ppo-tiny-cpu`, `ppo-paper-3b`), or a run's own `config.json`, then
    `overrides`, each value typed by its field."""
    if source is not None and (settings := run_settings(source)) is not None:
        return config_helper.load_dataclass(PPOConfig, None, {**settings, **(overrides or {})}, SHELF, what="ppo")
    return config_helper.load_dataclass(PPOConfig, source, overrides, SHELF, what="ppo")


def per_process_samples(config: PPOConfig, world: int) -> int:
    """Completions each process trains on per step (single-turn; multi-turn episodes make more)."""
    return config.prompts_per_step // world * config.rollouts_per_prompt


def local_minibatch(config: PPOConfig, world: int) -> int:
    """Completions of one mini-batch on one process (single-turn): the process's share of the global mini-batch."""
    return max(1, per_process_samples(config, world) // config.optimizer_steps)


def micro_size(config: PPOConfig, world: int) -> int:
    """Completions per forward/backward pass on one process: micro_batch_size (at most: a smaller mini-batch is
    one pass), or the whole local mini-batch."""
    return min(config.micro_batch_size or local_minibatch(config, world), local_minibatch(config, world))


def accumulation_steps(config: PPOConfig, world: int) -> int:
    """Forward/backward passes per optimiser step on each process."""
    return max(1, math.ceil(local_minibatch(config, world) / micro_size(config, world)))


def check_batches(config: PPOConfig, world: int) -> None:
    """What the runner needs of the batch sizes on `world` processes, checked alike by `ppo` and `plan`: an equal
    share of the prompts per process, and of every mini-batch (so every process makes as many passes: DDP
    all-reduces, ZeRO-3 and FSDP gather in each)."""
    from countdown_env.errors import UsageError

    if world < 1:
        raise UsageError(f"the number of processes must be >= 1, got {world}")
    if config.prompts_per_step % world:
        raise UsageError(f"prompts_per_step {config.prompts_per_step} must be divisible by the number of processes {world}")
    steps, samples = config.optimizer_steps, per_process_samples(config, world)
    if samples % steps:
        raise UsageError(
            f"{config.batch_size} completions per step make {steps} mini-batches of {config.mini_batch_size}: each of the"
            f" {world} processes' {samples} completions must split into {steps} equal shares; change mini_batch_size"
        )


def generation_batch(config: PPOConfig, world: int) -> int:
    """Completions per `generate` call on one process (what training samples and `plan` counts)."""
    per_process = per_process_samples(config, world)
    return min(config.generation_batch_size or per_process, per_process)


def gathered_for_rollouts(sharding: str, uses_critic: bool) -> tuple[str, ...]:
    """The trained models whose full weights every process gathers to generate (`rl.setup.gathered_for_generation`
    does it, `rl.plan` counts it): under ZeRO-3 the policy only, as TRL's `unwrap_model_for_generation` does for its
    model (the critic takes no part in `generate`); under FSDP the whole prepared module, policy and critic (one
    FSDP root holds both models' unwrapped parameters); none with DDP or ZeRO-2, which keep weights whole."""
    if sharding == "zero3":
        return ("policy",)
    if sharding == "fsdp":
        return ("policy", "critic") if uses_critic else ("policy",)
    return ()


KEPT_LOGITS_LIMIT = 256 * 2**20
"""Bytes of generate's logits (one batch, fp32) that `logprobs_from_generation=None` keeps at most."""


def keeps_generation_logits(config: PPOConfig, vocab_size: int, batch: int) -> bool:
    """Whether rollouts take their log-probs from generate's logits (`logprobs_from_generation`;
    None decides by the bytes held: `batch` completions x `max_new_tokens` x `vocab_size` fp32)."""
    if config.logprobs_from_generation is not None:
        return config.logprobs_from_generation
    return batch * config.max_new_tokens * vocab_size * 4 <= KEPT_LOGITS_LIMIT
