"""`countdown-lab analyze`: the measures of `lab.analysis.metrics` at every evaluated checkpoint of a run.

A run directory (PPO/GRPO, SFT, or `self-improve`) is read as a series of models, step 0 being
the base model. For each, on held-out prompts of the run's task preset:

    reflection_ratio, response_length   n samples per task at T=1, split by correct/wrong answers
    pass_at_k, distinct_solutions       the same samples: unbiased pass@k, k=1..n/2; canonical solutions per task,
                                        each with a 95% bootstrap interval over tasks and its change from step 0
    ood_accuracy                        greedy: unseen number/target ranges (value), and one more number
    kl_to_base                          exact token-level KL(checkpoint || base) on the checkpoint's samples
    hidden_state_shift                  last-layer mean hidden states vs the base's on the same prompts
    transfer                            greedy on the "any subset" family (never trained on)

The held-out prompts are the preset's whole test split by default (organism: about 200 tasks), so
the intervals are as narrow as the split allows. A change from step 0 is "outside the noise" when the
95% interval of its per-task differences (paired bootstrap over tasks) excludes 0; the table says which.

Output (DIR): `analysis.json` (each key a list of `{step, value, ...}` rows, rebuilt after every
step), `analysis.csv` (one row per step: pass@k and distinct solutions with `_lo`/`_hi`, their
changes from step 0 and whether each is outside the noise), `steps.jsonl` (append-only, one row per
analysed step with its per-task counts: a killed analysis resumes after its last complete step),
`completions.jsonl` (the samples, for `countdown-lab classify`), `hidden/step-N.npy` and PNG plots.

Checkpoints: only saved steps can be analysed. PPO keeps `keep_checkpoints` checkpoints every
`save_every` steps, so to analyse every evaluation set `save_every` equal to `eval_every` and
`keep_checkpoints` to at least `total_steps / eval_every + 1`; evaluated steps without a
checkpoint are listed as skipped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from countdown_env import Rules, Task, TaskConfig, generate_tasks, preset_rules, subset_config, unseen_range_config
from countdown_env.errors import UsageError
from countdown_env.files import append_jsonl, read_jsonl, write_text_atomic
from countdown_env.rules import PROMPT_STYLES
from lab.analysis import metrics as analysis
from runtime.prompt import Prompt
from runtime.run_dir import CHECKPOINT, RunDir

#: The keys of analysis.json (the contract), in plot order.
METRICS = (
    "reflection_ratio",
    "response_length",
    "pass_at_k",
    "distinct_solutions",
    "ood_accuracy",
    "kl_to_base",
    "hidden_state_shift",
    "transfer",
)
#: The largest k the default report carries (the notebooks read pass@16); with k <= samples/2 it sets the
#: default samples per task. Fewer samples are allowed (pass@k then stops at samples/2).
PASS_AT_K_MAX = 16
#: Held-out tasks when a preset's test split is too large to count (`lab.pipeline.config.split_sizes`,
#: e.g. tinyzero's): a 95% interval on an accuracy near 0.5 is then about +-4 points.
UNCOUNTED_TEST_TASKS = 500
_HF_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_ROUND = re.compile(r"^round-(\d+)$")


@dataclass(frozen=True)
class AnalyzeConfig:
    """What `countdown-lab analyze` measures, and on how much data."""

    task_preset: str = "organism"
    """Task preset of the held-out prompts (default: the run's `task_preset`, else organism)."""
    prompt_style: str = "compact"
    """Prompt template the run trained with (default: the run's)."""
    max_new_tokens: int = 224
    """Longest completion (default: the RL run's `max_new_tokens`)."""
    num_tasks: int | None = None
    """Held-out tasks (the preset's test split) sampled `samples` times each; None: the whole test split."""
    samples: int = 2 * PASS_AT_K_MAX
    """Samples per task at `temperature` (pass@k for k = 1..samples/2)."""
    temperature: float = 1.0
    num_ood_tasks: int = 64
    """Tasks in each greedy split: unseen ranges, one more number, and the transfer family."""
    batch_size: int = 128
    seed: int = 0
    """Seeds the held-out tasks and the samples (the same for every step)."""

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_tasks", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples < 2:
            raise ValueError(f"samples must be >= 2 (pass@k for k <= samples/2), got {self.samples}")
        if self.num_ood_tasks < 0:
            raise ValueError(f"num_ood_tasks must be >= 0, got {self.num_ood_tasks}")
        if not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {sorted(PROMPT_STYLES)}, got {self.prompt_style!r}")
        preset_rules(self.task_preset)  # an unknown preset fails here, with the known ones


def run_settings(run_dir: Path) -> dict[str, Any]:
    """The AnalyzeConfig fields a run's config.json fixes (task preset, prompt style, length)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    out = {k: config[k] for k in ("task_preset", "prompt_style") if config.get(k)}
    # The run's sampling budget (`max_response_length` in RL runs before the rename). An SFT run's
    # (it has `data` and `max_length`) is only its evaluation's, not how long its completions run: the default stands.
    sft = "data" in config and "max_length" in config
    budget = config.get("max_response_length") or (None if sft else config.get("max_new_tokens"))
    if budget:
        out["max_new_tokens"] = int(budget)
    return out


def run_checkpoints(run_dir: Path) -> dict[int, Path]:
    """step -> loadable model folder for every checkpoint a run directory holds.

    PPO's `checkpoints/step-N/policy`, the Trainer's `checkpoints/checkpoint-N` (SFT) and
    `trl/checkpoint-N` (GRPO/RLOO: N counts TRL's optimizer steps, several per step of ours, so the
    step is N / `trl_steps_per_round`), an SFT run's final `model/` (at its last logged step), and
    `self-improve`'s `rounds/round-N/model` (N = the round).
    """
    root = Path(run_dir)
    found: dict[int, Path] = {}
    for path in RunDir(root).checkpoints.glob("step-*"):
        if (m := CHECKPOINT.match(path.name)) and (path / "policy" / "config.json").is_file():
            found[int(m.group(1))] = path / "policy"
    for path in (root / "checkpoints").glob("checkpoint-*"):
        if (m := _HF_CHECKPOINT.match(path.name)) and (path / "config.json").is_file():
            found[int(m.group(1))] = path
    per_round = trl_steps_per_round(root)
    for path in (root / "trl").glob("checkpoint-*"):
        if (m := _HF_CHECKPOINT.match(path.name)) and (path / "config.json").is_file() and int(m.group(1)) % per_round == 0:
            found[int(m.group(1)) // per_round] = path
    for path in (root / "rounds").glob("round-*"):
        if (m := _ROUND.match(path.name)) and (path / "model" / "config.json").is_file():
            found[int(m.group(1))] = path / "model"
    if (root / "model" / "config.json").is_file():
        steps = (
            [row["step"] for row in read_jsonl(root / "metrics.jsonl") if isinstance(row.get("step"), int)]
            if (root / "metrics.jsonl").exists()
            else []
        )
        found.setdefault(max(steps, default=max(found, default=0) + 1), root / "model")
    return dict(sorted(found.items()))


def trl_steps_per_round(run_dir: Path) -> int:
    """TRL's optimizer steps per step of ours in a GRPO/RLOO run (`rl.trl_algos.optimizer_steps_per_round`,
    from the TRL settings its config.json records); 1 for any other run."""
    path = Path(run_dir) / "config.json"
    trl = json.loads(path.read_text()).get("trl") if path.is_file() else None
    if not isinstance(trl, dict):
        return 1
    try:
        micro = int(trl["steps_per_generation"]) * int(trl["num_iterations"])
        return max(1, micro // int(trl["gradient_accumulation_steps"]))
    except (KeyError, TypeError, ValueError):  # an older config: TRL saves every save_every of our steps
        return max(1, int(trl.get("save_steps") or 1) // max(1, int(json.loads(path.read_text()).get("save_every") or 1)))


def evaluated_steps(run_dir: Path) -> list[int]:
    """Steps whose metrics row carries an evaluation (`eval/accuracy`)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return sorted({int(row["step"]) for row in read_jsonl(path) if "eval/accuracy" in row and "step" in row})


@dataclass(frozen=True)
class Plan:
    """Which models an analysis measures: step -> model (step 0 is the base), and evaluated steps without a checkpoint."""

    models: dict[int, str]
    skipped: list[int]


def plan(run_dir: Path, base_model: str) -> Plan:
    """Every evaluated step that has a checkpoint (every checkpoint if the run logs no evaluations), plus the base at step 0."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UsageError(f"run directory {root} does not exist")
    checkpoints = run_checkpoints(root)
    if not checkpoints:
        raise UsageError(
            f"{root} holds no checkpoints (checkpoints/step-N/policy, checkpoints/checkpoint-N, model/ or rounds/round-N/model); "
            "is it a ppo, sft or self-improve run directory?"
        )
    evaluated = [s for s in evaluated_steps(root) if s > 0]
    wanted = [s for s in evaluated if s in checkpoints] if evaluated else list(checkpoints)
    if evaluated and not wanted:  # evaluations and checkpoints never coincide: take what is saved
        wanted = list(checkpoints)
    models = {0: str(base_model), **{s: str(checkpoints[s]) for s in wanted if s > 0}}
    return Plan(models, [s for s in evaluated if s not in checkpoints])


#: config.json fields that must agree between a base and a checkpoint trained from it.
SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers")


def check_models(todo: Plan) -> None:
    """Every model of the plan loadable (weights present), and the base of the checkpoints' architecture,
    as one-line errors before anything is written or loaded."""
    from runtime.models import check_model, resolve_model_path

    base = todo.models[0]
    check_model(base, "--base-model")
    for step, path in todo.models.items():
        if step:
            check_model(path, f"the checkpoint of step {step}")
    base_config = Path(resolve_model_path(base)) / "config.json"
    if not base_config.is_file():  # a hub id: its config is in the hub cache, not worth a lookup here
        return
    want = json.loads(base_config.read_text())
    for step, path in todo.models.items():
        config = Path(path) / "config.json"
        have = json.loads(config.read_text()) if step and config.is_file() else want
        diff = [k for k in SHAPE_FIELDS if k in want and k in have and want[k] != have[k]]
        if diff:
            shown = ", ".join(f"{k} {want[k]} vs {have[k]}" for k in diff)
            raise UsageError(
                f"--base-model {base} is not the model step {step}'s checkpoint was trained from ({shown}); give the run's start model"
            )


@dataclass
class HeldOut:
    """The prompts every step is measured on (the same for every step)."""

    tasks: list[Task]
    unseen: list[Task]
    more_numbers: list[Task]
    transfer: list[Task]


def held_out_tasks(task_preset: str, seed: int, num_tasks: int | None = None) -> list[Task]:
    """`num_tasks` tasks of the preset's test split, or (None) the whole split: every test task the
    generator reaches (`split_sizes` counts an upper bound; a rare hard task may stay unreached), or
    `UNCOUNTED_TEST_TASKS` of a split too large to count."""
    from countdown_env.tasks import iter_tasks
    from lab.pipeline.config import split_sizes

    if num_tasks is not None:
        return generate_tasks(num_tasks, seed=seed, preset=task_preset, split="test")
    size = split_sizes(task_preset).get("test") or UNCOUNTED_TEST_TASKS
    out: list[Task] = []
    try:
        for task in iter_tasks(seed, TaskConfig.preset(task_preset), "test"):
            out.append(task)
            if len(out) >= size:
                break
    except ValueError:  # no new test task in many draws: the split is exhausted, and `out` is all of it
        pass
    return out


def held_out(config: AnalyzeConfig) -> HeldOut:
    from rl.evaluate import ood_tasks_for

    rules = preset_rules(config.task_preset)
    base = TaskConfig.preset(config.task_preset)
    tasks = held_out_tasks(config.task_preset, config.seed, config.num_tasks)
    n = config.num_ood_tasks
    return HeldOut(
        tasks=tasks,
        unseen=generate_tasks(n, seed=config.seed, config=unseen_range_config(base)),
        more_numbers=ood_tasks_for(tasks, n, config.seed, rules),
        transfer=generate_tasks(n, seed=config.seed, config=subset_config(base)),
    )


def measure(
    model: Any, base: Any, tokenizer: Any, data: HeldOut, config: AnalyzeConfig, base_states: np.ndarray, step: int
) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]], list[dict[str, Any]], np.ndarray]:
    """(one row per metric, per-task counts (`per_task_counts`), completion rows, hidden states) for one model."""
    from runtime.sampling import sample_and_score

    prompt = Prompt.of_preset(config.task_preset, config.prompt_style)
    repeated = [t for t in data.tasks for _ in range(config.samples)]
    # The same seed at every step: each checkpoint answers the same prompts from the same RNG state.
    scored = sample_and_score(model, tokenizer, repeated, prompt, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              batch_size=config.batch_size, seed=config.seed)  # fmt: skip
    gen = scored.generation
    kl = analysis.token_kl(model, base, gen.query, gen.query_mask, gen.response, gen.response_mask, batch_size=config.batch_size)
    tokens = gen.response_mask.sum().clamp(min=1)
    states = analysis.mean_hidden_states(model, tokenizer, [prompt.render(t, tokenizer) for t in data.tasks],
                                         prompt_style=config.prompt_style, batch_size=config.batch_size)  # fmt: skip
    shift = analysis.hidden_shift(base_states, states)

    def accuracy(tasks: list[Task], rules: Rules = prompt.rules) -> float | None:
        """Greedy accuracy on `tasks` under `rules` (None for no tasks)."""
        if not tasks:
            return None
        greedy = sample_and_score(model, tokenizer, tasks, Prompt(rules, prompt.style), max_new_tokens=config.max_new_tokens,
                                  do_sample=False, batch_size=config.batch_size)  # fmt: skip
        return greedy.accuracy

    transfer_rules = subset_config(TaskConfig.preset(config.task_preset)).rules
    counts = per_task_counts(scored, config.samples, prompt.rules)
    rows = {
        **sample_metrics(scored, counts, config.samples),
        "ood_accuracy": {
            "value": accuracy(data.unseen),
            "more_numbers": accuracy(data.more_numbers),
            "in_distribution": accuracy(data.tasks),
            "sample_accuracy": scored.accuracy,
        },
        "kl_to_base": {"value": float(kl.sum() / tokens), "per_sequence": float(kl.sum(1).mean()), "estimator": "exact, on the checkpoint's samples"},
        "hidden_state_shift": {"value": shift["l2"], "relative": shift["relative"], "cosine": shift["cosine"]},
        "transfer": {"value": accuracy(data.transfer, transfer_rules), "family": "any subset", "n": len(data.transfer)},
    }  # fmt: skip
    return rows, counts, completion_rows(scored, step), states


def per_task_counts(scored: Any, n: int, rules: Rules) -> dict[str, list[int]]:
    """Per held-out task (`n` consecutive samples of `scored` each): `correct` samples and `distinct`
    correct solutions under `rules`. Kept per step in steps.jsonl: a change between two steps is
    tested task by task, on the same tasks in the same order."""
    correct = scored.correct
    groups = [range(i, i + n) for i in range(0, len(correct), n)]
    return {
        "correct": [sum(correct[j] for j in group) for group in groups],
        "distinct": [analysis.distinct_solutions([scored.samples[j].score.answer for j in group if correct[j]], rules) for group in groups],
    }


def interval_fields(name: str, estimate: analysis.Estimate) -> dict[str, float]:
    """`name`, `name_lo`, `name_hi` of an estimate (the columns of analysis.json and analysis.csv)."""
    return {name: estimate.value, f"{name}_lo": estimate.lo, f"{name}_hi": estimate.hi}


def sample_metrics(scored: Any, counts: dict[str, list[int]], n: int) -> dict[str, dict[str, Any]]:
    """reflection_ratio, response_length, pass_at_k (k = 1..n/2, `value` at the largest) and
    distinct_solutions of `scored` (`runtime.sampling.Scored`), `n` consecutive samples per task
    with `counts` (`per_task_counts`); pass@k and distinct solutions with 95% intervals over tasks."""
    correct, lengths = scored.correct, scored.generation.lengths.tolist()
    reflections = [analysis.reflection_ratio(text) for text in scored.texts]
    curve = analysis.pass_at_k_estimates(counts["correct"], n)
    k = max(curve)
    distinct = counts["distinct"]
    refl, length = analysis.split_mean(reflections, correct), analysis.split_mean(lengths, correct)
    n_correct = sum(correct)
    return {
        "reflection_ratio": {"value": refl["all"], "correct": refl["correct"], "wrong": refl["wrong"], "n_correct": n_correct, "n_wrong": len(correct) - n_correct},
        "response_length": {"value": length["all"], "correct": length["correct"], "wrong": length["wrong"], "unit": "tokens"},
        "pass_at_k": {**interval_fields("value", curve[k]), "k": k, "n": n, "tasks": len(distinct),
                      **{f: v for j, e in curve.items() for f, v in interval_fields(f"pass@{j}", e).items()}},
        "distinct_solutions": {**interval_fields("value", analysis.mean_estimate(distinct)), "tasks": len(distinct),
                               "per_solved_task": float(np.mean([d for d in distinct if d])) if any(distinct) else 0.0},
    }  # fmt: skip


def completion_rows(scored: Any, step: int) -> list[dict[str, Any]]:
    """completions.jsonl rows of one step's samples (for `countdown-lab classify`)."""
    return [
        {
            "step": step,
            "text": s.text,
            "numbers": list(s.task.numbers),
            "target": s.task.target,
            "correct": s.score.correct,
            "answer": s.score.answer,
            "length": s.length,
        }
        for s in scored.samples
    ]


def tested_values(step_row: dict[str, Any]) -> dict[tuple[str, str], np.ndarray]:
    """The per-task values of the measures whose change is tested against the noise, keyed (metric,
    field prefix): pass@1, pass@k at the row's `value` (k = n/2) and distinct solutions; {} for a step
    analysed before per-task counts were kept."""
    counts, row = step_row.get("per_task"), step_row["metrics"]["pass_at_k"]
    if not counts or "k" not in row:
        return {}
    return {
        ("pass_at_k", "pass@1_"): analysis.task_pass_at_k(counts["correct"], row["n"], 1),
        ("pass_at_k", f"pass@{row['k']}_"): analysis.task_pass_at_k(counts["correct"], row["n"], row["k"]),
        ("distinct_solutions", ""): np.asarray(counts["distinct"], dtype=float),
    }


def changes_from_first(steps: list[dict[str, Any]]) -> dict[int, dict[tuple[str, str], analysis.Estimate]]:
    """step -> each tested measure's change from the first step (in step order), paired by task; a
    measure is left out where the two steps did not see the same number of tasks."""
    if not steps:
        return {}
    first = tested_values(steps[0])
    out: dict[int, dict[tuple[str, str], analysis.Estimate]] = {}
    for row in steps[1:]:
        now = tested_values(row)
        out[row["step"]] = {m: analysis.paired_change(first[m], v) for m, v in now.items() if m in first and len(first[m]) == len(v)}
    return out


def change_fields(changes: dict[tuple[str, str], analysis.Estimate], key: str) -> dict[str, Any]:
    """Metric `key`'s `<prefix>change`, `_lo`, `_hi` and `<prefix>outside_noise` columns of one step."""
    out: dict[str, Any] = {}
    for (metric, prefix), change in changes.items():
        if metric == key:
            out.update(interval_fields(f"{prefix}change", change))
            out[f"{prefix}outside_noise"] = change.outside_noise
    return out


def build_report(steps: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """analysis.json from the per-step rows: each metric a list of `{step, value, ...}` rows in step
    order (pass@k and distinct solutions with their changes from the first step), plus `degradation`
    (steps where accuracy fell while length and reflection rose)."""
    steps = sorted(steps, key=lambda row: row["step"])
    changes = changes_from_first(steps)
    report: dict[str, list[dict[str, Any]]] = {
        key: [{"step": s["step"], **s["metrics"][key], **change_fields(changes.get(s["step"], {}), key)} for s in steps] for key in METRICS
    }
    acc = [s["metrics"]["ood_accuracy"]["in_distribution"] or 0.0 for s in steps]
    length = [s["metrics"]["response_length"]["value"] or 0.0 for s in steps]
    refl = [s["metrics"]["reflection_ratio"]["value"] or 0.0 for s in steps]
    flags = analysis.degradation_flags([s["step"] for s in steps], acc, length, refl)
    report["degradation"] = [
        {"step": f.step, "value": f.flagged, **{k: v for k, v in asdict(f).items() if k not in ("step", "flagged")}} for f in flags
    ]
    return report


def analyze(
    run_dir: Path, base_model: str, output: Path, config: AnalyzeConfig, *, log: Callable[[str], None] = print
) -> dict[str, list[dict[str, Any]]]:
    """Measure every planned step not yet in `output/steps.jsonl`, appending as it goes; returns analysis.json's content."""
    from runtime.models import load_model, load_tokenizer

    todo = plan(run_dir, base_model)
    check_models(todo)  # before the settings are recorded: a bad --base-model must not lock the output folder
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = output / "config.json"
    wanted = {**asdict(config), "run_dir": str(run_dir), "base_model": str(base_model)}
    if settings.exists() and json.loads(settings.read_text()) != wanted:
        raise UsageError(f"{output} holds an analysis with other settings ({settings}); choose another --output-dir")
    write_text_atomic(settings, json.dumps(wanted, indent=2))
    if todo.skipped:
        log(
            f"analyze: evaluated steps without a checkpoint, skipped: {todo.skipped} (set save_every = eval_every and keep enough checkpoints)"
        )
    done = {row["step"]: row for row in read_jsonl(output / "steps.jsonl")} if (output / "steps.jsonl").exists() else {}
    data = held_out(config)
    tokenizer = load_tokenizer(base_model)
    base = load_model(base_model).eval()
    prompt = Prompt.of_preset(config.task_preset, config.prompt_style)
    base_states = analysis.mean_hidden_states(base, tokenizer, [prompt.render(t, tokenizer) for t in data.tasks],
                                              prompt_style=config.prompt_style, batch_size=config.batch_size)  # fmt: skip
    (output / "hidden").mkdir(exist_ok=True)
    pending = [s for s in todo.models if s not in done]
    log(f"analyze: {len(todo.models)} steps {sorted(todo.models)}; {len(done)} done, {len(pending)} to go; "
        f"{len(data.tasks)} test tasks x {config.samples} samples")  # fmt: skip
    for i, step in enumerate(pending, 1):
        started = time.perf_counter()
        model = base if step == 0 else load_model(todo.models[step]).eval()
        rows, counts, completions, states = measure(model, base, tokenizer, data, config, base_states, step)
        np.save(output / "hidden" / f"step-{step:06d}.npy", states)
        append_jsonl(output / "completions.jsonl", completions)
        append_jsonl(output / "steps.jsonl", [{"step": step, "model": todo.models[step], "metrics": rows, "per_task": counts}])
        done[step] = {"step": step, "metrics": rows, "per_task": counts}
        write_text_atomic(output / "analysis.json", json.dumps(build_report(list(done.values())), indent=1))
        m = rows
        log(
            f"analyze: [{i}/{len(pending)}] step {step}: pass@1 {_interval(m['pass_at_k'], 'pass@1')} "
            f"pass@{m['pass_at_k']['k']} {_interval(m['pass_at_k'], 'value')} distinct {_interval(m['distinct_solutions'], 'value')} "
            f"KL {m['kl_to_base']['value']:.4f} shift {m['hidden_state_shift']['value']:.3f} ({time.perf_counter() - started:.0f}s)"
        )
    report = build_report(list(done.values()))
    write_text_atomic(output / "analysis.json", json.dumps(report, indent=1))
    write_text_atomic(output / "analysis.csv", csv_text(noise_rows(report)))
    from lab.analysis.plots import plot_report

    plot_report(report, load_hidden(output), output)
    return report


def _interval(row: dict[str, Any], name: str) -> str:
    return f"{row[name]:.3f} [{row[f'{name}_lo']:.3f}, {row[f'{name}_hi']:.3f}]"


def noise_rows(report: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """analysis.csv: one row per step with pass@k for every k and distinct solutions per task, each with
    `_lo`/`_hi`, and the changes from the first step with `_outside_noise` (steps in the report's order)."""
    distinct = {row["step"]: row for row in report.get("distinct_solutions", [])}
    out = []
    for row in report.get("pass_at_k", []):
        d = distinct.get(row["step"], {})
        passes = {f: v for f, v in row.items() if f.startswith("pass@")}
        # distinct_solutions' row names its columns value, value_lo, change, ...: prefixed here, as pass@k's are
        named = {("distinct_solutions" + ("" if f == "value" else "_" + f.removeprefix("value_"))): v
                 for f, v in d.items() if f.startswith(("value", "change", "outside_noise"))}  # fmt: skip
        out.append({"step": row["step"], "tasks": row.get("tasks"), "samples": row.get("n"), **passes, **named})
    return out


def csv_text(rows: list[dict[str, Any]]) -> str:
    """`rows` as CSV, columns in first-seen order (a resumed older step may lack some: empty cells)."""
    columns = list(dict.fromkeys(c for row in rows for c in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def noise_table(report: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The printed table: per step, pass@1, pass@k (k = n/2) and distinct solutions with their 95%
    intervals and their change from the first step, `*` marking a change outside the noise."""
    rows = report.get("pass_at_k", [])
    if not rows or "k" not in rows[-1]:
        return []
    k, first = rows[-1]["k"], rows[0]["step"]
    measures = {"pass@1": "pass@1", f"pass@{k}": f"pass@{k}", "distinct_solutions": "distinct"}  # column -> title
    lines = [(f"{'step':>6} {'tasks':>5}  " + "".join(f"{title + ' [95%]':<22} {'change':<8}" for title in measures.values())).rstrip()]
    for row in noise_rows(report):
        cells = []
        for name in measures:
            value = _interval(row, name) if f"{name}_lo" in row else "-"
            change = f"{row[f'{name}_change']:+.3f}{'*' if row[f'{name}_outside_noise'] else ''}" if f"{name}_change" in row else ""
            cells.append(f"{value:<22} {change:<8}")
        lines.append(f"{row['step']:>6} {row['tasks'] or '':>5}  " + "".join(cells).rstrip())
    lines.append(
        f"[95%]: bootstrap over tasks; change: from step {first}, paired by task; * outside the noise (its interval excludes 0), "
        "else inside it. Intervals of the changes: analysis.csv"
    )
    return lines


def load_hidden(output: Path) -> dict[int, np.ndarray]:
    """step -> (N, H) mean hidden states saved by `analyze`."""
    out = {}
    for path in sorted((Path(output) / "hidden").glob("step-*.npy")):
        out[int(path.stem.split("-")[1])] = np.load(path)
    return out


def flagged_lines(report: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [
        f"step {row['step']}: accuracy fell while length and reflection rose (long-CoT degradation)"
        for row in report.get("degradation", [])
        if row["value"]
    ]


def run_dirs(path: Path) -> list[Path]:
    """The run directories under `path`: itself if it holds checkpoints, else an experiment's `runs/*` that do."""
    path = Path(path)
    if run_checkpoints(path):
        return [path]
    return [run for run in sorted((path / "runs").glob("*")) if run.is_dir() and run_checkpoints(run)]


def start_model(run_dir: Path) -> str | None:
    """The model a run started from (its config's `model`), resolved against the working directory, then the run's ancestors."""
    path = Path(run_dir) / "config.json"
    model = json.loads(path.read_text()).get("model") if path.is_file() else None
    if not model or Path(model).is_absolute() or Path(model).exists():
        return model or None
    for parent in Path(run_dir).resolve().parents:
        if (parent / model).exists():
            return str(parent / model)
    return model


def analyze_all(
    path: Path, overrides: dict[str, Any] | None = None, *, log: Callable[[str], None] = print
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """run name -> analysis.json content for every run under `path` (a run or an experiment directory),
    each analysed into `<run>/analysis` against the model it started from (resumes what is there)."""
    runs = run_dirs(path)
    if not runs:
        raise UsageError(f"{path} holds no run with checkpoints (a run directory, or an experiment directory with runs/*)")
    out = {}
    for run in runs:
        base = start_model(run)
        if base is None:
            log(f"analyze: {run.name}: no `model` in its config.json; skipped")
            continue
        config = AnalyzeConfig(**{**run_settings(run), **(overrides or {})})
        out[run.name] = analyze(run, base, run / "analysis", config, log=log)
    return out
