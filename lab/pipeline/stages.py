"""The stages of one run, each skipped when its marker says it is done, each resumable.

    tasks (per seed, shared by every run) -> start model -> [traces -> SFT] -> RL -> judge

A run directory holds the RL run (contract: config.json, metrics.jsonl, rollouts.jsonl, checkpoints/),
plus `traces/`, `sft/`, `*_classified.jsonl`, `run.json` (base, condition, seed) and `.done/<stage>`.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from countdown_env import Task, generate_tasks, read_tasks, write_tasks
from countdown_env.errors import UsageError
from lab.pipeline.config import ExperimentConfig, RunSpec, has_dev_split

TASK_FILES = ("sft", "rl", "eval")


def done(run: Path, stage: str) -> bool:
    return (run / ".done" / stage).exists()


def mark(run: Path, stage: str, info: dict[str, Any] | None = None) -> None:
    from countdown_env.files import write_text_atomic

    (run / ".done").mkdir(parents=True, exist_ok=True)
    write_text_atomic(run / ".done" / stage, json.dumps(info or {}))


def task_files(config: ExperimentConfig) -> tuple[str, ...]:
    return (*TASK_FILES, "dev", "test") if has_dev_split(config.task_preset) else TASK_FILES


def make_tasks(config: ExperimentConfig, seed: int, root: Path) -> dict[str, list[Task]]:
    """SFT, RL and eval tasks of one seed, shared by every run (so runs differ only in start and priming).

    SFT and RL tasks are disjoint slices of the train split. Eval tasks come from the test split; with a
    preset that has a dev split, they are `num_eval_tasks` test tasks then as many dev tasks (`test`, `dev`),
    evaluated together at every evaluation and reported apart."""
    folder = root / "tasks" / f"seed-{seed}"
    paths = {name: folder / f"{name}.jsonl" for name in task_files(config)}
    if all(p.exists() for p in paths.values()):
        return {name: read_tasks(p) for name, p in paths.items()}
    train = generate_tasks(config.num_sft_tasks + config.num_rl_tasks, seed=seed, preset=config.task_preset, split="train")
    if len(train) < config.num_sft_tasks + config.num_rl_tasks:
        raise UsageError(f"preset {config.task_preset!r} has too few distinct tasks; lower num_sft_tasks/num_rl_tasks")
    tasks = {"sft": train[: config.num_sft_tasks], "rl": train[config.num_sft_tasks :]}
    if has_dev_split(config.task_preset):
        for split in ("dev", "test"):
            tasks[split] = generate_tasks(config.num_eval_tasks, seed=seed, preset=config.task_preset, split=split)
        tasks["eval"] = tasks["test"] + tasks["dev"]  # test first: `eval_samples` T=1 samples cover the test split
    else:
        tasks["eval"] = generate_tasks(config.num_eval_tasks, seed=seed, preset=config.task_preset, split="test")
    for name, items in tasks.items():
        write_tasks(items, paths[name])
    return tasks


def start_model(config: ExperimentConfig, root: Path, spec: RunSpec, seed: int) -> str:
    """The model a run starts from: an organism base (cached), the given model, or the embedded
    default initialised with the run's seed (so seeds differ in weights too)."""
    if config.start == "organism":
        from organism.pretrain import base_dir

        return str(base_dir(config.bases_cache, config.bases_seed(seed), spec.base or "") / "model")
    if config.model:
        return config.model
    from runtime.models import default_model

    return str(default_model(root / "models", config.arch, config.size, seed=seed))


def trace_rows(config: ExperimentConfig, spec: RunSpec, seed: int, tasks: list[Task]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The priming rows (prompt/completion) of a run and what made them (for the metadata)."""
    from countdown_env import preset_rules
    from priming.export import with_prompt

    rules = preset_rules(config.task_preset)  # as the RL stage's `PPOConfig.rules`
    n = config.num_traces or len(tasks)
    if config.trace_style == "organism":
        from countdown_env import score_response
        from organism.text import GENERATOR_VERSION, priming_rows

        rows = priming_rows(
            tasks,
            spec.condition or "",
            n,
            seed=seed,
            incorrect=spec.incorrect_kind,
            max_tries=config.max_tries,
            order=config.search_order,
            min_tries=config.min_tries,
            give_up=config.give_up,
        )
        rows = [{**row, "text": row["completion"], "correct": score_response(row["completion"], Task(tuple(row["numbers"]), row["target"]), rules).correct}
                for row in rows]  # fmt: skip
        return rows, {
            "generator": "organism",
            "generator_version": GENERATOR_VERSION,
            "max_tries": config.max_tries,
            "search_order": config.search_order,
            **({"min_tries": config.min_tries} if config.min_tries is not None else {}),
            **({"give_up": config.give_up} if config.give_up is not None else {}),
        }
    from priming.traces import GENERATOR_VERSION, TraceConfig, generate_trace

    overrides = {"max_chars": config.trace_max_chars} if config.trace_max_chars else {}
    trace_config = TraceConfig.for_style(config.trace_style, **overrides)
    traces = [
        generate_trace(tasks[i % len(tasks)], spec.condition or "", seed=seed, index=i, incorrect=spec.incorrect_kind is not None,
                       incorrect_kind=spec.incorrect_kind, config=trace_config, rules=rules)
        for i in range(n)
    ]  # fmt: skip
    rows = [with_prompt(trace.to_dict(), config.prompt_style, rules) for trace in traces]
    return rows, {"generator": "synthetic", "generator_version": GENERATOR_VERSION, "trace_config": asdict(trace_config)}


def stage_traces(config: ExperimentConfig, run: Path, spec: RunSpec, seed: int, tasks: list[Task]) -> Path:
    from priming.export import write_prime_output

    out = run / "traces"
    if done(run, "traces"):
        return out
    rows, made_by = trace_rows(config, spec, seed, tasks)
    metadata = {"condition": spec.condition, "incorrect": spec.incorrect_kind is not None, "incorrect_kind": spec.incorrect_kind,
                "seed": seed, "prompt_style": config.prompt_style, **made_by}  # fmt: skip
    write_prime_output(rows, out, metadata, test_size=0.05 if config.trace_style != "organism" else 0.0, seed=seed)
    mark(run, "traces", {"n": len(rows)})
    return out


def stage_sft(config: ExperimentConfig, run: Path, model: str, data: Path, seed: int, progress: bool) -> str:
    from priming.sft import last_checkpoint, run_sft

    out = run / "sft"
    if done(run, "sft"):
        return str(out / "model")
    sft = config.sft_config(model, str(data), str(out), seed)
    if config.start == "organism":  # tiny models: primed ones are cached with the bases, keyed by what made them
        from organism.bases import cached_primed, primed_key, store_primed

        key = primed_key(sft, data, Path(model))
        if (cached := cached_primed(config.bases_cache, key)) is not None:
            shutil.copytree(cached, out / "model", dirs_exist_ok=True)
            mark(run, "sft", {"cached": key})
            return str(out / "model")
    # Resume only from a saved checkpoint: the Trainer creates checkpoints/ before its first save.
    result = run_sft(sft, resume=last_checkpoint(sft) is not None, progress=progress)
    if config.start == "organism":
        store_primed(config.bases_cache, key, Path(result.model_dir))
    mark(run, "sft", {k: v for k, v in asdict(result).items() if isinstance(v, int | float | str)})
    return str(out / "model")


def rl_launch_command(config: ExperimentConfig, ppo: Any, run: Path, config_file: Path, tasks_file: Path, resume: bool) -> list[str]:
    """`accelerate launch` of `countdown-lab ppo` on `config.gpus` processes with the accelerate config of `ppo.sharding`."""
    from rl.config import CONFIG_DIR

    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
              "--config_file", str(CONFIG_DIR / "accelerate" / f"{ppo.sharding}.yaml"), "--num_processes", str(config.gpus)]  # fmt: skip
    command = [*launch, "-m", "lab.cli", "ppo", "--config", str(config_file), "--output-dir", str(run), "--tasks", str(tasks_file)]
    command += ["--report-to", config.report_to]
    return [*command, "--resume"] if resume else command


def stage_rl(config: ExperimentConfig, run: Path, model: str, seed: int, tasks: dict[str, list[Task]], progress: bool) -> None:
    """RL from `model` on the RL tasks, evaluating on the eval tasks (with a dev split: dev and test)."""
    if done(run, "rl"):
        return
    ppo = config.ppo_config(model, seed)
    resume = (run / "metrics.jsonl").exists()
    if config.gpus > 1:
        import subprocess

        import yaml

        config_file, tasks_file = run / "ppo_config.yaml", run / "ppo_tasks.jsonl"
        config_file.write_text(yaml.safe_dump(ppo.to_dict(), sort_keys=False))
        write_tasks(tasks["rl"], tasks_file)
        subprocess.run(rl_launch_command(config, ppo, run, config_file, tasks_file, resume), check=True)
    else:
        from rl.train import train

        eval_tasks = tasks["eval"] if has_dev_split(config.task_preset) else None
        train(ppo, run, tasks=tasks["rl"], eval_tasks=eval_tasks, resume=resume, progress=progress, report_to=config.report_to)
    mark(run, "rl")


def make_judge(config: ExperimentConfig) -> Any:
    if config.judge == "heuristic":
        from behavior_classifier import HeuristicJudge

        return HeuristicJudge()
    from behavior_classifier import JudgeConfig, LLMJudge

    return LLMJudge(JudgeConfig(base_url=config.judge_base_url, model=config.judge_model))


def stage_judge(config: ExperimentConfig, run: Path) -> None:
    """Behaviour counts of the training rollouts and of the held-out completions of every evaluation
    (`lab.pipeline.summary.SOURCES` labels them `rollouts` and `heldout`). `classify_file` resumes, so a
    re-run after a kill repeats no finished request."""
    from behavior_classifier import classify_file

    if done(run, "classify"):
        return
    judge = make_judge(config)
    for name in ("rollouts", "eval_completions"):
        if (run / f"{name}.jsonl").exists():
            classify_file(run / f"{name}.jsonl", run / f"{name}_classified.jsonl", judge, progress=False)
    mark(run, "classify")
