"""Synthetic reasoning traces: search a task, write the walk as text, check the answer.

`generate_traces(tasks, condition, seed=...)` is the public entry point (see
shared/CONTRACT.md). Every random choice comes from string-seeded `random.Random` streams
keyed by (seed, index, task): the search stream does not depend on the condition, so two
conditions with the same search strategy walk the same tree path for a task and differ only
in the behaviours written around it, which is the controlled comparison the study needs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from countdown_env.expression import Outcome
from countdown_env.rules import DEFAULT_RULES, THINK_CLOSE, THINK_OPEN, Rules, format_completion
from countdown_env.scoring import score_response
from countdown_env.solver import expr_to_text
from countdown_env.tasks import Task
from priming.conditions import BEHAVIORS, Condition, get_condition
from priming.render import STYLES, render
from priming.search import SearchConfig, SearchResult, search, wrong_goal

#: Bumped whenever the same (tasks, condition, seed, config) would give different text.
GENERATOR_VERSION = "synthetic-1"
#: Walks tried per failed-path budget before a trace over `max_chars` is searched with a smaller budget.
RETRIES_PER_BUDGET = 4


@dataclass(frozen=True)
class TraceConfig:
    """How traces look and how long they get. `TraceConfig.for_style("compact")` for tiny models."""

    style: str = "full"
    """full: first-person sentences; compact: short comma-separated phrases (~100-300 chars)."""
    max_dead_ends: int = 3
    """Failed paths a trace may show before it heads for the solution."""
    min_dead_ends: int = 1
    """Failed paths a trace shows at least (when the task has any), in conditions with backtracking."""
    branch_cap: int = 2
    """Options tried at one point of the search before going back further."""
    max_nodes: int = 40
    """Search steps (combinations, decompositions) before the search heads for the solution."""
    max_chars: int | None = None
    """Longest completion; longer traces are re-searched with fewer failed paths (None: no limit)."""
    dots_source: str = "all_strategies"
    """The condition whose reasoning length the `dots` control matches."""

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.min_dead_ends > self.max_dead_ends:
            raise ValueError(f"min_dead_ends ({self.min_dead_ends}) must be <= max_dead_ends ({self.max_dead_ends})")
        if self.max_chars is not None and self.max_chars < 40:
            raise ValueError(f"max_chars must be >= 40 (room for the tags and an answer), got {self.max_chars}")
        source = get_condition(self.dots_source)
        if source.control is not None:
            raise ValueError(f"dots_source must be a reasoning condition, not the control {self.dots_source!r}")
        self.search_config()  # validates the search fields with SearchConfig's messages

    @classmethod
    def for_style(cls, style: str, **overrides: Any) -> TraceConfig:
        """Defaults per style: compact traces show at most two failed paths and fit in 320 characters."""
        base: dict[str, Any] = {"style": style}
        if style == "compact":
            base.update(max_dead_ends=2, max_chars=320)
        return cls(**{**base, **overrides})

    def search_config(self, strategy: str = "forward", *, explores: bool = True, max_dead_ends: int | None = None) -> SearchConfig:
        budget = self.max_dead_ends if max_dead_ends is None else max_dead_ends
        if not explores:  # straight to a solution
            return SearchConfig(strategy, max_dead_ends=0, min_dead_ends=0, branch_cap=self.branch_cap, max_nodes=0)  # type: ignore[arg-type]
        return SearchConfig(
            strategy,  # type: ignore[arg-type]
            max_dead_ends=budget,
            min_dead_ends=min(self.min_dead_ends, budget),
            branch_cap=self.branch_cap,
            max_nodes=self.max_nodes,
        )


@dataclass(frozen=True)
class Trace:
    """One completion for one task, with the behaviours written into it."""

    text: str
    """The completion: `<think>...</think>\\n<answer>...</answer>`."""
    behaviors: Mapping[str, int]
    """Count of each behaviour in BEHAVIORS written into `text` (ground truth)."""
    correct: bool
    """Whether the answer solves the task (checked with `score_response`)."""
    condition: str
    numbers: tuple[int, ...]
    target: int
    answer: str
    """The expression inside `<answer>`."""
    incorrect: bool = False
    """Whether the trace was asked to end in a wrong answer."""
    dead_ends: int = 0
    """Failed paths the search visited."""
    nodes: int = 0
    """Search steps expanded."""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "numbers": list(self.numbers),
            "target": self.target,
            "condition": self.condition,
            "incorrect": self.incorrect,
            "text": self.text,
            "answer": self.answer,
            "correct": self.correct,
            "behaviors": dict(self.behaviors),
            "dead_ends": self.dead_ends,
            "nodes": self.nodes,
        }


def _rng(kind: str, seed: int, index: int, task: Task, *extra: object) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`: stable across processes and versions.
    return random.Random(":".join(map(str, ("priming", kind, seed, index, task.numbers, task.target, *extra))))


def _think_of(text: str) -> str:
    return text[text.index(THINK_OPEN) + len(THINK_OPEN) : text.index(THINK_CLOSE)]


def _search(
    task: Task, goal: int, condition: Condition, config: TraceConfig, seed: int, index: int, budget: int, attempt: int, rules: Rules
) -> SearchResult:
    search_config = config.search_config(condition.strategy, explores=condition.explores, max_dead_ends=budget)
    return search(task.numbers, goal, search_config, _rng("search", seed, index, task, condition.strategy, budget, attempt), rules)


def _trace(
    task: Task, condition: Condition, goal: int, result: SearchResult, text: str, counts: Mapping[str, int], incorrect: bool, rules: Rules
) -> Trace:
    if result.expression is None:  # unreachable for a solvable goal: the search ends at a solution
        raise RuntimeError(f"search found no expression for {task.numbers} -> {goal}")
    answer = expr_to_text(result.expression)
    score = score_response(text, task, rules)
    if score.outcome is not (Outcome.WRONG_VALUE if incorrect else Outcome.CORRECT):
        raise RuntimeError(f"trace answer {answer!r} scored {score.outcome.value} for {task.numbers} -> {task.target}")
    return Trace(
        text=text,
        behaviors={b: int(counts.get(b, 0)) for b in BEHAVIORS},
        correct=score.correct,
        condition=condition.name,
        numbers=task.numbers,
        target=task.target,
        answer=answer,
        incorrect=incorrect,
        dead_ends=result.dead_ends,
        nodes=result.nodes,
        meta={"goal": goal, "search_rules": "plain" if result.rules.integer_intermediates else "full"},
    )


def _reasoning_trace(
    task: Task, condition: Condition, *, seed: int, index: int, incorrect: bool, config: TraceConfig, rules: Rules
) -> Trace:
    goal = wrong_goal(task.numbers, task.target, _rng("goal", seed, index, task), rules=rules) if incorrect else task.target
    shortest = None
    # Too long: search again (another random walk), then with fewer failed paths, down to the
    # condition's minimum. Attempt 0 of the full budget is the trace when nothing is too long.
    budgets = range(config.max_dead_ends, config.search_config(explores=True).min_dead_ends - 1, -1) if condition.explores else [0]
    for budget in budgets:
        for attempt in range(RETRIES_PER_BUDGET):
            result = _search(task, goal, condition, config, seed, index, budget, attempt, rules)
            answer = expr_to_text(result.expression) if result.expression is not None else ""
            rendered = render(
                result.events,
                condition.behaviors,
                numbers=task.numbers,
                goal=goal,
                answer=answer,
                style=config.style,
                rng=_rng("text", seed, index, task, condition.name, budget, attempt),
            )
            text = format_completion(rendered.think, answer)
            if config.max_chars is None or len(text) <= config.max_chars:
                return _trace(task, condition, goal, result, text, rendered.behaviors, incorrect, rules)
            shortest = len(text) if shortest is None else min(shortest, len(text))
    raise ValueError(
        f"no {condition.name} trace for {list(task.numbers)} -> {task.target} fits in max_chars={config.max_chars} "
        f"(shortest: {shortest} characters); raise max_chars, lower min_dead_ends or use the compact style"
    )


def generate_trace(
    task: Task,
    condition: str,
    *,
    seed: int,
    index: int = 0,
    incorrect: bool = False,
    config: TraceConfig | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Trace:
    """The trace of `condition` for `task` (the `index`-th task of a batch), correct (or, with
    `incorrect`, wrong) under `rules`: the task preset's, `countdown_env.preset_rules`."""
    cond = get_condition(condition)
    config = config or TraceConfig()
    if cond.control is None:
        return _reasoning_trace(task, cond, seed=seed, index=index, incorrect=incorrect, config=config, rules=rules)
    # Controls keep the answer of a reasoning trace and drop its reasoning.
    source = get_condition(config.dots_source if cond.control == "dots" else "negative_control")
    base = _reasoning_trace(task, source, seed=seed, index=index, incorrect=incorrect, config=config, rules=rules)
    think = "." * len(_think_of(base.text)) if cond.control == "dots" else ""
    text = format_completion(think, base.answer)
    return replace(base, text=text, condition=cond.name, behaviors=dict.fromkeys(BEHAVIORS, 0), meta={**base.meta, "source": source.name})


def generate_traces(
    tasks: Iterable[Task],
    condition: str,
    *,
    seed: int,
    incorrect: bool = False,
    config: TraceConfig | None = None,
    rules: Rules = DEFAULT_RULES,
) -> list[Trace]:
    """One trace of `condition` per task; same seed, same traces (see the module docstring).

    With `incorrect=True` each trace reasons towards a nearby value the numbers do make
    instead of the target, with the same behaviours, so its answer is well-formed and wrong.
    The trace is consistent about that value (its plans and checks name it as the goal, as if
    the target had been misread), so every written computation stays correct. `rules` (the
    task preset's) decide what the search may do and how the answer is checked.
    """
    get_condition(condition)  # fail before any work on a bad name
    return [
        generate_trace(task, condition, seed=seed, index=i, incorrect=incorrect, config=config, rules=rules) for i, task in enumerate(tasks)
    ]
