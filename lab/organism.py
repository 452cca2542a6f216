"""The study in miniature on tiny base models (`countdown-lab experiment --preset organism`).

    pretrain (cached per seed):  trunk -> rich base, poor base          (`priming.pretrain`)
    per run (base/condition, seed):
        poor/<priming>:  priming rows (`priming.organism`) -> SFT from the poor base
        every run:       RL (`rl.train`, critic-free group advantages) with held-out evaluation
        then:            behaviour counts of rollouts and held-out completions (heuristic judge)
    summary.csv (base, condition, seed, acc_before, acc_after, ...), plots per base/condition

Runs are the study's: `rich/none` and `poor/none` (the Qwen/Llama contrast: the same RL from a
base that has the behaviours or lacks them), and the poor base primed with `only_backtracking`,
its wrong-answer twin and `empty_cot` before the same RL. Every stage writes to disk and a
marker when it finishes, so re-running the command skips what is done and resumes the rest.

    experiment.json, timing.json, summary.csv, summary.md, frequencies.csv, plots/*.png
    tasks/seed-<s>/{sft,rl,eval}.jsonl
    runs/<base>-<condition>-seed<s>/   run.json, priming/ (rows, SFT run), metrics.jsonl,
                                       rollouts.jsonl, eval_completions.jsonl, checkpoints/, ...
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from countdown_env import Task, generate_tasks, read_tasks, write_tasks
from countdown_env.errors import UsageError
from lab.experiment import _done, _mark  # the stage markers every experiment shares

INCORRECT = "_incorrect"
#: Base models shipped with the package (seed 0), so `countdown-lab demo` can spend its minutes on RL.
SHIPPED_BASES = Path(__file__).parent / "bases"
NO_PRIMING = "none"


def parse_run(name: str) -> tuple[str, str, str | None]:
    """'poor/only_backtracking_incorrect_ranout' -> ('poor', 'only_backtracking', 'ranout');
    '<cond>_incorrect' means the default kind (`slip`), given back as 'slip'."""
    from priming.organism import INCORRECT_KINDS, ORGANISM_CONDITIONS
    from priming.pretrain import BASES

    base, sep, condition = name.partition("/")
    if not sep or base not in BASES:
        raise ValueError(f"a run is written <base>/<condition> with base in {BASES}, got {name!r}")
    kind = None
    for k in INCORRECT_KINDS:
        if condition.endswith(f"{INCORRECT}_{k}"):
            condition, kind = condition[: -len(f"{INCORRECT}_{k}")], k
            break
    else:
        if condition.endswith(INCORRECT):
            condition, kind = condition[: -len(INCORRECT)], INCORRECT_KINDS[0]
    if condition != NO_PRIMING and condition not in ORGANISM_CONDITIONS:
        raise ValueError(f"unknown organism condition in {name!r}; choose {NO_PRIMING}, {ORGANISM_CONDITIONS} (+ {INCORRECT}[_kind])")
    if condition == NO_PRIMING and kind:
        raise ValueError(f"{name!r}: 'none' has no incorrect variant")
    return base, condition, kind


@dataclass(frozen=True)
class OrganismConfig:
    """The organism experiment: runs x seeds, from cached pretrained bases."""

    runs: tuple[str, ...] = ("rich/none", "poor/none", "poor/only_backtracking", "poor/only_backtracking_incorrect", "poor/empty_cot")
    """`<base>/<condition>`: base `rich` or `poor`; condition `none` (RL from the base), `only_backtracking`,
    `only_backtracking_incorrect[_slip|_ranout]` (wrong final answers, same reasoning) or `empty_cot`."""
    seeds: tuple[int, ...] = (0, 1)
    """One run per entry of `runs` and seed; the seed drives the bases, tasks, priming and RL."""
    pretrain: dict[str, Any] = field(default_factory=dict)
    """Overrides of `priming.pretrain.PretrainConfig` fields (e.g. {"base_steps": 600})."""
    bases_cache: str = "runs/bases"
    """Where base models are cached (shared by experiments made with the same pretraining settings)."""
    num_sft_tasks: int = 700
    """Train-split tasks priming traces are written about (numbers reshuffled per row)."""
    num_rl_tasks: int = 800
    """Train-split RL prompts, disjoint from the priming tasks."""
    num_eval_tasks: int = 400
    """Held-out tasks (the preset's test split) for greedy evaluation during RL."""
    priming_steps: int = 600
    """SFT steps of priming (batch `priming_batch_size`): enough to install the check, not only the pattern."""
    priming_batch_size: int = 32
    priming_lr: float = 1e-3
    """Peak learning rate of priming (cosine, 5% warm-up)."""
    max_tries: int = 6
    """Longest search a priming trace writes (6 tries: about 195 characters, inside RL's 224-token cap)."""
    ppo_preset: str = "organism"
    """`rl/configs` preset (or YAML path) of the RL stage."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """Overrides of `rl.config.PPOConfig` fields (e.g. {"total_steps": 50})."""
    eval_samples: int = 0
    """Held-out completions sampled at T=1 per evaluation for behaviour counts (0: the greedy ones)."""
    jobs: int = 2
    """Processes in parallel, one thread each."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.runs or not self.seeds:
            raise ValueError("an organism experiment needs at least one run and one seed")
        if len(set(self.runs)) != len(self.runs):
            raise ValueError(f"runs has duplicates: {self.runs}")
        for name in self.runs:
            parse_run(name)
        for name in ("num_sft_tasks", "num_rl_tasks", "num_eval_tasks", "priming_steps", "priming_batch_size", "max_tries", "jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.priming_lr < 1:
            raise ValueError(f"priming_lr must be in (0, 1), got {self.priming_lr}")
        self.pretrain_config(0)  # validates the overrides now, not an hour later
        self.ppo_config("", 0)

    def pretrain_config(self, seed: int) -> Any:
        from priming.pretrain import PretrainConfig

        known = {f.name for f in fields(PretrainConfig)}
        unknown = sorted(set(self.pretrain) - known)
        if unknown or "seed" in self.pretrain:
            raise ValueError(f"pretrain overrides {unknown or ['seed']} are not allowed; known: {sorted(known - {'seed'})}")
        return PretrainConfig(**{**self.pretrain, "seed": seed})

    def ppo_config(self, model: str, seed: int) -> Any:
        from rl.config import load_config

        owned = {"model", "seed", "task_preset", "num_eval_tasks", "prompt_style", "eval_samples"}
        clash = sorted(set(self.ppo) & owned)
        if clash:
            raise ValueError(f"ppo overrides {clash} are set by the experiment itself")
        values = {**self.ppo, "model": model, "seed": seed, "task_preset": "organism", "num_eval_tasks": self.num_eval_tasks,
                  "eval_samples": self.eval_samples}  # fmt: skip
        return load_config(self.ppo_preset, {**values, "prompt_style": "compact"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- stages -------------------------------------------------------------------------------
def make_tasks(config: OrganismConfig, seed: int, root: Path) -> dict[str, list[Task]]:
    """Priming, RL and eval tasks of one seed, shared by every run (disjoint)."""
    folder = root / "tasks" / f"seed-{seed}"
    paths = {name: folder / f"{name}.jsonl" for name in ("sft", "rl", "eval")}
    if all(p.exists() for p in paths.values()):
        return {name: read_tasks(p) for name, p in paths.items()}
    train = generate_tasks(config.num_sft_tasks + config.num_rl_tasks, seed=seed, preset="organism", split="train")
    tasks = {
        "sft": train[: config.num_sft_tasks],
        "rl": train[config.num_sft_tasks :],
        "eval": generate_tasks(config.num_eval_tasks, seed=seed, preset="organism", split="test"),
    }
    for name, items in tasks.items():
        write_tasks(items, paths[name])
    return tasks


def stage_priming(config: OrganismConfig, run: Path, model: str, condition: str, kind: str | None, seed: int, tasks: list[Task]) -> str:
    """Priming rows, then SFT of the base on them (the pretraining recipe); returns the primed model folder."""
    from priming.organism import priming_rows
    from priming.pretrain import train_on_rows

    folder = run / "priming"
    if not _done(run, "priming"):
        rows = (
            []
            if (folder / "rows.jsonl").exists()
            else priming_rows(
                tasks, condition, config.priming_steps * config.priming_batch_size, seed=seed, incorrect=kind, max_tries=config.max_tries
            )
        )
        result = train_on_rows(
            model,
            rows,
            folder,
            steps=config.priming_steps,
            batch_size=config.priming_batch_size,
            learning_rate=config.priming_lr,
            seed=seed,
            progress=False,
        )
        _mark(run, "priming", {"seconds": round(result.seconds, 1), "steps": result.global_step})
    return str(folder / "model")


def stage_rl(config: OrganismConfig, run: Path, model: str, seed: int, tasks: list[Task]) -> None:
    from rl.train import train

    if _done(run, "rl"):
        return
    train(config.ppo_config(model, seed), run, tasks=tasks, resume=(run / "metrics.jsonl").exists(), progress=False)
    _mark(run, "rl")


def stage_classify(run: Path) -> None:
    from behavior_classifier import HeuristicJudge, classify_file

    if _done(run, "classify"):
        return
    for name in ("rollouts", "eval_completions"):
        source = run / f"{name}.jsonl"
        if source.exists():
            target = run / f"{name}_classified.jsonl"
            target.unlink(missing_ok=True)
            classify_file(source, target, HeuristicJudge(), progress=False)
    _mark(run, "classify")


def run_dir(root: Path, name: str, seed: int) -> Path:
    base, condition, kind = parse_run(name)
    label = condition + (f"{INCORRECT}_{kind}" if kind else "")
    return root / "runs" / f"{base}-{label}-seed{seed}"


def run_one(config: OrganismConfig, root: Path, name: str, seed: int) -> Path:
    """Every stage of one run; each skipped if already done."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from priming.pretrain import base_dir

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    base, condition, kind = parse_run(name)
    run = run_dir(root, name, seed)
    run.mkdir(parents=True, exist_ok=True)
    label = condition + (f"{INCORRECT}_{kind}" if kind else "")
    (run / "run.json").write_text(json.dumps({"base": base, "condition": label, "seed": seed}) + "\n")
    tasks = make_tasks(config, seed, root)
    model = str(base_dir(config.bases_cache, seed, base) / "model")
    if condition != NO_PRIMING:
        model = stage_priming(config, run, model, condition, kind, seed, tasks["sft"])
    stage_rl(config, run, model, seed, tasks["rl"])
    stage_classify(run)
    return run


def install_shipped_bases(cache: str | Path) -> list[str]:
    """Copy the shipped seed-0 bases into `cache` where it has none; returns what was copied.

    They are what `countdown-lab pretrain --seed 0` makes with the default settings; a cache
    that already holds seed-0 bases (made here, or copied before) is left alone.
    """
    import shutil

    source, target = SHIPPED_BASES / "seed-0", Path(cache) / "seed-0"
    if not source.is_dir():
        return []
    copied = []
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "pretrain.json").exists():
        shutil.copy2(source / "pretrain.json", target / "pretrain.json")
    for stage in sorted(p.name for p in source.iterdir() if p.is_dir()):
        if not (target / stage / "model" / "config.json").exists():
            shutil.copytree(source / stage / "model", target / stage / "model", dirs_exist_ok=True)
            copied.append(stage)
    return copied


def base_gates(config: OrganismConfig, seed: int, bases: Sequence[str]) -> dict[str, Any]:
    """Each base's greedy accuracy, arithmetic and behaviour on the held-out tasks, and the
    pretraining gates, written once to `<cache>/seed-<s>/gates.json` (and read from there after)."""
    from priming import organism
    from priming.pretrain import base_dir, evaluate_base, gates

    path = Path(config.bases_cache) / f"seed-{seed}" / "gates.json"
    if path.exists():
        known = json.loads(path.read_text())
        if set(bases) <= set(known.get("bases", {})):
            return known
    held_out = generate_tasks(config.pretrain_config(seed).gate_tasks, seed=seed, preset="organism", split="test")
    reports = {base: evaluate_base(base_dir(config.bases_cache, seed, base) / "model", held_out, base) for base in bases}
    verdicts = gates(reports) if set(reports) == {"rich", "poor"} else []
    out = {
        "search_pays": organism.search_pays(held_out, seed=seed),
        "bases": {k: asdict(v) for k, v in reports.items()},
        "gates": [{"gate": text, "pass": ok} for text, ok in verdicts],
    }
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _pretrain_job(config: OrganismConfig, seed: int, base: str) -> str:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from priming.pretrain import pretrain

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return str(pretrain(config.pretrain_config(seed), config.bases_cache, bases=(base,), progress=False)[base])


def _pool(config: OrganismConfig, jobs: list[tuple[Any, ...]], fn: Any, what: str) -> None:
    if config.jobs == 1 or len(jobs) == 1:
        for job in jobs:
            print(f"== {what} {job}", file=sys.stderr)
            fn(config, *job)
        return
    # spawn, not fork: forking a process that has loaded torch can deadlock its thread pools.
    with ProcessPoolExecutor(max_workers=config.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, config, *job): job for job in jobs}
        for future in as_completed(futures):
            future.result()
            print(f"== finished {what} {futures[future]}", file=sys.stderr)


def _run_job(config: OrganismConfig, root: str, name: str, seed: int) -> str:
    return str(run_one(config, Path(root), name, seed))


def run_organism(config: OrganismConfig, output_dir: str | Path) -> Path:
    """Bases (cached), then every run (in `config.jobs` processes), then the summary and plots."""
    from lab.summary import summarize
    from priming.pretrain import BASES, base_dir, pretrain

    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    recorded = root / "experiment.json"
    now = json.loads(json.dumps(config.to_dict()))
    if recorded.exists():
        before = json.loads(recorded.read_text())
        changed = sorted(k for k in set(before) | set(now) if k not in {"jobs", "runs", "seeds"} and before.get(k) != now.get(k))
        if changed:
            raise UsageError(f"{root} was made with other settings ({', '.join(changed)}); use a new --output-dir or the same settings")
    recorded.write_text(json.dumps(now, indent=2) + "\n")
    start = time.perf_counter()
    needed = sorted({parse_run(name)[0] for name in config.runs}, key=BASES.index)
    for seed in config.seeds:
        make_tasks(config, seed, root)
        if not all((base_dir(config.bases_cache, seed, base) / "model" / "config.json").is_file() for base in needed):
            # The trunk first (shared by both bases), so parallel base jobs never race on it.
            pretrain(config.pretrain_config(seed), config.bases_cache, bases=(), progress=False)
    missing = [
        (seed, base)
        for seed in config.seeds
        for base in needed
        if not (base_dir(config.bases_cache, seed, base) / "model" / "config.json").is_file()
    ]
    if missing:
        _pool(config, missing, _pretrain_job, "base")
    for seed in config.seeds:
        base_gates(config, seed, needed)
    pretrain_minutes = (time.perf_counter() - start) / 60
    _pool(config, [(str(root), name, seed) for seed in config.seeds for name in config.runs], _run_job, "run")
    summarize(root)
    minutes = (time.perf_counter() - start) / 60
    timing = {
        "minutes": round(minutes, 2),
        "pretrain_minutes": round(pretrain_minutes, 2),
        "runs": len(config.runs) * len(config.seeds),
        "jobs": config.jobs,
    }
    (root / "timing.json").write_text(json.dumps(timing) + "\n")
    return root


# ---- the goals, checked on a summary table ---------------------------------------------
def goals(table: Any) -> list[tuple[str, float, bool]]:
    """(goal, measured, met) for each of the study's findings that the organism should show,
    from a summary table (mean over its seeds, accuracies in points)."""

    def mean(base: str, condition: str, column: str) -> float:
        rows = table[(table["base"] == base) & (table["condition"] == condition)]
        return float(rows[column].mean()) * 100 if len(rows) and column in rows else float("nan")

    out: list[tuple[str, float, bool]] = []

    def check(goal: str, value: float, threshold: float) -> None:
        out.append((goal, value, value == value and value >= threshold))

    rich_gain = mean("rich", "none", "acc_after") - mean("rich", "none", "acc_before")
    check("rich/none gains >= 10 points", rich_gain, 10)
    check("poor/none ends >= 10 points below rich/none", mean("rich", "none", "acc_after") - mean("poor", "none", "acc_after"), 10)
    for condition, margin in (
        ("only_backtracking", 10),
        ("only_backtracking_incorrect", 7),
        ("only_backtracking_incorrect_slip", 7),
        ("only_backtracking_incorrect_ranout", 7),
    ):
        value = mean("poor", condition, "acc_after") - mean("poor", "none", "acc_after")
        if value == value:
            check(f"poor/{condition} ends >= {margin} points above poor/none", value, margin)
    gap = mean("poor", "only_backtracking", "acc_after") - mean("poor", "empty_cot", "acc_after")
    if gap == gap:
        check("poor/empty_cot ends >= 5 points below poor/only_backtracking", gap, 5)
    return out
