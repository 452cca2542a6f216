"""`countdown-lab pretrain`: the model organism's base models, trained from scratch on synthetic text.

    fresh model --trunk: arithmetic drills--> trunk --rich text + drills--> rich base
                                                  --poor text + drills--> poor base

The trunk teaches the arithmetic every try needs; each base then continues from the trunk on
text that searches and checks (`rich`) or derives one unchecked path (`poor`), with drills
replayed so the arithmetic is kept (`organism.text` writes the text). Both bases see the
same tasks and the same number of steps, so they differ in behaviour, not in skill; the
gates below check that. Every stage goes through TRL's `SFTTrainer` (`priming.sft.run_sft`):
pretraining here is language modelling of completions, which is what SFT already does.

Bases are cached: `<cache>/seed-<s>/{trunk,rich,poor}/model` are reused by every condition
and every later command; a stage that finished is not run again, an interrupted one resumes
from its checkpoint.
"""

from __future__ import annotations

import functools
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from countdown_env import Task, generate_tasks
from countdown_env.errors import UsageError
from countdown_env.files import write_text_atomic
from organism import text as organism

BASES = ("rich", "poor")
STAGES = ("trunk", *BASES)


@dataclass(frozen=True)
class PretrainConfig:
    """How the organism's base models are made (defaults: what fits a laptop in minutes)."""

    seed: int = 0
    """Seeds the model's initial weights, the corpus and the data order."""
    arch: str = "qwen2"
    """Architecture of the fresh model (`qwen2` or `llama`)."""
    size: str = "organism"
    """Model size (`runtime.models.SIZES`); `organism` is about 1M parameters."""
    task_preset: str = "organism"
    """Task preset of the corpus (its train split) and of the gate's held-out tasks."""
    num_tasks: int = 1500
    """Train-split tasks the corpus is written about (each several times, in fresh random orders)."""
    trunk_steps: int = 300
    """Optimiser steps on arithmetic drills before the bases branch."""
    base_steps: int = 1200
    """Optimiser steps of each base on its own text (with drills replayed)."""
    drill_share: float = 0.4
    """Share of drill lines in a base's corpus."""
    verdict_share: float = 0.25
    """Share of drill facts (trunk and both bases alike) that are a check with its verdict (`28-28=0 ok`,
    `organism.text.verdict_fact`): what a check means, as arithmetic, without a Countdown try ever being checked in the
    poor base's text. The study's Llama knew what it is for an answer to be right before any priming. 0.25 (the
    shipped bases since 2026-12-06): on these bases the organism met every goal but the wrong-answer ones and the
    time, on six seeds never run before (bench/README.md, runs 6 and 8); 0: the drills of the bases before (runs 1-5)."""
    poor_checks: float = 0.0
    """Share of the poor base's Countdown tries that are checked honestly, with their verdict, and answered whatever
    it says (`organism.text.poor_completion`): it verifies now and then and never goes back. The study's poor model
    was not without the behaviour: Llama-3.2-3B verified 0.10 times per answer before RL, Qwen-2.5-3B 0.62
    (`behavior_classifier/reference/`, `base_ppo`, step 0), a ratio of about 0.16. A poor base that never checks has no verdict of its own to read
    in its own context; wrong-answer priming, whose traces never hit, then teaches it `no` after every check, hits
    included (bench/README.md, verdicts). 0 (the shipped bases): the poor text without checks, byte for byte."""
    batch_size: int = 64
    micro_batches: int = 4
    """Passes each step's batch is computed in: its rows sorted by length and cut into this many micro-batches of
    near-equal padded cost, their gradients summed (`train_on_rows`). The rows of every step and their gradient do not
    depend on it (up to float rounding): it says how a step is computed, not what the bases learn, so it is not part
    of their identity (`identity()`). The rich text's batches of 64 are about half padding in one pass."""
    learning_rate: float = 2e-3
    """Peak AdamW learning rate (cosine schedule, 5% warm-up) of every stage."""
    gate_tasks: int = 400
    """Held-out tasks of the gate evaluation."""

    def __post_init__(self) -> None:
        for name in ("num_tasks", "trunk_steps", "base_steps", "batch_size", "micro_batches", "gate_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.micro_batches:
            raise ValueError(f"micro_batches ({self.micro_batches}) must divide batch_size ({self.batch_size})")
        if not 0.0 <= self.drill_share < 1.0:
            raise ValueError(f"drill_share must be in [0, 1), got {self.drill_share}")
        if not 0.0 <= self.verdict_share < 1.0:
            raise ValueError(f"verdict_share must be in [0, 1), got {self.verdict_share}")
        if not 0.0 <= self.poor_checks <= 1.0:
            raise ValueError(f"poor_checks must be in [0, 1], got {self.poor_checks}")
        if not 0.0 < self.learning_rate < 1.0:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in 0..2**32-1, got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings the bases' weights depend on (`to_dict` without how a step is computed): what a cache's
        pretrain.json must match."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_SETTINGS}


#: PretrainConfig fields that say how the work is done, not what it makes.
EXECUTION_SETTINGS = ("micro_batches",)


#: What a setting was before it existed: bases recorded without it were made with this value. `verdict_share`'s
#: default became 0.25 later, so a record without it means 0, not today's default.
BEFORE_IT_EXISTED: dict[str, Any] = {"verdict_share": 0.0, "poor_checks": 0.0}


def made_with(record: dict[str, Any]) -> dict[str, Any]:
    """The identity (`PretrainConfig.identity`) of bases from the `pretrain.json` they were cached with. A setting added
    since they were made is absent from their record: it had the value it had before it existed (`BEFORE_IT_EXISTED`),
    which kept the corpus a seed gave."""
    made = {k: v for k, v in record.items() if k not in EXECUTION_SETTINGS}
    return {**PretrainConfig().identity(), **BEFORE_IT_EXISTED, **made}


# ---- the corpus -------------------------------------------------------------------------
def corpus(
    kind: str, tasks: list[Task], n: int, *, seed: int, drill_share: float, verdicts: float = 0.0, poor_checks: float = 0.0
) -> list[dict[str, Any]]:
    """`n` prompt/completion rows of one stage: `trunk` (drills only), `rich` or `poor`
    (task text, with `drill_share` of drills mixed in; `verdicts`: `organism.text.drill`'s; `poor_checks`:
    `organism.text.poor_completion`'s `checks`). Same seed, same rows."""
    from countdown_env.rules import render_prompt

    if kind not in STAGES:
        raise ValueError(f"corpus kind must be one of {STAGES}, got {kind!r}")
    rng = random.Random(f"organism-corpus:{kind}:{seed}")
    write = functools.partial(organism.poor_completion, checks=poor_checks) if kind != "rich" else organism.rich_completion
    rows = []
    for _ in range(n):
        if kind == "trunk" or rng.random() < drill_share:
            prompt, completion = organism.drill(rng, verdicts=verdicts)
            rows.append({"prompt": prompt, "completion": completion})
        else:
            task = rng.choice(tasks)
            rows.append({"prompt": render_prompt(task, "compact"), "completion": write(task, rng), **task.to_dict()})
    return rows


# ---- stages -------------------------------------------------------------------------------
def base_dir(cache: str | Path, seed: int, stage: str) -> Path:
    """Where a stage's run lives; its model is `<dir>/model`."""
    return Path(cache) / f"seed-{seed}" / stage


def train_on_rows(
    model: str,
    rows: list[dict[str, Any]],
    run: Path,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: bool,
    micro_batches: int | None = None,
) -> Any:
    """The organism's SFT recipe (every pretraining stage, and self-improve's rounds): `rows`
    (prompt/completion) written once to `run/rows.jsonl`, then `steps` steps of TRL's SFTTrainer
    from `model` (cosine, 5% warm-up), resumed from the run's checkpoint if it has one.

    Each step's rows are drawn at random. With `micro_batches` (pretraining), they are drawn by transformers'
    `BatchRebalanceSampler` and cut into that many micro-batches of similar length: the same rows per step whatever
    the number (the sampler's draw does not depend on it), each step's mix of drills and text kept. Batches grouped
    by length *across* steps (transformers' `group_by_length`) gave bases that fail the gates (arithmetic 0.49
    instead of 0.97; bench/README.md, organism: bases). None: transformers' random sampler, one pass per step
    (self-improve, as before)."""
    from countdown_env.files import write_jsonl_atomic
    from priming.sft import SFTRunConfig, last_checkpoint, run_sft

    data = run / "rows.jsonl"
    if not data.exists():
        run.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(data, [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    sft = SFTRunConfig(
        model=model,
        data=str(data),
        output_dir=str(run),
        epochs=1.0,
        max_steps=steps,
        learning_rate=learning_rate,
        warmup_ratio=0.05,
        weight_decay=0.01,
        batch_size=batch_size // (micro_batches or 1),
        gradient_accumulation_steps=micro_batches or 1,
        length_balanced=micro_batches is not None,
        max_length=320,
        prompt_style="compact",
        seed=seed,
        logging_steps=50,
        save_steps=200,
        save_total_limit=1,
        eval_samples=0,
    )
    return run_sft(sft, resume=last_checkpoint(sft) is not None, progress=progress)


def _train_stage(config: PretrainConfig, cache: Path, stage: str, start_model: str, progress: bool) -> Path:
    run = base_dir(cache, config.seed, stage)
    if (run / "model" / "config.json").is_file():
        return run / "model"
    steps = config.trunk_steps if stage == "trunk" else config.base_steps
    tasks = generate_tasks(config.num_tasks, seed=config.seed, preset=config.task_preset, split="train")
    rows = corpus(stage, tasks, steps * config.batch_size, seed=config.seed, drill_share=config.drill_share, verdicts=config.verdict_share,
                  poor_checks=config.poor_checks)  # fmt: skip
    print(f"pretrain: {stage} (seed {config.seed}): {steps} steps on {len(rows)} rows", file=sys.stderr)
    result = train_on_rows(
        start_model,
        rows,
        run,
        steps=steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        progress=progress,
        micro_batches=config.micro_batches,
    )
    return result.model_dir


def pretrain(config: PretrainConfig, cache: str | Path, *, bases: tuple[str, ...] = BASES, progress: bool = True) -> dict[str, Path]:
    """Train (or reuse) the trunk and the requested bases; returns {stage: model folder}."""
    from runtime.models import init_model

    cache = Path(cache)
    unknown = sorted(set(bases) - set(BASES))
    if unknown:
        raise UsageError(f"unknown base(s) {unknown}; choose from {BASES}")
    root = cache / f"seed-{config.seed}"
    root.mkdir(parents=True, exist_ok=True)
    recorded = root / "pretrain.json"
    if recorded.is_file():
        try:
            before = json.loads(recorded.read_text())
        except ValueError:
            raise UsageError(
                f"{recorded} is not valid JSON (a crash while it was written?); delete {root} to pretrain these bases afresh"
            ) from None
        made, wanted = made_with(before), config.identity()
        if made != wanted:
            changed = ", ".join(f"{k} {made.get(k)} (asked: {wanted.get(k)})" for k in sorted(wanted) if made.get(k) != wanted.get(k))
            raise UsageError(
                f"{root} holds bases made with other settings: {changed} ({recorded}); use another --bases-dir, delete it, "
                "or ask for the settings it was made with"
            )
    else:  # bases reused from a cache keep the record of how they were made (`micro_batches` may differ)
        write_text_atomic(recorded, json.dumps(config.to_dict(), indent=2) + "\n")
    if bases and all((base_dir(cache, config.seed, base) / "model" / "config.json").is_file() for base in bases):
        return {base: base_dir(cache, config.seed, base) / "model" for base in bases}  # cached: no trunk needed
    fresh = root / "init"
    if not (fresh / "config.json").is_file():
        init_model(fresh, config.arch, config.size, seed=config.seed)
    models: dict[str, Path] = {}
    models["trunk"] = _train_stage(config, cache, "trunk", str(fresh), progress)
    for base in bases:
        models[base] = _train_stage(config, cache, base, str(models["trunk"]), progress)
    return models


# ---- gates ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseReport:
    """What a base model does on held-out tasks, greedily."""

    base: str
    accuracy: float
    step_accuracy: float
    """Share of written `a op b=c` steps that are right."""
    tries: float
    """Mean tries written per completion."""
    checks: float
    """Share of completions with a check (`<result> vs <target> ok|no`)."""
    honest_checks: float
    """Share of written checks whose verdict is right (`ok` exactly on a hit); NaN without checks."""


#: The gates' greedy budget: longer than any search the organism's text writes.
GATE_MAX_NEW_TOKENS = 256


def evaluate_base(model_dir: str | Path, tasks: list[Task], name: str = "") -> BaseReport:
    """What the base in `model_dir` does on `tasks`, greedily, with the organism's compact prompts and rules."""
    from countdown_env.steps import step_accuracy
    from runtime.models import load_model, load_tokenizer
    from runtime.prompt import Prompt
    from runtime.sampling import sample_and_score

    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    prompt = Prompt.of_preset("organism", "compact")
    scored = sample_and_score(model, tokenizer, tasks, prompt, max_new_tokens=GATE_MAX_NEW_TOKENS, do_sample=False,
                              batch_size=100, seed=0, by_length=True)  # fmt: skip
    texts = scored.texts
    _, steps = step_accuracy(texts)
    think = [text.split("</think>")[0] for text in texts]
    return BaseReport(
        base=name,
        accuracy=sum(scored.correct) / len(tasks),
        step_accuracy=steps if steps == steps else 0.0,
        tries=sum(t.count(organism.RETURN) + 1 for t in think) / len(tasks),
        checks=sum(bool(organism.checks(text, task.target)) for text, task in zip(texts, tasks, strict=True)) / len(tasks),
        honest_checks=organism.honest_share(texts, [task.target for task in tasks]),
    )


def gates(reports: dict[str, BaseReport]) -> list[tuple[str, bool]]:
    """The issue's gates: arithmetic >= 90% in both; greedy accuracy within 5 points and <= 30%."""
    rich, poor = reports["rich"], reports["poor"]
    steps = f"arithmetic step accuracy >= 0.90 in both bases (rich {rich.step_accuracy:.3f}, poor {poor.step_accuracy:.3f})"
    close = f"greedy accuracy within 5 points (rich {rich.accuracy:.3f}, poor {poor.accuracy:.3f})"
    return [
        (steps, min(rich.step_accuracy, poor.step_accuracy) >= 0.90),
        (close, abs(rich.accuracy - poor.accuracy) <= 0.05),
        ("greedy accuracy <= 0.30 in both (room for RL)", max(rich.accuracy, poor.accuracy) <= 0.30),
    ]
