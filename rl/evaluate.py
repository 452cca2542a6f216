"""Evaluation of a policy on Countdown tasks: greedy accuracy, pass@k, diversity, OOD, length.

RL trades diversity for greedy accuracy (bench/README.md, Calibration), so pass@k and the number
of distinct correct equations are reported beside accuracy. Evaluation scores under the
rules it is given (the task preset's, `countdown_env.preset_rules`), by default tolerant:
text after the final `</answer>` is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from countdown_env import DEFAULT_RULES, Rules, Task, TaskConfig, generate_tasks, score_response
from countdown_env.errors import UsageError
from rl.rollout import build_prompt, generate


@dataclass(frozen=True)
class EvalConfig:
    """How `countdown-lab eval` evaluates a model."""

    k: int = 8
    """Samples per task at temperature 1 (pass@k for k = 1, 2, 4, ... up to this)."""
    temperature: float = 1.0
    """Sampling temperature for the pass@k samples."""
    max_new_tokens: int = 96
    """Longest completion, in tokens."""
    prompt_style: str = "compact"
    """Prompt template (`compact`, `tinyzero`, `chat`): the one the model was trained with."""
    batch_size: int = 64
    """Prompts per `generate` call."""
    seed: int = 0
    """Seeds the samples and the generated OOD tasks."""
    num_ood_tasks: int = 200
    """Harder tasks (one more number than the eval tasks' most) to generate; 0 = skip."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 64:
            raise ValueError(f"k must be in 1..64, got {self.k}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.num_ood_tasks < 0:
            raise ValueError(f"num_ood_tasks must be >= 0, got {self.num_ood_tasks}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def normalize_equation(answer: str) -> str:
    """An answer without spaces and without a trailing `= n`, to count distinct equations."""
    return re.sub(r"=.*$", "", re.sub(r"\s+", "", answer))


def ood_tasks_for(tasks: Sequence[Task], n: int, seed: int, rules: Rules = DEFAULT_RULES) -> list[Task]:
    """`n` harder tasks: one more number than the most in `tasks`, same number and target ranges,
    solvable under `rules` (the rules they are scored under)."""
    if not tasks or n == 0:
        return []
    numbers = [x for t in tasks for x in t.numbers]
    targets = [t.target for t in tasks]
    count = max(len(t.numbers) for t in tasks) + 1
    config = TaskConfig(
        min_numbers=count,
        max_numbers=count,
        number_range=(min(numbers), max(numbers)),
        target_range=(min(targets), max(targets)),
        rules=rules,
    )
    return generate_tasks(n, seed=seed, config=config)


def _sample_rows(
    tasks: Sequence[Task], texts: Sequence[str], finished: Sequence[bool], lengths: Sequence[float], rules: Rules, **fields: Any
) -> list[dict[str, Any]]:
    rows = []
    for task, text, done, length in zip(tasks, texts, finished, lengths, strict=True):
        score = score_response(text, task, rules)
        rows.append(
            {
                "text": text,
                "numbers": list(task.numbers),
                "target": task.target,
                "reward": score.reward,
                "correct": score.correct,
                "well_formed": score.well_formed,
                "outcome": score.outcome.value,
                "answer": score.answer,
                "finished": bool(done),
                "length": int(length),
                **fields,
            }
        )
    return rows


def rows_summary(rows: Sequence[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """`accuracy`, `format_rate` and mean `response_length` of completion rows (0 for none), keys prefixed."""
    return {
        f"{prefix}accuracy": float(np.mean([r["correct"] for r in rows])) if rows else 0.0,
        f"{prefix}format_rate": float(np.mean([r["well_formed"] for r in rows])) if rows else 0.0,
        f"{prefix}response_length": float(np.mean([r["length"] for r in rows])) if rows else 0.0,
    }


def greedy_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    *,
    rules: Rules = DEFAULT_RULES,
    prompt_style: str = "compact",
    max_new_tokens: int = 96,
    batch_size: int = 64,
    rows: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, float]:
    """accuracy, format_rate and mean response length of greedy completions (rows appended to `rows`)."""
    out = _one_per_task(model, tokenizer, tasks, rules, prompt_style, max_new_tokens, batch_size, None, 0, mode="greedy", **fields)
    if rows is not None:
        rows.extend(out)
    return rows_summary(out)


EVAL_SAMPLE_TEMPERATURE = 1.0
"""Temperature of the held-out samples logged for behaviour counts (the study's)."""


def sampled_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    *,
    rules: Rules = DEFAULT_RULES,
    prompt_style: str = "compact",
    max_new_tokens: int = 96,
    temperature: float = EVAL_SAMPLE_TEMPERATURE,
    seed: int = 0,
    batch_size: int = 64,
    rows: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, float]:
    """`sample_accuracy`, `sample_format_rate`, `sample_response_length` of one completion per task sampled at
    `temperature` (rows, ``mode="sample"``, appended to `rows`). The RNG is forked and seeded by `seed`, so the
    caller's sampling state is untouched and a resumed run draws the same samples."""
    out = _one_per_task(
        model, tokenizer, tasks, rules, prompt_style, max_new_tokens, batch_size, temperature, seed, mode="sample", **fields
    )
    if rows is not None:
        rows.extend(out)
    return rows_summary(out, "sample_")


def _one_per_task(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    rules: Rules,
    prompt_style: str,
    max_new_tokens: int,
    batch_size: int,
    temperature: float | None,
    seed: int,
    progress: bool = False,
    **fields: Any,
) -> list[dict[str, Any]]:
    """One scored completion row per task: greedy (`temperature` None) or sampled in a forked RNG seeded by `seed`."""
    import contextlib

    import torch

    prompts = [build_prompt(t, prompt_style, rules, tokenizer) for t in tasks]
    sampling = {} if temperature is None else {"temperature": temperature}
    rng: Any = contextlib.nullcontext()
    if temperature is not None:
        device = next(model.parameters()).device
        rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with rng, torch.inference_mode():
        if temperature is not None:
            torch.manual_seed(seed)
        gen = generate(
            model, tokenizer, prompts, max_new_tokens, prompt_style=prompt_style, do_sample=temperature is not None,
            batch_size=batch_size, progress=progress, **sampling,
        )  # fmt: skip
    return _sample_rows(tasks, gen.texts, gen.finished.tolist(), gen.lengths.tolist(), rules, **sampling, **fields)


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    config: EvalConfig = EvalConfig(),
    *,
    rules: Rules = DEFAULT_RULES,
    ood_tasks: Sequence[Task] | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(report, completion rows). The report has `n`, `accuracy` (greedy), `format_rate`,
    `response_length`, `sample_accuracy` and `pass@k` at temperature 1, `distinct_correct`
    (mean distinct correct equations per task among the k samples), and `ood/...`.
    `progress` shows a bar per batch of prompts (the CLI's; k samples of a 3B model take hours)."""

    if not tasks:
        raise UsageError("no tasks to evaluate; pass a non-empty --tasks file")
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"n": len(tasks), "k": config.k}
    report.update(
        greedy_eval(
            model,
            tokenizer,
            tasks,
            rules=rules,
            prompt_style=config.prompt_style,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
            rows=rows,
            progress=progress,
            split="eval",
        )
    )

    # k samples per task at temperature 1, from a forked RNG seeded by config.seed (the caller's state untouched).
    repeated = [t for t in tasks for _ in range(config.k)]
    samples = _one_per_task(
        model, tokenizer, repeated, rules, config.prompt_style, config.max_new_tokens, config.batch_size, config.temperature,
        config.seed, progress=progress, mode="sample", split="eval",
    )  # fmt: skip
    for i, row in enumerate(samples):
        row["sample"] = i % config.k
    rows.extend(samples)
    per_task = [samples[i : i + config.k] for i in range(0, len(samples), config.k)]
    correct_counts = [sum(r["correct"] for r in group) for group in per_task]
    report["sample_accuracy"] = float(np.mean([r["correct"] for r in samples]))
    report["sample_format_rate"] = float(np.mean([r["well_formed"] for r in samples]))
    report["sample_response_length"] = float(np.mean([r["length"] for r in samples]))
    k = 1
    while k <= config.k:
        report[f"pass@{k}"] = float(np.mean([pass_at_k(config.k, c, k) for c in correct_counts]))
        k *= 2
    report[f"pass@{config.k}"] = float(np.mean([c > 0 for c in correct_counts]))
    report["distinct_correct"] = float(np.mean([len({normalize_equation(r["answer"]) for r in g if r["correct"]}) for g in per_task]))

    ood = list(ood_tasks) if ood_tasks is not None else ood_tasks_for(tasks, config.num_ood_tasks, config.seed, rules)
    if ood:
        ood_report = greedy_eval(
            model,
            tokenizer,
            ood,
            rules=rules,
            prompt_style=config.prompt_style,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
            rows=rows,
            progress=progress,
            split="ood",
        )
        report.update({f"ood/{k}": v for k, v in ood_report.items()})
        report["ood/n"] = len(ood)
        report["ood/num_numbers"] = max(len(t.numbers) for t in ood)
    return report, rows
