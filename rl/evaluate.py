"""Evaluation of a policy on Countdown tasks: greedy accuracy, pass@k, diversity, OOD, length.

RL trades diversity for greedy accuracy (bench/README.md, Calibration), so pass@k and the number
of distinct correct equations are reported beside accuracy. Evaluation samples and scores through
`runtime.sampling.sample_and_score` under the prompt it is given (a task preset's rules in a prompt
style); PPO's held-out evaluation (`evaluate_policy`) uses the run's, with tolerant scoring: text
after the final `</answer>` is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from countdown_env import DEFAULT_RULES, Rules, Task, TaskConfig, generate_tasks
from countdown_env.errors import UsageError
from countdown_env.files import append_jsonl
from countdown_env.rules import PROMPT_STYLES
from rl.config import PPOConfig
from runtime.prompt import Prompt
from runtime.sampling import sample_and_score


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
        if not 0 < self.temperature < float("inf"):  # nan and inf too: they would sample garbage, not fail
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.num_ood_tasks < 0:
            raise ValueError(f"num_ood_tasks must be >= 0, got {self.num_ood_tasks}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {sorted(PROMPT_STYLES)}, got {self.prompt_style!r}")


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


def rows_summary(rows: Sequence[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """`accuracy`, `format_rate` and mean `response_length` of completion rows (0 for none), keys prefixed."""
    return {
        f"{prefix}accuracy": float(np.mean([r["correct"] for r in rows])) if rows else 0.0,
        f"{prefix}format_rate": float(np.mean([r["well_formed"] for r in rows])) if rows else 0.0,
        f"{prefix}response_length": float(np.mean([r["length"] for r in rows])) if rows else 0.0,
    }


#: Prompts per `generate` call of PPO's held-out evaluation.
EVAL_BATCH_SIZE = 64
EVAL_SAMPLE_TEMPERATURE = 1.0
"""Temperature of the held-out samples logged for behaviour counts (the study's)."""


def greedy_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    prompt: Prompt,
    *,
    max_new_tokens: int,
    batch_size: int = EVAL_BATCH_SIZE,
    rows: list[dict[str, Any]] | None = None,
    progress: bool = False,
    **fields: Any,
) -> dict[str, float]:
    """accuracy, format_rate and mean response length of greedy completions (rows, `mode="greedy"`
    and `fields`, appended to `rows`)."""
    scored = sample_and_score(model, tokenizer, tasks, prompt, max_new_tokens=max_new_tokens, do_sample=False, batch_size=batch_size,
                              progress=progress)  # fmt: skip
    out = [sample.row(mode="greedy", **fields) for sample in scored.samples]
    if rows is not None:
        rows.extend(out)
    return rows_summary(out)


def sampled_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    prompt: Prompt,
    *,
    max_new_tokens: int,
    temperature: float = EVAL_SAMPLE_TEMPERATURE,
    seed: int = 0,
    batch_size: int = EVAL_BATCH_SIZE,
    rows: list[dict[str, Any]] | None = None,
    progress: bool = False,
    **fields: Any,
) -> dict[str, float]:
    """`sample_accuracy`, `sample_format_rate`, `sample_response_length` of one completion per task sampled at
    `temperature` (rows, ``mode="sample"``, appended to `rows`). The RNG is forked and seeded by `seed`, so the
    caller's sampling state is untouched and a resumed run draws the same samples."""
    out = one_sample_per_task(model, tokenizer, tasks, prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                      batch_size=batch_size, progress=progress, **fields)  # fmt: skip
    if rows is not None:
        rows.extend(out)
    return rows_summary(out, "sample_")


def one_sample_per_task(
    model: Any, tokenizer: Any, tasks: Sequence[Task], prompt: Prompt, *, max_new_tokens: int, temperature: float, seed: int,
    batch_size: int, progress: bool = False, **fields: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """One completion row per task sampled at `temperature` from a forked RNG seeded by `seed` (`mode="sample"`)."""
    scored = sample_and_score(model, tokenizer, tasks, prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                              batch_size=batch_size, progress=progress)  # fmt: skip
    return [sample.row(temperature=temperature, mode="sample", **fields) for sample in scored.samples]


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
    prompt = Prompt(rules, config.prompt_style)
    common = {"max_new_tokens": config.max_new_tokens, "batch_size": config.batch_size, "progress": progress}
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"n": len(tasks), "k": config.k}
    report.update(greedy_eval(model, tokenizer, tasks, prompt, rows=rows, split="eval", **common))
    # k samples per task at temperature 1, from a forked RNG seeded by config.seed (the caller's state untouched).
    repeated = [t for t in tasks for _ in range(config.k)]
    samples = one_sample_per_task(
        model, tokenizer, repeated, prompt, temperature=config.temperature, seed=config.seed, split="eval", **common
    )
    for i, row in enumerate(samples):
        row["sample"] = i % config.k
    rows.extend(samples)
    report.update(pass_at_k_report(samples, config.k))
    ood = list(ood_tasks) if ood_tasks is not None else ood_tasks_for(tasks, config.num_ood_tasks, config.seed, rules)
    if ood:
        ood_report = greedy_eval(model, tokenizer, ood, prompt, rows=rows, split="ood", **common)
        report.update({f"ood/{k}": v for k, v in ood_report.items()})
        report["ood/n"] = len(ood)
        report["ood/num_numbers"] = max(len(t.numbers) for t in ood)
    return report, rows


def pass_at_k_report(samples: Sequence[dict[str, Any]], k: int) -> dict[str, float]:
    """`sample_*` means, `pass@1, 2, 4, ...` (unbiased, from `k` samples per task) and `distinct_correct`
    of sample rows, `k` consecutive rows per task."""
    per_task = [samples[i : i + k] for i in range(0, len(samples), k)]
    correct_counts = [sum(r["correct"] for r in group) for group in per_task]
    report = {
        "sample_accuracy": float(np.mean([r["correct"] for r in samples])),
        "sample_format_rate": float(np.mean([r["well_formed"] for r in samples])),
        "sample_response_length": float(np.mean([r["length"] for r in samples])),
    }
    n = 1
    while n <= k:
        report[f"pass@{n}"] = float(np.mean([pass_at_k(k, c, n) for c in correct_counts]))
        n *= 2
    report[f"pass@{k}"] = float(np.mean([c > 0 for c in correct_counts]))
    report["distinct_correct"] = float(np.mean([len({normalize_equation(r["answer"]) for r in g if r["correct"]}) for g in per_task]))
    return report


# ---- PPO's held-out evaluation -------------------------------------------------------
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
    held-out tasks under the run's prompt, scored tolerantly (`PPOConfig.eval_prompt`: the same
    numbers for PPO and TRL runs). With `log`, the completions are appended there with `step`
    (behaviour counts of held-out completions at each evaluation). With `config.eval_samples`
    N > 0, as the study measured: one completion per task sampled at temperature 1 too
    (`eval/sample_*`, rows into `sample_rows`), and N of them logged instead of the greedy ones."""
    greedy = [] if rows is None else rows
    sampled = [] if sample_rows is None else sample_rows
    prompt, budget = config.eval_prompt, config.max_new_tokens
    greedy_eval(model, tokenizer, eval_tasks, prompt, max_new_tokens=budget, rows=greedy, step=step)
    if config.eval_samples:
        # the same samples after a resume; new ones at each evaluation
        sampled_eval(
            model, tokenizer, eval_tasks, prompt, max_new_tokens=budget, seed=config.seed * 100_003 + step, rows=sampled, step=step
        )
    if log is not None:
        append_jsonl(log, logged_eval_rows(greedy, sampled, config))
    return eval_metrics(greedy, sampled)


def logged_eval_rows(greedy: list[dict[str, Any]], sampled: list[dict[str, Any]], config: PPOConfig) -> list[dict[str, Any]]:
    """What eval_completions.jsonl keeps of one evaluation: the first `eval_samples` T=1 samples (the study's
    behaviour counts) or else the greedy rows; with `eval_log_greedy`, the greedy rows as well (rows carry `mode`)."""
    if not config.eval_samples:
        return greedy
    return [*(greedy if config.eval_log_greedy else []), *sampled[: config.eval_samples]]


def eval_metrics(greedy: Sequence[dict[str, Any]], sampled: Sequence[dict[str, Any]] = ()) -> dict[str, float]:
    """`eval/accuracy`, `eval/format_rate`, `eval/response_length` of the greedy rows, and `eval/sample_*` of the sampled ones."""
    return {**rows_summary(greedy, "eval/"), **(rows_summary(sampled, "eval/sample_") if sampled else {})}
