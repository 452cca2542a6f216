"""`ExperimentConfig`: what one experiment runs, checked before anything is written.

One pipeline serves every experiment; its presets differ only in values:

    tasks -> start model -> [priming: traces -> SFT] -> RL -> judge -> summary and plots

The start model is a path or hub id (`start: model`, empty `model` = the embedded tiny default), or
one of the model organism's pretrained bases (`start: organism`, runs named `<base>/<condition>`).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lab.pipeline.presets import load_preset_dataclass

INCORRECT = "_incorrect"
NO_PRIMING = "none"
STARTS = ("model", "organism")
JUDGES = ("heuristic", "openai")
SFT_SET_BY_EXPERIMENT = frozenset({"model", "data", "output_dir", "seed", "prompt_style", "report_to", "task_preset"})
PPO_SET_BY_EXPERIMENT = frozenset({"model", "seed", "task_preset", "num_eval_tasks", "prompt_style", "eval_samples"})


def has_dev_split(task_preset: str) -> bool:
    """Whether the task preset holds out a dev split beside its test split (`TaskConfig.dev_fraction`)."""
    from countdown_env import TaskConfig

    return TaskConfig.preset(task_preset).dev_fraction > 0


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment, parsed from its name: `[<base>/]<condition>[_incorrect[_<kind>]]`."""

    name: str
    base: str | None
    """`rich`/`poor` for the organism's bases, None for the `model` start."""
    condition: str | None
    """The priming condition, None for `none` (RL from the start model)."""
    incorrect_kind: str | None
    """How the priming traces are wrong (`priming.INCORRECT_KINDS`), None for correct traces."""
    default_kind: str | None = None
    """The wrong-answer kind `<condition>_incorrect` means (its label carries no kind)."""

    @property
    def label(self) -> str:
        """The condition as tables show it (`only_backtracking_incorrect` for the default kind,
        `only_backtracking_incorrect_slip`, `none`)."""
        if self.condition is None:
            return NO_PRIMING
        if self.incorrect_kind is None:
            return self.condition
        return self.condition + INCORRECT + ("" if self.incorrect_kind == self.default_kind else f"_{self.incorrect_kind}")

    def folder(self, seed: int) -> str:
        return f"{self.base}-{self.label}-seed{seed}" if self.base else f"{self.label}-seed{seed}"


def parse_run(name: str, start: str = "model", kinds: tuple[str, ...] | None = None) -> RunSpec:
    """'poor/only_backtracking_incorrect_ranout' (organism) or 'all_strategies_incorrect' (model) -> RunSpec.
    `<condition>_incorrect` means the default wrong-answer kind, the first of `kinds` (default
    `priming.INCORRECT_KINDS`; the organism's text has its own, `organism.text.INCORRECT_KINDS`)."""
    from priming import CONDITIONS, INCORRECT_KINDS

    kinds = kinds or INCORRECT_KINDS

    base, sep, condition = name.rpartition("/")
    if start == "organism":
        from organism.pretrain import BASES

        if not sep or base not in BASES:
            raise ValueError(f"an organism run is written <base>/<condition> with base in {BASES}, got {name!r}")
    elif sep:
        raise ValueError(f"{name!r}: <base>/ names an organism base; this experiment starts from `model` (set start: organism)")
    if condition == NO_PRIMING:
        return RunSpec(name, base or None, None, None)
    kind = None
    for k in kinds:
        if condition.endswith(f"{INCORRECT}_{k}"):
            condition, kind = condition[: -len(f"{INCORRECT}_{k}")], k
            break
    else:
        if condition.endswith(INCORRECT):
            condition, kind = condition[: -len(INCORRECT)], kinds[0]
    if condition not in CONDITIONS:
        choices = sorted([*CONDITIONS, NO_PRIMING]) + [f"<condition>{INCORRECT}[_<{'|'.join(kinds)}>]"]
        raise ValueError(f"unknown condition in {name!r}; choose from {choices}")
    return RunSpec(name, base or None, condition, kind, kinds[0])


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: runs (conditions) x seeds, each from a start model, optionally primed, trained with RL and judged."""

    conditions: tuple[str, ...] = ("only_backtracking", "negative_control")
    """Runs: a priming condition (`priming.CONDITIONS`), `<condition>_incorrect[_<kind>]` (wrong-answer traces) or
    `none` (RL from the start model); with `start: organism`, prefixed by the base: `poor/only_backtracking`."""
    seeds: tuple[int, ...] = (0,)
    """One run per condition and seed; the seed drives tasks, start model, traces, SFT and RL."""
    start: str = "model"
    """The start model: `model` (the `model` field) or `organism` (the organism's pretrained bases, cached)."""
    model: str = ""
    """start=model: a model path or hub id; empty: the embedded default (a local `arch`/`size` model built from a config)."""
    arch: str = "qwen2"
    """Architecture of the embedded default model (`llama` or `qwen2`)."""
    size: str = "small"
    """Size of the embedded default model (`tiny`, `small`, `base`)."""
    bases_cache: str = "runs/bases"
    """start=organism: where the bases are cached (shared by experiments with the same pretraining settings)."""
    pretrain: dict[str, Any] = field(default_factory=dict)
    """start=organism: overrides of `organism.pretrain.PretrainConfig` fields (e.g. {"base_steps": 600})."""
    base_seed: int | None = None
    """start=organism: the seed of the bases every run starts from (None: each run's own seed). Fixing it
    varies only priming and RL over the seeds, e.g. from the shipped seed-0 bases without pretraining."""
    task_preset: str = "tiny"
    """countdown_env task preset for priming, RL and evaluation tasks."""
    num_sft_tasks: int = 2000
    """Train-split tasks the priming traces are written about."""
    num_rl_tasks: int = 2000
    """RL prompts (train split, disjoint from the SFT tasks and the eval tasks)."""
    num_eval_tasks: int = 200
    """Held-out tasks (test split) for the greedy evaluation during RL."""
    eval_samples: int = 0
    """Held-out completions sampled at T=1 at each evaluation and judged (source `heldout`), as the study did
    (200 in `paper-3b`); 0: the greedy completions are judged instead."""
    prompt_style: str = "compact"
    """Prompt template for SFT, RL and evaluation (`compact` for tiny models, `tinyzero` or `chat` for real LMs)."""
    trace_style: str = "compact"
    """Trace text: `compact` or `full` (`priming.traces`), or `organism` (the organism's text, `organism.text`)."""
    trace_max_chars: int | None = None
    """Longest priming trace in characters (None: the style's default)."""
    num_traces: int | None = None
    """Priming rows written (None: one per SFT task); the organism's text reshuffles each task's numbers per row."""
    max_tries: int = 6
    """trace_style=organism: the longest search a priming trace writes."""
    min_tries: int | None = None
    """trace_style=organism: the shortest search budget (None: every search checks up to `max_tries` misses). Below
    `max_tries`, each search gives up after a budget drawn uniformly from `min_tries..max_tries`, as the rich base's
    text does: the persistence RL can then lengthen (`organism.text.random_search`)."""
    give_up: float | None = None
    """trace_style=organism, instead of `min_tries`: after each miss a priming search gives up with this probability
    (geometric budgets, at most `max_tries`; `organism.text.search_budget`)."""
    search_order: str = "random"
    """trace_style=organism: how a priming search orders its tries (`organism.text.SEARCH_ORDERS`: `random`, drawn
    once per trace; `cyclic`, the fixed order from a random first try)."""
    sft_preset: str = "sft-tiny-cpu"
    """SFT preset of the priming stage (`sft-tiny-cpu`, `sft-paper-3b`, `sft-organism`) or a YAML path."""
    sft: dict[str, Any] = field(default_factory=dict)
    """Overrides of `priming.sft.SFTRunConfig` fields (e.g. {"max_steps": 300})."""
    ppo_preset: str = "ppo-tiny-cpu"
    """RL preset (`ppo-tiny-cpu`, `ppo-paper-3b`, `ppo-organism`) or a YAML path."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """Overrides of `rl.config.PPOConfig` fields (e.g. {"total_steps": 50})."""
    judge: str = "heuristic"
    """Behaviour judge: `heuristic` (offline) or `openai` (any OpenAI-compatible endpoint)."""
    judge_base_url: str | None = None
    """Base URL of the judge endpoint (judge=openai); the key comes from OPENAI_API_KEY."""
    judge_model: str | None = None
    """Judge model name (judge=openai)."""
    report_to: str = "none"
    """Also log SFT and RL metrics to a tracker: none, tensorboard, wandb or trackio (metrics.jsonl is always written)."""
    jobs: int = 1
    """Runs in parallel (one process each, one thread each: on 2 cores, 2 one-thread jobs beat one two-thread job)."""
    gpus: int = 0
    """GPUs for the RL stage: 0 = this process (CPU or one GPU); >= 1 = first check with `countdown-lab plan` that RL
    fits; > 1 = RL under `accelerate launch`, one process per GPU, with the accelerate config of the RL config's `sharding`."""
    gpu_memory_gb: float = 80.0
    """Memory of one GPU in GB, for the `plan` check (gpus >= 1)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        self._check_runs()
        self._check_numbers()
        self._check_choices()
        self._check_overrides()

    def _check_runs(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if not self.conditions or not self.seeds:
            raise ValueError("an experiment needs at least one condition and one seed")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"conditions has duplicates: {self.conditions}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has duplicates: {self.seeds} (two processes would share one run folder)")
        for seed in self.seeds:
            if not 0 <= seed < 2**32:
                raise ValueError(f"seeds must be in 0..2**32-1, got {seed}")
        for name in self.conditions:
            parse_run(name, self.start, self.incorrect_kinds())
        if self.trace_style == "organism":
            from organism.text import ORGANISM_CONDITIONS

            bad = sorted({s.condition for s in self.runs() if s.condition and s.condition not in ORGANISM_CONDITIONS})
            if bad:
                raise ValueError(f"the organism's text writes the conditions {ORGANISM_CONDITIONS} (and none), not {bad}")
        if self.base_seed is not None and not 0 <= self.base_seed < 2**32:
            raise ValueError(f"base_seed must be in 0..2**32-1 or null, got {self.base_seed}")
        if self.start == "organism" and self.model:
            raise ValueError("start=organism pretrains its own base models; `model` does not apply (use start: model)")

    def _check_numbers(self) -> None:
        for name in ("num_sft_tasks", "num_rl_tasks", "num_eval_tasks", "jobs", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_tries is not None and not 1 <= self.min_tries <= self.max_tries:
            raise ValueError(f"min_tries must be in 1..max_tries ({self.max_tries}) or null, got {self.min_tries}")
        if self.give_up is not None and not 0.0 < self.give_up < 1.0:
            raise ValueError(f"give_up must be in (0, 1) or null, got {self.give_up}")
        if self.give_up is not None and self.min_tries is not None:
            raise ValueError("set min_tries (a uniform search budget) or give_up (a chance to stop after each miss), not both")
        if self.num_traces is not None and self.num_traces < 1:
            raise ValueError(f"num_traces must be >= 1 or null, got {self.num_traces}")
        sizes = split_sizes(self.task_preset)
        wanted = {"train": self.num_sft_tasks + self.num_rl_tasks, "test": self.num_eval_tasks, "dev": self.num_eval_tasks}
        if not sizes.get("dev"):
            del wanted["dev"]
        for split, n in wanted.items():
            if split in sizes and n > reachable_tasks(sizes[split]):
                what = "num_sft_tasks + num_rl_tasks" if split == "train" else "num_eval_tasks"
                raise ValueError(
                    f"{what} = {n}, but task preset {self.task_preset!r} has only {sizes[split]} {split}-split tasks, and the "
                    f"generator does not reliably reach the rarest of them: ask for at most {reachable_tasks(sizes[split])}"
                )
        evaluated = self.evaluated_tasks()
        if not 0 <= self.eval_samples <= evaluated:
            raise ValueError(f"eval_samples must be in 0..{evaluated} (the tasks each evaluation sees), got {self.eval_samples}")
        if self.gpus < 0 or not self.gpu_memory_gb > 0 or self.gpu_memory_gb == float("inf"):
            raise ValueError(f"gpus must be >= 0 and gpu_memory_gb a finite number > 0, got {self.gpus} and {self.gpu_memory_gb}")
        if self.gpus > 1 and self.jobs > 1:
            raise ValueError("gpus > 1 runs each RL stage on every GPU: set jobs=1")

    def evaluated_tasks(self) -> int:
        """Tasks each evaluation sees: `num_eval_tasks`, twice over (test and dev) when the preset has a dev split."""
        from countdown_env import PRESETS

        dev = self.task_preset in PRESETS and has_dev_split(self.task_preset)
        return self.num_eval_tasks * (2 if dev else 1)

    def _check_choices(self) -> None:
        from countdown_env import PRESETS
        from countdown_env.rules import PROMPT_STYLES
        from priming.render import STYLES
        from runtime.tracking import REPORT_TO

        if self.task_preset not in PRESETS:
            raise ValueError(f"task_preset must be one of {sorted(PRESETS)}, got {self.task_preset!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {sorted(PROMPT_STYLES)}, got {self.prompt_style!r}")
        if self.trace_style not in (*STYLES, "organism"):
            raise ValueError(f"trace_style must be one of {(*STYLES, 'organism')}, got {self.trace_style!r}")
        from organism.text import SEARCH_ORDERS

        if self.search_order not in SEARCH_ORDERS:
            raise ValueError(f"search_order must be one of {SEARCH_ORDERS}, got {self.search_order!r}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.judge not in JUDGES:
            raise ValueError(f"judge must be one of {JUDGES}, got {self.judge!r}")
        if self.judge == "openai" and not (self.judge_base_url and self.judge_model):
            raise ValueError("judge=openai needs judge_base_url and judge_model")

    def _check_overrides(self) -> None:
        """Fail now, not hours later when the stage starts: every stage's config is built once here."""
        if self.start == "organism":
            self.pretrain_config(0)
        for name in ("sft", "ppo"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a mapping of config fields, got {getattr(self, name)!r}")
        for name, owned in (("sft", SFT_SET_BY_EXPERIMENT), ("ppo", PPO_SET_BY_EXPERIMENT)):
            clash = sorted(set(getattr(self, name)) & owned)
            if clash:
                raise ValueError(f"{name} overrides {clash} are set by the experiment itself; use the experiment's own fields")
        self.ppo_config("model", self.seeds[0])
        self.sft_config("model", "data", "out", self.seeds[0])

    def pretrain_config(self, seed: int) -> Any:
        """The organism's `PretrainConfig` for `seed`, with this experiment's overrides."""
        from organism.pretrain import PretrainConfig

        known = {f.name for f in fields(PretrainConfig)}
        unknown = sorted(set(self.pretrain) - known)
        if unknown or "seed" in self.pretrain:
            raise ValueError(f"pretrain overrides {unknown or ['seed']} are not allowed; known: {sorted(known - {'seed'})}")
        return PretrainConfig(**{**self.pretrain, "seed": seed})

    def ppo_config(self, model: str, seed: int) -> Any:
        """The RL stage's config: the preset, the experiment's overrides, then what the experiment sets itself."""
        from rl.config import PPOConfig

        # With a dev split, RL evaluates num_eval_tasks dev tasks and as many test tasks at once.
        evaluated = self.evaluated_tasks()
        values = {**self.ppo, "model": model, "seed": seed, "task_preset": self.task_preset, "num_eval_tasks": evaluated,
                  "prompt_style": self.prompt_style, "eval_samples": self.eval_samples}  # fmt: skip
        if evaluated > self.num_eval_tasks:  # a dev split: keep the greedy rows too, to tell the splits apart
            values["eval_log_greedy"] = True
        return load_preset_dataclass("ppo", PPOConfig, self.ppo_preset, values, what="ppo")

    def sft_config(self, model: str, data: str, output_dir: str, seed: int) -> Any:
        """The priming stage's SFT config: the preset, the experiment's overrides, then what the experiment sets itself."""
        from priming.sft import SFTRunConfig

        values = {**self.sft, "model": model, "data": data, "output_dir": output_dir, "seed": seed,
                  "prompt_style": self.prompt_style, "report_to": self.report_to, "task_preset": self.task_preset}  # fmt: skip
        return load_preset_dataclass("sft", SFTRunConfig, self.sft_preset, values, what="sft")

    @classmethod
    def load(cls, source: str | Path, **overrides: Any) -> ExperimentConfig:
        """A preset name or YAML path, with overrides (None values ignored): the notebooks' and tests' shorthand."""
        return load_experiment(source, {k: v for k, v in overrides.items() if v is not None})

    def bases_seed(self, seed: int) -> int:
        """The seed of the bases a run of `seed` starts from."""
        return seed if self.base_seed is None else self.base_seed

    def runs(self) -> list[RunSpec]:
        return [parse_run(name, self.start, self.incorrect_kinds()) for name in self.conditions]

    def incorrect_kinds(self) -> tuple[str, ...] | None:
        """The wrong-answer kinds of this experiment's trace text (None: `priming`'s)."""
        if self.trace_style != "organism":
            return None
        from organism.text import INCORRECT_KINDS

        return INCORRECT_KINDS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Largest task space `split_sizes` enumerates (number multisets); beyond it a split counts as unbounded.
MAX_ENUMERATED = 5000


#: Share of a counted split `generate_tasks` is asked for at most: it draws tasks at random and stops after
#: `countdown_env.tasks.MAX_MISSES` draws without a new one, so the few rarest tasks of a split may never come
#: (the organism's test split: 201 tasks; seed 43 reaches 198, seed 21 200).
REACHABLE_SHARE = 0.95


def reachable_tasks(size: int) -> int:
    """The most tasks of a split of `size` counted tasks an experiment may ask for (`REACHABLE_SHARE`)."""
    return int(size * REACHABLE_SHARE)


@functools.cache
def split_sizes(task_preset: str) -> dict[str, int]:
    """split -> how many distinct tasks a small preset has there (at most: the generator may miss a few
    hard ones); {} for a preset too large to count in a second or an unknown one. Every multiset of
    numbers with every target it reaches in range, each task put in its split as `generate_tasks` does."""
    import itertools
    import math

    from countdown_env import PRESETS, TaskConfig
    from countdown_env.solver import reachable
    from countdown_env.tasks import split_of

    if task_preset not in PRESETS:
        return {}
    c = TaskConfig.preset(task_preset)
    lo, hi = c.number_range
    sizes = range(c.min_numbers, c.max_numbers + 1)
    if c.large_numbers or c.max_numbers > 3 or sum(math.comb(hi - lo + k, k) for k in sizes) > MAX_ENUMERATED:
        return {}
    out = {"train": 0, "test": 0, "dev": 0}
    for k in sizes:
        for numbers in itertools.combinations_with_replacement(range(lo, hi + 1), k):
            trivial = sum(numbers) if c.filter_trivial else None
            for value in reachable(numbers, c.rules):
                if isinstance(value, int) and c.target_range[0] <= value <= c.target_range[1] and value != trivial:
                    out[split_of((numbers, value), c.test_fraction, c.dev_fraction)] += 1
    return out


def load_experiment(source: str | Path = "tiny-cpu", overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """An experiment preset name (`lab/pipeline/presets`, `organism/presets`) or a YAML path, then `overrides`."""
    return load_preset_dataclass("experiment", ExperimentConfig, source, overrides or {}, what="experiment")
