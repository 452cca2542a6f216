"""GRPO and RLOO through TRL's maintained trainers, with the same reward, config and run directory as PPO.

TRL (>= 1.13) keeps `GRPOTrainer` and `RLOOTrainer`: critic-free, group-relative
baselines, and vLLM generation on GPUs (`--set use_vllm=true` is not a PPOConfig field;
pass TRL options through `trl_overrides`). One of our "steps" is one generation round of
`prompts_per_step x rollouts_per_prompt` completions, as in PPO. The run directory gets the
rows PPO writes: TRL's logs under PPO's names, the held-out greedy evaluation (`eval/...`)
at step 0 and every `eval_every` steps, and the compute totals (`compute/...`, `time/elapsed_seconds`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from countdown_env import Rules, Task, score_response
from countdown_env.errors import UsageError
from countdown_env.files import append_jsonl, write_text_atomic
from rl.config import PPOConfig, accumulation_steps, check_batches, local_minibatch, micro_size
from rl.evaluate import evaluate_policy
from rl.setup import Totals
from rl.train import split_tasks
from runtime.run_dir import RunDir, truncate_after
from runtime.tracking import check_report_to

ALGOS = ("grpo", "rloo")


def completion_text(completion: Any) -> str:
    """A TRL completion as text: a string (standard format) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role") == "assistant")


class CountdownReward:
    """TRL reward function: `score_response` under `rules`, one float per completion.

    Accuracy and format rate go to TRL's `log_metric`, which averages them over every completion
    of every process. The first `keep` verdicts since the last log are kept (on every process, each
    draining its own) for the logging callback's rollouts.jsonl rows.

    `zero_truncated` (`truncated: zero`, the budget): a completion of that many tokens that does not end
    in one of `stop_ids` ran out of tokens and scores 0, as in our PPO (TRL has no such switch, only masking).
    """

    __name__ = "countdown"

    def __init__(self, rules: Rules, keep: int = 64, *, zero_truncated: int = 0, stop_ids: Sequence[int] = ()) -> None:
        self.rules = rules
        self.keep = keep
        self.zero_truncated = zero_truncated
        self.stop_ids = set(stop_ids)
        self.pending: list[dict[str, Any]] = []

    def ran_out(self, ids: Sequence[int] | None) -> bool:
        """Whether a completion's token ids hit the budget without a stop token."""
        return bool(self.zero_truncated and ids is not None and len(ids) >= self.zero_truncated and ids[-1] not in self.stop_ids)

    def __call__(
        self, prompts: list[Any], completions: list[Any], numbers: list[list[int]], target: list[int], **kwargs: Any
    ) -> list[float]:
        rewards = []
        log_metric = kwargs.get("log_metric")  # TRL >= 1.16: averaged over all processes at the next log
        ids = kwargs.get("completion_ids") or [None] * len(completions)
        for completion, nums, tgt, completion_ids in zip(completions, numbers, target, ids, strict=True):
            text = completion_text(completion)
            score = score_response(text, Task(tuple(nums), int(tgt)), self.rules)
            rewards.append(0.0 if self.ran_out(completion_ids) else score.reward)
            if log_metric is not None:  # one value per completion: the logged mean is over all completions
                log_metric("accuracy", float(score.correct))
                log_metric("format_rate", float(score.well_formed))
            if len(self.pending) < self.keep:
                row = {"text": text, "numbers": list(nums), "target": int(tgt), "reward": rewards[-1], "correct": score.correct}
                self.pending.append({**row, "outcome": score.outcome.value, "well_formed": score.well_formed})
        return rewards


def to_trl_dataset(tasks: Sequence[Task], config: PPOConfig, tokenizer: Any) -> Any:
    """A `datasets.Dataset` with `prompt` (text, or messages for the chat style), `numbers`, `target`."""
    import datasets

    from countdown_env import chat_messages

    if config.prompt_style == "chat":
        prompts: list[Any] = [chat_messages(t, config.rules) for t in tasks]
    else:
        prompts = [config.prompt.render(t, tokenizer) for t in tasks]
    return datasets.Dataset.from_dict({"prompt": prompts, "numbers": [list(t.numbers) for t in tasks], "target": [t.target for t in tasks]})


def optimizer_steps_per_round(args: Any) -> int:
    """Optimizer steps TRL takes per generation round: each round's completions feed
    `steps_per_generation` micro-batches, each seen `num_iterations` times, and the optimizer
    steps once per `gradient_accumulation_steps` micro-batches."""
    micro_steps = args.steps_per_generation * args.num_iterations
    if micro_steps % args.gradient_accumulation_steps:
        raise UsageError(
            f"gradient_accumulation_steps {args.gradient_accumulation_steps} must divide the {micro_steps} micro-steps of a generation round"
            " (steps_per_generation x ppo_epochs); change mini_batch_size or gradient_accumulation_steps"
        )
    return micro_steps // args.gradient_accumulation_steps


# TRL log keys -> the run directory's namespaced keys (both are kept: unmapped keys go under trl/).
KEY_MAP = {
    "reward": "reward/mean",
    "reward_std": "reward/std",
    "completions/mean_length": "response/length",
    "completions/clipped_ratio": "reward/truncated_rate",
    "kl": "objective/kl",
    "entropy": "policy/entropy",
    "loss": "losses/policy_loss",
    "clip_ratio/region_mean": "policy/clipfrac",
    "learning_rate": "lr/actor",
    "accuracy": "reward/accuracy",
    "format_rate": "reward/format_rate",
}


def check_config(algo: str, config: PPOConfig, world: int = 1) -> None:
    """What TRL's trainers cannot do with this config on `world` processes, as a clear error before anything loads."""
    if algo not in ALGOS:
        raise UsageError(f"algo must be one of {ALGOS} (or ppo), got {algo!r}")
    if not config.model:
        raise UsageError("no model: pass --model PATH (a local model folder or a hub id)")
    if config.max_attempts != 1:
        raise UsageError("--algo grpo/rloo is single-turn; set max_attempts=1 (multi-turn episodes are PPO-only)")
    if config.batch_size % config.mini_batch_size:
        raise UsageError(
            f"mini_batch_size {config.mini_batch_size} must divide prompts_per_step x rollouts_per_prompt = {config.batch_size}"
            f" for --algo {algo}"
        )
    check_batches(config, world)
    if local_minibatch(config, world) % micro_size(config, world):
        raise UsageError(
            f"micro_batch_size {config.micro_batch_size} must divide each process's {local_minibatch(config, world)} completions of a"
            f" mini-batch for --algo {algo} (TRL accumulates equal micro-batches)"
        )


def trl_classes(algo: str) -> tuple[Any, Any]:
    """(config class, trainer class) of TRL's `algo`."""
    if algo == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    from trl import RLOOConfig, RLOOTrainer

    return RLOOConfig, RLOOTrainer


def trl_config(
    algo: str,
    config: PPOConfig,
    trl_dir: Path,
    optimizer_steps_per_step: int,
    overrides: dict[str, Any] | None,
    report_to: str = "none",
    *,
    quiet: bool = False,
    world: int = 1,
) -> Any:
    """TRL's config for our `config` on `world` processes: one of our steps is `optimizer_steps_per_step` of TRL's.
    `overrides` (`--trl-set`) win over what we set, with a note on stderr (unless `quiet`)."""
    config_class, _ = trl_classes(algo)
    args = trl_kwargs(config, trl_dir, optimizer_steps_per_step, report_to, world)
    overrides = overrides or {}
    for key in sorted(set(overrides) & set(args)):
        if not quiet and overrides[key] != args[key]:
            print(f"note: --trl-set {key}={overrides[key]!r} replaces the lab's {key}={args[key]!r}", file=sys.stderr)
    return config_class(**{**args, **overrides})


def trl_kwargs(config: PPOConfig, trl_dir: Path, optimizer_steps_per_step: int, report_to: str = "none", world: int = 1) -> dict[str, Any]:
    """The TRL config arguments that our `config` sets on `world` processes.

    TRL's batch numbers are per device: `generation_batch_size` (global) / (per-device batch x processes) micro-batches
    per round (`steps_per_generation`), one optimiser step per `gradient_accumulation_steps` of them. Our
    `mini_batch_size` is global, so per-device batch x accumulation = mini_batch_size / world: the same optimiser
    steps per round, each over mini_batch_size completions, on any number of processes."""
    import torch

    return dict(
        output_dir=str(trl_dir),
        learning_rate=config.actor_lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        # micro_batch_size is the memory batch per process, mini_batch_size one optimiser step over all, as in our PPO.
        per_device_train_batch_size=micro_size(config, world),
        gradient_accumulation_steps=accumulation_steps(config, world),
        num_generations=config.rollouts_per_prompt,
        generation_batch_size=config.batch_size,
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,
        top_k=0,
        top_p=1.0,
        beta=config.kl_coef,
        epsilon=config.cliprange,
        num_iterations=config.ppo_epochs,
        mask_truncated_completions=config.truncated == "mask",
        max_steps=config.total_steps * optimizer_steps_per_step,
        logging_steps=optimizer_steps_per_step,
        save_steps=config.save_every * optimizer_steps_per_step,
        save_total_limit=config.keep_checkpoints,
        seed=config.seed,
        data_seed=config.seed,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        # Like our PPO: a constant learning rate, and no activation recomputation on small models.
        lr_scheduler_type="constant",
        gradient_checkpointing=torch.cuda.is_available(),
        report_to=report_to,
        disable_tqdm=False,
    )


def round_tokens(logs: dict[str, float], config: PPOConfig) -> tuple[float, float]:
    """(tokens generated, tokens in the loss) of one generation round, from TRL's logged means
    over all processes; masked (truncated) completions are out of the loss, which sees each
    round's tokens `ppo_epochs` times."""

    def mean(key: str) -> float:
        value = logs.get(key, 0.0)
        return 0.0 if value is None or math.isnan(value) else float(value)

    generated = mean("completions/mean_length") * config.batch_size
    if config.truncated != "mask":
        return generated, generated * config.ppo_epochs
    finished = config.batch_size * (1.0 - mean("completions/clipped_ratio"))
    return generated, mean("completions/mean_terminated_length") * finished * config.ppo_epochs


class RunDirLogger(TrainerCallback):
    """Writes TRL's logs as metrics.jsonl rows (one per generation round) and rollouts.jsonl,
    with the held-out evaluation and the compute totals PPO writes, on the main process."""

    def __init__(
        self,
        run: RunDir,
        config: PPOConfig,
        reward: CountdownReward,
        steps_per_round: int,
        eval_tasks: Sequence[Task],
        tokenizer: Any,
        start: int,
        started: float,
    ) -> None:
        self.run, self.config, self.reward, self.steps_per_round = run, config, reward, steps_per_round
        self.eval_tasks, self.tokenizer, self.start, self.started = list(eval_tasks), tokenizer, start, started
        self.totals = Totals.from_log(run.metrics, start) if start else Totals()

    def evaluate(self, model: Any, step: int) -> dict[str, float]:
        """The greedy held-out evaluation when it is due at `step` (as in PPO: step 0, every `eval_every`, the last)."""
        config = self.config
        if not (config.eval_every and self.eval_tasks and (step % config.eval_every == 0 or step == config.total_steps)):
            return {}
        training = model.training
        model.eval()
        try:
            return evaluate_policy(model, self.tokenizer, self.eval_tasks, config, log=self.run.eval_completions, step=step)
        finally:
            model.train(training)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.start == 0 and (report := self.evaluate(model, 0)):
            append_jsonl(self.run.metrics, [{"step": 0, **report, **self.totals.row(self.started)}])

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, model: Any = None, **kwargs: Any) -> None:
        if not logs or "reward" not in logs:
            return
        # Every process drains its own verdicts (only the main one writes a sample of them); accuracy
        # and format rate come in `logs`, averaged over all processes by TRL.
        rows, self.reward.pending = self.reward.pending, []
        if not state.is_world_process_zero:
            return
        step = state.global_step // self.steps_per_round
        row: dict[str, Any] = {"step": step}
        row |= {KEY_MAP.get(key, f"trl/{key}"): value for key, value in logs.items()}
        row |= self.evaluate(model, step)
        generated, trained = round_tokens(logs, self.config)
        self.totals.generated_tokens += generated
        self.totals.trained_tokens += trained
        append_jsonl(self.run.metrics, [{**row, **self.totals.row(self.started)}])
        append_jsonl(self.run.rollouts, [{"step": step, **r} for r in rows[: self.config.log_rollouts]])


def open_trl_run(run: RunDir, config: PPOConfig, algo: str, args: Any, last: str | None, steps_per_round: int) -> int:
    """Our last completed step (0 for a new run); drops the log rows of the steps that will be redone."""
    run.root.mkdir(parents=True, exist_ok=True)
    start = 0
    if last:
        start = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"] // steps_per_round
    for log in (run.metrics, run.rollouts, run.eval_completions):
        truncate_after(log, start if start > 0 else -1)  # as in rl/train.py: no checkpoint, nothing kept
    write_text_atomic(run.config, json.dumps({**config.to_dict(), "algo": algo, "trl": args.to_dict()}, indent=2, default=str))
    return start


def start_model(name_or_path: str, run_root: Path) -> str:
    """A model folder TRL can load by path (it builds its reference from that path too): the
    resolved model, or, for a LoRA adapter, the merged model saved once in RUN/start_model."""
    from runtime.models import adapter_base, load_model, load_tokenizer, resolve_model_path

    path = resolve_model_path(name_or_path)
    if adapter_base(path) is None:
        return path
    merged = run_root / "start_model"
    if not (merged / "config.json").is_file():
        load_model(path).save_pretrained(str(merged))
        load_tokenizer(path).save_pretrained(str(merged))
    return str(merged)


def train_trl(
    algo: str,
    config: PPOConfig,
    output_dir: str | Path,
    *,
    tasks: Sequence[Task] | None = None,
    resume: bool = False,
    trl_overrides: dict[str, Any] | None = None,
    report_to: str = "none",
) -> Path:
    """Train with TRL's GRPOTrainer or RLOOTrainer; writes config.json, metrics.jsonl, rollouts.jsonl.
    `report_to` also logs to a tracker (TRL's `report_to`; a `--trl-set report_to=...` wins)."""
    from transformers.trainer_utils import get_last_checkpoint

    from runtime.models import load_tokenizer, lora_config

    started = time.perf_counter()
    check_config(algo, config)
    run = RunDir(Path(output_dir))
    trl_dir = run.root / "trl"
    last = get_last_checkpoint(str(trl_dir)) if resume and trl_dir.exists() else None
    if not resume and run.has_logs():
        raise UsageError(f"{run.root} already holds a run; pass --resume to continue it or choose another --output-dir")
    train_tasks, eval_tasks = split_tasks(config, tasks)
    tokenizer = load_tokenizer(config.model)  # TRL pads prompts on the left itself; it needs a pad token.

    # One of our steps is one generation round. TRL derives its micro-steps per round
    # (`steps_per_generation` = generation batch / (per-device batch x processes)) when it
    # builds its config, so it is read from there rather than recomputed here.
    check_report_to(report_to)
    # The process count `accelerate launch` (or torchrun) gives every process, then the batches for it.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_config(algo, config, world)
    probe = trl_config(algo, config, trl_dir, 1, trl_overrides, report_to, quiet=True, world=world)
    if probe.world_size != world:  # TRL splits the batch by its own count: ours must be the same
        raise UsageError(f"TRL sees {probe.world_size} processes, WORLD_SIZE says {world}: launch with `accelerate launch`")
    steps_per_round = optimizer_steps_per_round(probe)
    args = trl_config(algo, config, trl_dir, steps_per_round, trl_overrides, report_to, world=world)
    start = open_trl_run(run, config, algo, args, last, steps_per_round)
    stop_ids = [i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None]
    zero_at = config.max_new_tokens if config.truncated == "zero" else 0
    reward = CountdownReward(config.rules, keep=config.log_rollouts, zero_truncated=zero_at, stop_ids=stop_ids)
    logger = RunDirLogger(run, config, reward, steps_per_round, eval_tasks, tokenizer, start, started)
    _, trainer_class = trl_classes(algo)
    trainer = trainer_class(
        model=start_model(config.model, run.root),
        peft_config=lora_config(config.lora_r, config.lora_alpha) if config.lora_r else None,
        reward_funcs=[reward],
        args=args,
        train_dataset=to_trl_dataset(train_tasks, config, tokenizer),
        processing_class=tokenizer,
        callbacks=[logger],
    )
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(run.root / "final"))
    tokenizer.save_pretrained(str(run.root / "final"))
    return run.root
