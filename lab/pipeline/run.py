"""`run_experiment`: every run of an experiment (in parallel processes), then the summary and plots.

Layout of an experiment directory:

    experiment.json                  the resolved ExperimentConfig
    tasks/seed-<s>/{sft,rl,eval}.jsonl
    runs/[<base>-]<condition>-seed<s>/   a run directory (lab.pipeline.stages)
    summary.csv, summary.md, frequencies.csv, plots/*.png, timing.json (the last command's), timings.jsonl (every command's)

Re-running the same command skips what is done and resumes what was interrupted; a directory made
with other settings is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from countdown_env.errors import UsageError
from countdown_env.files import write_text_atomic
from lab.pipeline import stages
from lab.pipeline.config import ExperimentConfig, RunSpec
from runtime.pool import in_pool
from runtime.run_dir import lock_folder

#: Fields that may change between invocations on one directory: finished runs stay valid.
FREE_FIELDS = frozenset({"jobs", "conditions", "seeds", "gpus", "gpu_memory_gb"})


def check_same_config(config: ExperimentConfig, path: Path) -> None:
    """Refuse to resume an experiment directory made with other settings: its finished
    stages (tasks, traces, SFT, RL) would be silently mixed with new ones."""
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text())
    except ValueError:
        raise UsageError(f"{path} is not valid JSON (a crash while it was written?); delete it to start that experiment afresh") from None
    now = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as on disk
    # A field added since the directory was made counts as its default there, so old experiments still resume.
    defaults = json.loads(json.dumps(asdict(ExperimentConfig())))
    before = {**{k: v for k, v in defaults.items() if k not in before}, **before}
    changed = sorted(k for k in set(before) | set(now) if k not in FREE_FIELDS and before.get(k) != now.get(k))
    if changed:
        raise UsageError(
            f"{path.parent} was made with different settings ({', '.join(changed)}); use a new --output-dir, or the same settings to resume"
        )


def check_fits(config: ExperimentConfig) -> None:
    """With GPUs configured, refuse before any stage runs when `countdown-lab plan` says RL will not fit.
    The start model stands for the primed one (priming changes weights, not shapes)."""
    if config.gpus < 1:
        return
    from rl.plan import check_fits as plan_check

    plan_check(config.ppo_config(config.model, config.seeds[0]), config.gpus, config.gpu_memory_gb)


def run_one(config: ExperimentConfig, root: Path, spec: RunSpec, seed: int) -> Path:
    """Every stage of one run; each skipped if already done."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    run = root / "runs" / spec.folder(seed)
    run.mkdir(parents=True, exist_ok=True)
    if spec.base:
        write_text_atomic(run / "run.json", json.dumps({"base": spec.base, "condition": spec.label, "seed": seed}) + "\n")
    progress = config.jobs == 1
    tasks = stages.make_tasks(config, seed, root)
    model = stages.start_model(config, root, spec, seed)
    if spec.condition is not None:
        data = stages.stage_traces(config, run, spec, seed, tasks["sft"])
        model = stages.stage_sft(config, run, model, data, seed, progress)
    stages.stage_rl(config, run, model, seed, tasks, progress)
    stages.stage_judge(config, run)
    return run


def _run_job(config: ExperimentConfig, root: str, name: str, seed: int) -> str:
    spec = next(s for s in config.runs() if s.name == name)
    return str(run_one(config, Path(root), spec, seed))


def prepare(config: ExperimentConfig, root: Path) -> None:
    """What every run shares, made before the runs fork so they never race on it: tasks, start models."""
    for seed in config.seeds:
        stages.make_tasks(config, seed, root)
    if config.start == "organism":
        from organism.bases import ensure_bases

        bases = sorted({s.base for s in config.runs() if s.base})
        ensure_bases(
            config.pretrain_config, config.bases_cache, sorted({config.bases_seed(seed) for seed in config.seeds}), bases, jobs=config.jobs
        )
        return
    for seed in config.seeds:
        stages.start_model(config, root, config.runs()[0], seed)


def run_experiment(config: ExperimentConfig, output_dir: str | Path) -> Path:
    """All runs (in `config.jobs` parallel processes), then the summary table and plots."""
    check_fits(config)
    if config.start == "model" and config.model:  # a missing path or an uncached hub id: one line, before experiment.json
        from runtime.models import PACKAGED_MODELS, check_model

        if config.model not in PACKAGED_MODELS:
            check_model(config.model, "model")
    root = Path(output_dir)
    check_same_config(config, root / "experiment.json")
    # One process per experiment directory: a second command on it is refused, not mixed into its runs.
    with lock_folder(root, "experiment directory"):
        check_same_config(config, root / "experiment.json")  # again, under the lock: another process may have just written it
        return _run_locked(config, root)


def _run_locked(config: ExperimentConfig, root: Path) -> Path:
    write_text_atomic(root / "experiment.json", json.dumps(config.to_dict(), indent=2))
    start = time.perf_counter()
    prepare(config, root)
    prepared = time.perf_counter()
    calls = [(config, str(root), spec.name, seed) for seed in config.seeds for spec in config.runs()]
    in_pool(config.jobs, calls, _run_job, "run")
    from lab.pipeline.summary import summarize

    summarize(root)
    timing = {"minutes": round((time.perf_counter() - start) / 60, 2), "prepare_minutes": round((prepared - start) / 60, 2),
              "runs": len(calls), "jobs": config.jobs}  # fmt: skip
    record_timing(root, {**timing, "conditions": list(config.conditions), "seeds": list(config.seeds)})
    return root


def record_timing(root: Path, timing: dict) -> None:
    """timing.json: this invocation's wall time (what the console and the benches read); timings.jsonl: every
    invocation's, appended. Conditions and seeds are free to change on resume, so a second command on the same
    directory (more runs) must not erase how long the first one took."""
    write_text_atomic(root / "timing.json", json.dumps(timing) + "\n")
    with open(root / "timings.jsonl", "a") as f:
        f.write(json.dumps(timing) + "\n")
