"""The study's experiment in miniature: for each condition and seed, prime, SFT, PPO, classify.

Every stage writes its output to disk and a marker when it finishes, so re-running the same
command skips what is done and resumes what was interrupted (SFT and PPO resume from their
own checkpoints). Layout of an experiment directory:

    experiment.json                  the resolved ExperimentConfig
    tasks/seed-<s>/{sft,rl,eval}.jsonl
    runs/<condition>-seed<s>/        a run directory (contract): config.json, metrics.jsonl,
        traces/                      rollouts.jsonl, checkpoints/ (PPO), plus the priming
        sft/                         traces, the SFT run, classified rollouts and stage markers
        rollouts_classified.jsonl    behaviour counts of training rollouts (source `rollouts`)
        eval_completions_classified.jsonl   of held-out completions (source `heldout`: T=1 samples with eval_samples > 0)
        .done/<stage>
    summary.csv, summary.md, frequencies.csv, plots/*.png
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from countdown_env import Task, generate_tasks, read_tasks, write_tasks
from countdown_env.errors import UsageError
from runtime.config import load_dataclass

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "tiny-cpu"
INCORRECT_SUFFIX = "_incorrect"
SFT_SET_BY_EXPERIMENT = frozenset({"model", "data", "output_dir", "seed", "prompt_style", "report_to"})
PPO_SET_BY_EXPERIMENT = frozenset({"model", "seed", "task_preset", "num_eval_tasks", "prompt_style", "eval_samples"})
NO_PRIMING = "none"


def parse_condition(name: str) -> tuple[str | None, bool]:
    """'all_strategies_incorrect' (or '..._incorrect_slip', '..._incorrect_ranout') -> ('all_strategies', True);
    'none' -> (None, False). The kind of wrong answer: `incorrect_kind_of`."""
    from priming import CONDITIONS, INCORRECT_KINDS

    if name == NO_PRIMING:
        return None, False
    base, incorrect = name, False
    for suffix in (INCORRECT_SUFFIX, *(f"{INCORRECT_SUFFIX}_{kind}" for kind in INCORRECT_KINDS)):
        if name.endswith(suffix) and name[: -len(suffix)] in CONDITIONS:
            base, incorrect = name[: -len(suffix)], True
    if base not in CONDITIONS:
        kinds = "|".join(INCORRECT_KINDS)
        choices = sorted([*CONDITIONS, NO_PRIMING]) + [f"<condition>{INCORRECT_SUFFIX}", f"<condition>{INCORRECT_SUFFIX}_<{kinds}>"]
        raise ValueError(f"unknown condition {name!r}; choose from {choices}")
    return base, incorrect


def incorrect_kind_of(name: str) -> str | None:
    """How the traces of condition `name` are wrong: 'slip' for `<condition>_incorrect` and
    `<condition>_incorrect_slip`, 'ranout' for `<condition>_incorrect_ranout`, None for correct traces."""
    from priming import INCORRECT_KINDS

    base, incorrect = parse_condition(name)
    if not incorrect:
        return None
    suffix = name[len(base or "") + len(INCORRECT_SUFFIX) :]
    return suffix[1:] if suffix else INCORRECT_KINDS[0]


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: conditions x seeds, each primed, fine-tuned, trained with PPO and classified."""

    conditions: tuple[str, ...] = ("only_backtracking", "negative_control")
    """Priming conditions (`priming.CONDITIONS`), `<condition>_incorrect` for wrong-answer traces, or `none` (PPO from the base model)."""
    seeds: tuple[int, ...] = (0,)
    """One run per condition and seed; the seed drives tasks, traces, SFT and PPO."""
    model: str = ""
    """Base model path or hub id; empty: the embedded default (a local `arch`/`size` model built from a config)."""
    arch: str = "qwen2"
    """Architecture of the embedded default model (`llama` or `qwen2`)."""
    size: str = "small"
    """Size of the embedded default model (`tiny`, `small`, `base`)."""
    task_preset: str = "tiny"
    """countdown_env task preset for priming, RL and evaluation tasks."""
    num_sft_tasks: int = 2000
    """Tasks with one priming trace each (from the train split)."""
    num_rl_tasks: int = 2000
    """RL prompts (train split, disjoint from the SFT tasks and the eval tasks)."""
    num_eval_tasks: int = 200
    """Held-out tasks (test split) for the greedy evaluation during PPO."""
    eval_samples: int = 0
    """Held-out completions sampled at T=1 at each evaluation and classified (source `heldout`), as the study did
    (200 in `paper-3b`); 0: the greedy completions are classified instead."""
    prompt_style: str = "compact"
    """Prompt template for SFT, PPO and evaluation (`compact` for tiny models, `tinyzero` for real LMs)."""
    trace_style: str = "compact"
    """Trace phrasing (`compact` short phrases for tiny models, `full` sentences)."""
    trace_max_chars: int | None = None
    """Longest priming trace in characters (None: the style's default)."""
    sft_preset: str = "tiny-cpu"
    """`priming.sft` preset (`tiny-cpu` or `paper-3b`)."""
    sft: dict[str, Any] = field(default_factory=dict)
    """Overrides of `priming.sft.SFTRunConfig` fields (e.g. {"max_steps": 300})."""
    ppo_preset: str = "tiny-cpu"
    """`rl/configs` preset name or a YAML path for PPO."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """Overrides of `rl.config.PPOConfig` fields (e.g. {"total_steps": 50})."""
    judge: str = "heuristic"
    """Behaviour judge for the rollouts: `heuristic` (offline) or `openai` (any OpenAI-compatible endpoint)."""
    judge_base_url: str | None = None
    """Base URL of the judge endpoint (judge=openai); the key comes from OPENAI_API_KEY."""
    judge_model: str | None = None
    """Judge model name (judge=openai)."""
    report_to: str = "none"
    """Also log SFT and PPO metrics to a tracker: none, tensorboard, wandb or trackio (metrics.jsonl is always written)."""
    jobs: int = 1
    """Runs in parallel (one process each, one thread each: on 2 cores, 2 one-thread jobs beat one two-thread job)."""
    gpus: int = 0
    """GPUs for the PPO stage: 0 = this process (CPU or one GPU, as before); >= 1 = first check with
    `countdown-lab plan` that PPO fits, refusing up front if not; > 1 = PPO under `accelerate launch`, one
    process per GPU, with the accelerate config of the PPO config's `sharding` (rl/configs/accelerate/)."""
    gpu_memory_gb: float = 80.0
    """Memory of one GPU in GB, for the `plan` check (gpus >= 1)."""

    def __post_init__(self) -> None:
        from countdown_env import PRESETS

        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.conditions or not self.seeds:
            raise ValueError("an experiment needs at least one condition and one seed")
        for name in self.conditions:
            parse_condition(name)
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"conditions has duplicates: {self.conditions}")
        if self.task_preset not in PRESETS:
            raise ValueError(f"task_preset must be one of {sorted(PRESETS)}, got {self.task_preset!r}")
        if self.gpus < 0 or self.gpu_memory_gb <= 0:
            raise ValueError(f"gpus must be >= 0 and gpu_memory_gb > 0, got {self.gpus} and {self.gpu_memory_gb}")
        if self.gpus > 1 and self.jobs > 1:
            raise ValueError("gpus > 1 runs each PPO stage on every GPU: set jobs=1")
        for name in ("num_sft_tasks", "num_rl_tasks", "num_eval_tasks", "jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.eval_samples <= self.num_eval_tasks:
            raise ValueError(f"eval_samples must be in 0..num_eval_tasks ({self.num_eval_tasks}), got {self.eval_samples}")
        self._check_overrides()
        from runtime.tracking import REPORT_TO

        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.judge not in ("heuristic", "openai"):
            raise ValueError(f"judge must be 'heuristic' or 'openai', got {self.judge!r}")
        if self.judge == "openai" and not (self.judge_base_url and self.judge_model):
            raise ValueError("judge=openai needs judge_base_url and judge_model")

    def _check_overrides(self) -> None:
        """Fail now, not hours later when the stage starts, on a bad style or override."""
        from countdown_env.rules import PROMPT_STYLES
        from priming.render import STYLES
        from priming.sft import SFTRunConfig
        from rl.config import PPOConfig

        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {sorted(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if self.trace_style not in STYLES:
            raise ValueError(f"trace_style must be one of {STYLES}, got {self.trace_style!r}")
        for name, cls, owned in (("sft", SFTRunConfig, SFT_SET_BY_EXPERIMENT), ("ppo", PPOConfig, PPO_SET_BY_EXPERIMENT)):
            overrides = getattr(self, name)
            if not isinstance(overrides, dict):
                raise ValueError(f"{name} must be a mapping of {cls.__name__} fields, got {overrides!r}")
            unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"{name} overrides {unknown} are not {cls.__name__} fields")
            clash = sorted(set(overrides) & owned)
            if clash:
                raise ValueError(
                    f"{name} overrides {clash} are set by the experiment itself; use the experiment's own fields (seeds, model, prompt_style, ...)"
                )

    @classmethod
    def load(cls, preset_or_path: str, **overrides: Any) -> ExperimentConfig:
        """A preset name (`lab/presets/<name>.yaml`) or a YAML path, with overrides (None values ignored)."""
        return load_experiment(preset_or_path, {k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_experiment(source: str | Path = DEFAULT_PRESET, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """A preset name (`lab/presets/<name>.yaml`) or a YAML path, then `overrides`, each value typed by its field."""
    return load_dataclass(ExperimentConfig, source, overrides, PRESET_DIR, what="experiment")


# ---- stages -------------------------------------------------------------------------


def _done(run: Path, stage: str) -> bool:
    return (run / ".done" / stage).exists()


def _mark(run: Path, stage: str, info: dict[str, Any] | None = None) -> None:
    (run / ".done").mkdir(parents=True, exist_ok=True)
    (run / ".done" / stage).write_text(json.dumps(info or {}))


def make_tasks(config: ExperimentConfig, seed: int, root: Path) -> dict[str, list[Task]]:
    """SFT, RL and eval tasks for one seed, shared by every condition (so conditions differ only in priming).

    SFT and RL tasks are disjoint slices of the train split; eval tasks come from the test split.
    """
    folder = root / "tasks" / f"seed-{seed}"
    paths = {name: folder / f"{name}.jsonl" for name in ("sft", "rl", "eval")}
    if all(p.exists() for p in paths.values()):
        return {name: read_tasks(p) for name, p in paths.items()}
    train = generate_tasks(config.num_sft_tasks + config.num_rl_tasks, seed=seed, preset=config.task_preset, split="train")
    if len(train) < config.num_sft_tasks + config.num_rl_tasks:
        raise UsageError(f"preset {config.task_preset!r} has too few distinct tasks; lower num_sft_tasks/num_rl_tasks")
    tasks = {
        "sft": train[: config.num_sft_tasks],
        "rl": train[config.num_sft_tasks :],
        "eval": generate_tasks(config.num_eval_tasks, seed=seed, preset=config.task_preset, split="test"),
    }
    for name, items in tasks.items():
        write_tasks(items, paths[name])
    return tasks


def base_model(config: ExperimentConfig, root: Path, seed: int) -> str:
    """The given model, or the embedded default initialised with the run's seed (seeds differ in weights too)."""
    if config.model:
        return config.model
    from rl.models import default_model

    return str(default_model(root / "models", config.arch, config.size, seed=seed))


def stage_traces(
    config: ExperimentConfig, run: Path, condition: str, incorrect: bool, seed: int, tasks: list[Task], incorrect_kind: str | None = None
) -> Path:
    from countdown_env import preset_rules
    from priming.export import with_prompt, write_prime_output
    from priming.traces import GENERATOR_VERSION, TraceConfig, generate_trace

    out = run / "traces"
    if _done(run, "traces"):
        return out
    overrides = {"max_chars": config.trace_max_chars} if config.trace_max_chars else {}
    trace_config = TraceConfig.for_style(config.trace_style, **overrides)
    # The task preset's rules (e.g. classic: numbers at most once), as the PPO stage's `PPOConfig.rules`.
    rules = preset_rules(config.task_preset)
    traces = [
        generate_trace(
            t, condition, seed=seed, index=i, incorrect=incorrect, incorrect_kind=incorrect_kind, config=trace_config, rules=rules
        )
        for i, t in enumerate(tasks)
    ]
    rows = [with_prompt(trace.to_dict(), config.prompt_style, rules) for trace in traces]
    metadata = {"condition": condition, "incorrect": incorrect, "seed": seed, "generator": "synthetic", "generator_version": GENERATOR_VERSION,
                "prompt_style": config.prompt_style, "trace_config": asdict(trace_config)}  # fmt: skip
    write_prime_output(rows, out, metadata, test_size=0.05, seed=seed)
    _mark(run, "traces", {"n": len(rows)})
    return out


def stage_sft(config: ExperimentConfig, run: Path, model: str, data: Path, seed: int) -> str:
    from priming.sft import SFTRunConfig, last_checkpoint, run_sft

    out = run / "sft"
    if not _done(run, "sft"):
        sft = SFTRunConfig.from_preset(config.sft_preset, model=model, data=str(data), output_dir=str(out), seed=seed,
                                       prompt_style=config.prompt_style, report_to=config.report_to, **config.sft)  # fmt: skip
        # Resume only from a saved checkpoint: the Trainer creates checkpoints/ before its first save.
        result = run_sft(sft, resume=last_checkpoint(sft) is not None, progress=True)
        _mark(run, "sft", {k: v for k, v in asdict(result).items() if isinstance(v, int | float | str)})
    return str(out / "model")


def ppo_config(config: ExperimentConfig, model: str, seed: int) -> Any:
    """The PPO stage's config: the preset, the experiment's overrides, then what the experiment sets itself."""
    from rl.config import load_config

    return load_config(config.ppo_preset, {**config.ppo, "model": model, "seed": seed, "task_preset": config.task_preset,
                                           "num_eval_tasks": config.num_eval_tasks, "prompt_style": config.prompt_style,
                                           "eval_samples": config.eval_samples})  # fmt: skip


def check_ppo_fits(config: ExperimentConfig) -> None:
    """With GPUs configured, refuse before any stage runs when `countdown-lab plan` says PPO will not fit.
    The base model stands for the primed one (priming changes weights, not shapes)."""
    if config.gpus < 1:
        return
    from rl.plan import check_fits

    check_fits(ppo_config(config, config.model, config.seeds[0]), config.gpus, config.gpu_memory_gb)


def ppo_launch_command(config: ExperimentConfig, ppo: Any, run: Path, config_file: Path, tasks_file: Path, resume: bool) -> list[str]:
    """`accelerate launch` of `countdown-lab ppo` on `config.gpus` processes with the accelerate config of `ppo.sharding`."""
    from rl.config import CONFIG_DIR

    launch = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
              "--config_file", str(CONFIG_DIR / "accelerate" / f"{ppo.sharding}.yaml"), "--num_processes", str(config.gpus)]  # fmt: skip
    command = [*launch, "-m", "lab.cli", "ppo", "--config", str(config_file), "--output-dir", str(run), "--tasks", str(tasks_file)]
    command += ["--report-to", config.report_to]
    return [*command, "--resume"] if resume else command


def stage_ppo(config: ExperimentConfig, run: Path, model: str, seed: int, tasks: list[Task]) -> None:
    if _done(run, "ppo"):
        return
    ppo = ppo_config(config, model, seed)
    resume = (run / "metrics.jsonl").exists()
    if config.gpus > 1:
        import subprocess

        import yaml

        config_file, tasks_file = run / "ppo_config.yaml", run / "ppo_tasks.jsonl"
        config_file.write_text(yaml.safe_dump(ppo.to_dict(), sort_keys=False))
        write_tasks(tasks, tasks_file)
        subprocess.run(ppo_launch_command(config, ppo, run, config_file, tasks_file, resume), check=True)
    else:
        from rl.train import train

        train(ppo, run, tasks=tasks, resume=resume, progress=True, report_to=config.report_to)
    _mark(run, "ppo")


def make_judge(config: ExperimentConfig) -> Any:
    if config.judge == "heuristic":
        from behavior_classifier import HeuristicJudge

        return HeuristicJudge()
    from behavior_classifier import JudgeConfig, LLMJudge

    return LLMJudge(JudgeConfig(base_url=config.judge_base_url, model=config.judge_model))


def stage_classify(config: ExperimentConfig, run: Path) -> None:
    """Behaviour counts of the training rollouts and of the held-out completions of every evaluation
    (`lab.summary.SOURCES` labels them `rollouts` and `heldout`). classify_file resumes, so a re-run after a
    kill repeats no finished request."""
    from behavior_classifier import classify_file

    if _done(run, "classify"):
        return
    judge = make_judge(config)
    for name in ("rollouts", "eval_completions"):
        if (run / f"{name}.jsonl").exists():
            classify_file(run / f"{name}.jsonl", run / f"{name}_classified.jsonl", judge, progress=False)
    _mark(run, "classify")


def check_same_config(config: ExperimentConfig, path: Path) -> None:
    """Refuse to resume an experiment directory made with other settings: its finished
    stages (tasks, traces, SFT, PPO) would be silently mixed with new ones."""
    if not path.exists():
        return
    before = json.loads(path.read_text())
    now = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as on disk
    # A field added since the directory was made counts as its default there, so old experiments still resume.
    defaults = json.loads(json.dumps(asdict(ExperimentConfig())))
    before = {**{k: v for k, v in defaults.items() if k not in before}, **before}
    # Adding conditions or seeds, or changing parallelism, leaves finished runs valid.
    free = {"jobs", "conditions", "seeds", "gpus", "gpu_memory_gb"}
    changed = sorted(k for k in set(before) | set(now) if k not in free and before.get(k) != now.get(k))
    if changed:
        raise UsageError(
            f"{path.parent} was made with different settings ({', '.join(changed)}); use a new --output-dir, or the same settings to resume"
        )


def run_one(config: ExperimentConfig, root: Path, name: str, seed: int) -> Path:
    """Every stage of one (condition, seed) run; each skipped if already done."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    condition, incorrect = parse_condition(name)
    run = root / "runs" / f"{name}-seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    tasks = make_tasks(config, seed, root)
    model = base_model(config, root, seed)
    if condition is not None:
        data = stage_traces(config, run, condition, incorrect, seed, tasks["sft"], incorrect_kind_of(name))
        model = stage_sft(config, run, model, data, seed)
    stage_ppo(config, run, model, seed, tasks["rl"])
    stage_classify(config, run)
    return run


def run_experiment(config: ExperimentConfig, output_dir: str | Path) -> Path:
    """All runs (in `config.jobs` parallel processes), then the summary table and plots."""
    check_ppo_fits(config)
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    check_same_config(config, root / "experiment.json")
    (root / "experiment.json").write_text(json.dumps(config.to_dict(), indent=2))
    for seed in config.seeds:  # before forking, so parallel runs never race to write them
        make_tasks(config, seed, root)
        base_model(config, root, seed)
    jobs = [(name, seed) for seed in config.seeds for name in config.conditions]
    start = time.perf_counter()
    if config.jobs == 1:
        for name, seed in jobs:
            print(f"== {name} seed {seed}", file=sys.stderr)
            run_one(config, root, name, seed)
    else:
        # spawn, not fork: forking a process that has loaded torch can deadlock its thread pools.
        with ProcessPoolExecutor(max_workers=config.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, config, root, name, seed): (name, seed) for name, seed in jobs}
            for future in as_completed(futures):
                future.result()  # re-raise a failed run here
                print(f"== finished {futures[future]}", file=sys.stderr)
    from lab.summary import summarize

    summarize(root)
    minutes = (time.perf_counter() - start) / 60
    (root / "timing.json").write_text(json.dumps({"minutes": round(minutes, 2), "runs": len(jobs), "jobs": config.jobs}))
    return root
