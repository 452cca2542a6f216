"""Synthetic reasoning traces: search a task, write the walk as text, check the answer.

`generate_traces(tasks, condition, seed=...)` is the public entry point (its
signature is part of the project's public contract). Every random choice comes from string-seeded `random.Random` streams
keyed by (seed, index, task): the search stream does not depend on the condition, so two
conditions with the same search strategy walk the same tree path for a task and differ only
in the behaviours written around it, which is the controlled comparison the study needs.

Incorrect traces (the study's wrong-answer priming) keep the task's target and the condition's
reasoning and only end on a wrong answer, in one of two ways (`INCORRECT_KINDS`):
- slip: the correct trace, word for word (same search, same checks against the target, the
  solution found and verified), whose final `<answer>` line holds the solution with one
  operator changed, so its value is wrong: the reasoning was right, the answer slipped.
- ranout: the search against the target runs out before it finds a solution (failed paths
  only, each checked against the target where the condition verifies), and the trace answers
  with its closest attempt.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from countdown_env.errors import UsageError
from countdown_env.expression import Outcome
from countdown_env.rules import DEFAULT_RULES, THINK_CLOSE, THINK_OPEN, Rules, format_completion
from countdown_env.scoring import score_response
from countdown_env.solver import Expr, expr_to_text
from countdown_env.tasks import Task
from priming.conditions import BEHAVIORS, Condition, get_condition
from priming.render import STYLES, render
from priming.search import SearchConfig, SearchResult, search

#: Bumped whenever the same (tasks, condition, seed, config) would give different text.
#: synthetic-2: incorrect traces keep the true target (kinds slip and ranout) instead of reasoning towards a misread one.
GENERATOR_VERSION = "synthetic-2"
#: How an incorrect trace goes wrong (see the module docstring); the first is the default.
INCORRECT_KINDS: tuple[str, ...] = ("slip", "ranout")
#: Failed paths a trace that runs out shows at least when its condition backtracks: one return between two misses.
RANOUT_MIN_DEAD_ENDS = 2
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

    def search_config(
        self, strategy: str = "forward", *, explores: bool = True, max_dead_ends: int | None = None, runs_out: bool = False
    ) -> SearchConfig:
        """`runs_out`: the search of a ranout trace (never reaches the target; see `SearchConfig.find_solution`)."""
        budget = self.max_dead_ends if max_dead_ends is None else max_dead_ends
        if not explores:  # straight to a solution, or (running out) down one failed path and no return
            dead_ends = 1 if runs_out else 0
            return SearchConfig(
                strategy,  # type: ignore[arg-type]
                max_dead_ends=dead_ends,
                min_dead_ends=dead_ends,
                branch_cap=self.branch_cap,
                max_nodes=0,
                find_solution=not runs_out,
            )
        if runs_out:  # a return between two misses, so the trace shows backtracking like the condition's correct traces
            budget = max(budget, RANOUT_MIN_DEAD_ENDS)
        return SearchConfig(
            strategy,  # type: ignore[arg-type]
            max_dead_ends=budget,
            min_dead_ends=RANOUT_MIN_DEAD_ENDS if runs_out else min(self.min_dead_ends, budget),
            branch_cap=self.branch_cap,
            max_nodes=self.max_nodes,
            find_solution=not runs_out,
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
    incorrect_kind: str | None = None
    """How its answer is wrong (one of INCORRECT_KINDS), None for a correct trace."""
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
            "incorrect_kind": self.incorrect_kind,
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


def incorrect_kind_for(incorrect: bool, incorrect_kind: str | None) -> str | None:
    """The kind of wrong answer asked for: None for correct traces, `slip` when `incorrect` alone."""
    if incorrect_kind is not None and incorrect_kind not in INCORRECT_KINDS:
        raise ValueError(f"incorrect_kind must be one of {INCORRECT_KINDS}, got {incorrect_kind!r}")
    if not incorrect:
        if incorrect_kind is not None:
            raise ValueError(f"incorrect_kind={incorrect_kind!r} needs incorrect=True")
        return None
    return incorrect_kind or INCORRECT_KINDS[0]


def _search(
    task: Task, condition: Condition, config: TraceConfig, seed: int, index: int, budget: int, attempt: int, kind: str | None, rules: Rules
) -> SearchResult:
    runs_out = kind == "ranout"
    search_config = config.search_config(condition.strategy, explores=condition.explores, max_dead_ends=budget, runs_out=runs_out)
    rng = _rng("search", seed, index, task, condition.strategy, budget, attempt)
    # A wrong answer needs a step to get wrong: under rules that let numbers go unused, not the target alone when it is a number.
    return search(task.numbers, task.target, search_config, rng, rules, min_operands=1 if kind is None else 2)


def _wrong_value(expr: Expr, task: Task, rules: Rules) -> bool:
    """Whether `expr` as an answer is well-formed and misses the target under `rules` (scored like any answer)."""
    return score_response(format_completion("", expr_to_text(expr)), task, rules).outcome is Outcome.WRONG_VALUE


def _operator_slips(expr: Expr) -> list[Expr]:
    """`expr` with one of its operators replaced by another, for every operator and replacement."""
    if isinstance(expr, int):
        return []
    op, left, right = expr
    out: list[Expr] = [(other, left, right) for other in "+-*/" if other != op]
    out += [(op, slip, right) for slip in _operator_slips(left)]
    out += [(op, left, slip) for slip in _operator_slips(right)]
    return out


def _slip(task: Task, result: SearchResult, rng: random.Random, rules: Rules) -> Expr:
    """The wrong answer of a slip trace: the solution with one operator changed (its value
    wrong), else a failed attempt of the walk."""
    if result.expression is None:  # unreachable for a solvable goal: the search ends at a solution
        raise RuntimeError(f"search found no expression for {task.numbers} -> {task.target}")
    candidates = [e for e in _operator_slips(result.expression) if _wrong_value(e, task, rules)]
    candidates = candidates or [e for _, e in result.attempts if _wrong_value(e, task, rules)]
    if not candidates:
        raise RuntimeError(f"no wrong answer close to {expr_to_text(result.expression)} for {task.numbers} -> {task.target}")
    return rng.choice(candidates)


def _trace(
    task: Task,
    condition: Condition,
    result: SearchResult,
    text: str,
    counts: Mapping[str, int],
    answer: str,
    kind: str | None,
    reasoned: str,
    rules: Rules,
) -> Trace:
    score = score_response(text, task, rules)
    if score.outcome is not (Outcome.CORRECT if kind is None else Outcome.WRONG_VALUE):
        raise RuntimeError(f"trace answer {answer!r} scored {score.outcome.value} for {task.numbers} -> {task.target}")
    return Trace(
        text=text,
        behaviors={b: int(counts.get(b, 0)) for b in BEHAVIORS},
        correct=score.correct,
        condition=condition.name,
        numbers=task.numbers,
        target=task.target,
        answer=answer,
        incorrect=kind is not None,
        incorrect_kind=kind,
        dead_ends=result.dead_ends,
        nodes=result.nodes,
        # reasoned: the expression the reasoning arrived at (a slip answers something else).
        meta={"reasoned": reasoned, "search_rules": "plain" if result.rules.integer_intermediates else "full"},
    )


def _reasoning_trace(
    task: Task, condition: Condition, *, seed: int, index: int, kind: str | None, config: TraceConfig, rules: Rules
) -> Trace:
    runs_out = kind == "ranout"
    shortest = None
    # Too long: search again (another random walk), then with fewer failed paths, down to the
    # condition's minimum. Attempt 0 of the full budget is the trace when nothing is too long.
    budgets: list[int] = [0]
    if condition.explores:
        budgets = list(range(config.max_dead_ends, config.search_config(explores=True).min_dead_ends - 1, -1))
        if runs_out:  # never below the search's own minimum of failed paths
            budgets = sorted({max(b, RANOUT_MIN_DEAD_ENDS) for b in budgets}, reverse=True)

    def keep(expr: Expr) -> bool:
        # A ranout answer must be a wrong value under the rules: a miss completed through a
        # division step can leave a remainder the task's rules forbid (e.g. classic), where
        # the miss itself, which leaves numbers unused, is an answer.
        return _wrong_value(expr, task, rules)

    for budget in budgets:
        for attempt in range(RETRIES_PER_BUDGET):
            result = _search(task, condition, config, seed, index, budget, attempt, kind, rules)
            reached = result.closest(keep, partial=not rules.use_all_numbers) if runs_out else result.expression
            if reached is None:
                if runs_out:  # no failed path of this walk is a valid answer: walk again
                    continue
                raise RuntimeError(f"search found no expression for {task.numbers} -> {task.target}")  # a solvable task always has one
            reasoned = expr_to_text(reached)
            # The reasoning (slip included) is the walk's own, with the conclusion it reached;
            # only a slip's answer line differs from it.
            rendered = render(
                result.events,
                condition.behaviors,
                numbers=task.numbers,
                goal=task.target,
                answer=reasoned,
                style=config.style,
                rng=_rng("text", seed, index, task, condition.name, budget, attempt),
            )
            answer = (
                expr_to_text(_slip(task, result, _rng("slip", seed, index, task, budget, attempt), rules)) if kind == "slip" else reasoned
            )
            text = format_completion(rendered.think, answer)
            if config.max_chars is None or len(text) <= config.max_chars:
                return _trace(task, condition, result, text, rendered.behaviors, answer, kind, reasoned, rules)
            shortest = len(text) if shortest is None else min(shortest, len(text))
    if shortest is None:  # the task leaves no wrong answer to run out on: the user must choose another kind or other tasks
        raise UsageError(
            f"no ranout search of {list(task.numbers)} -> {task.target} ended on a failed path that is a valid answer under {rules}; "
            "use --incorrect-kind slip or other tasks"
        )
    raise UsageError(  # the settings cannot fit this task: the user must change them
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
    incorrect_kind: str | None = None,
    config: TraceConfig | None = None,
    rules: Rules = DEFAULT_RULES,
) -> Trace:
    """The trace of `condition` for `task` (the `index`-th task of a batch), correct (or, with
    `incorrect`, wrong) under `rules`: the task preset's, `countdown_env.preset_rules`; see `generate_traces`."""
    cond = get_condition(condition)
    kind = incorrect_kind_for(incorrect, incorrect_kind)
    config = config or TraceConfig()
    if cond.control is None:
        return _reasoning_trace(task, cond, seed=seed, index=index, kind=kind, config=config, rules=rules)
    # Controls keep the answer of a reasoning trace and drop its reasoning.
    source = get_condition(config.dots_source if cond.control == "dots" else "negative_control")
    base = _reasoning_trace(task, source, seed=seed, index=index, kind=kind, config=config, rules=rules)
    think = "." * len(_think_of(base.text)) if cond.control == "dots" else ""
    text = format_completion(think, base.answer)
    return replace(base, text=text, condition=cond.name, behaviors=dict.fromkeys(BEHAVIORS, 0), meta={**base.meta, "source": source.name})


def generate_traces(
    tasks: Iterable[Task],
    condition: str,
    *,
    seed: int,
    incorrect: bool = False,
    incorrect_kind: str | None = None,
    config: TraceConfig | None = None,
    rules: Rules = DEFAULT_RULES,
) -> list[Trace]:
    """One trace of `condition` per task; same seed, same traces (see the module docstring).

    With `incorrect=True` every answer is well-formed and wrong, while the reasoning keeps the
    task's target and the condition's behaviours. `incorrect_kind` says how it goes wrong:
    `"slip"` (the default: the correct trace with a wrong final answer line) or `"ranout"`
    (the search stops before the solution and answers its closest attempt). `rules` (the task
    preset's) decide what the search may do and how the answer is checked.
    """
    get_condition(condition)  # fail before any work on a bad name
    kind = incorrect_kind_for(incorrect, incorrect_kind)
    return [
        generate_trace(task, condition, seed=seed, index=i, incorrect=incorrect, incorrect_kind=kind, config=config, rules=rules)
        for i, task in enumerate(tasks)
    ]
