"""The budgeted search: a real walk of the tree that ends at a solution (or runs out), within its budgets."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from countdown_env import generate_tasks
from countdown_env.expression import apply
from countdown_env.solver import expr_to_text
from priming.search import Backtrack, Check, Combine, Compose, Decompose, SearchConfig, search

TASKS = generate_tasks(60, seed=5, preset="priming")


def evaluate(expr: object) -> Fraction:
    if isinstance(expr, int):
        return Fraction(expr)
    op, left, right = expr  # type: ignore[misc]
    value = apply(op, evaluate(left), evaluate(right))
    assert value is not None
    return Fraction(value)


def replay(events: tuple, numbers: tuple[int, ...], goal: int, solved: bool = True) -> None:
    """Walk the events like a reader would: every step uses values that are on the table, every
    check is right about its value, every return goes to a state seen before."""
    seen = {tuple(sorted(numbers))}
    table = list(numbers)
    for event in events:
        if isinstance(event, Combine):
            assert sorted(event.before) == sorted(table), (event, table)
            assert apply(event.op, event.left, event.right) == event.value
            table = list(event.after)
            assert sorted(table) == sorted([*event.others, event.value])
            seen.add(tuple(sorted(table)))
        elif isinstance(event, Decompose):
            left, op, right, value = event.step
            assert apply(op, left, right) == value == event.goal
            assert sorted([*event.rest, event.operand]) == sorted(table)
            table = list(event.rest)
            seen.add(tuple(sorted(table)))
        elif isinstance(event, Check):
            assert len(table) == 1 and table[0] == event.value and event.hit == (event.value == event.goal)
        elif isinstance(event, Backtrack):
            assert tuple(sorted(event.values)) in seen
            table = list(event.values)
        elif isinstance(event, Compose):
            assert apply(event.op, event.left, event.right) == event.value
            table = [event.value]
    final = [e for e in events if isinstance(e, Check)][-1]
    if solved:
        assert final.hit and final.value == goal and final.final
    else:
        assert not any(isinstance(e, Check) and e.hit for e in events) and not any(isinstance(e, Compose) for e in events)
        assert events[-1] == final  # a search that runs out stops at a miss, not at a return


@pytest.mark.parametrize("strategy", ["forward", "backward", "mixed"])
def test_walk_is_consistent_and_ends_at_a_solution(strategy: str) -> None:
    config = SearchConfig(strategy, max_dead_ends=3, min_dead_ends=1)  # type: ignore[arg-type]
    for i, task in enumerate(TASKS):
        result = search(task.numbers, task.target, config, random.Random(i))
        assert result.expression is not None
        assert evaluate(result.expression) == task.target
        assert sorted(int(t) for t in expr_to_text(result.expression).replace("(", " ").replace(")", " ").split() if t.isdigit()) == sorted(
            task.numbers
        )
        replay(result.events, task.numbers, task.target)
        assert 1 <= result.dead_ends <= 3
        misses = sum(isinstance(e, Check) and not e.hit for e in result.events)
        returns = sum(isinstance(e, Backtrack) for e in result.events)
        assert misses == returns == result.dead_ends  # every failed path is followed by one return
        if strategy == "forward":
            assert not any(isinstance(e, Decompose) for e in result.events)


def test_backward_search_starts_from_the_target() -> None:
    config = SearchConfig("backward", max_dead_ends=2)
    firsts = [search(t.numbers, t.target, config, random.Random(0)).events[0] for t in TASKS]
    assert sum(isinstance(e, Decompose) for e in firsts) >= 0.9 * len(TASKS)


def test_zero_budget_goes_straight_to_a_solution() -> None:
    config = SearchConfig("forward", max_dead_ends=0, min_dead_ends=0, max_nodes=0)
    for task in TASKS:
        result = search(task.numbers, task.target, config, random.Random(1))
        assert result.dead_ends == 0
        assert [type(e) for e in result.events] == [Combine] * (len(task.numbers) - 1) + [Check]


def test_node_budget_bounds_the_walk() -> None:
    config = SearchConfig("forward", max_dead_ends=50, min_dead_ends=0, max_nodes=3, branch_cap=3)
    for task in TASKS:
        result = search(task.numbers, task.target, config, random.Random(2))
        # The budget stops exploration; finishing the current path and the way to the solution
        # each take at most len(numbers) - 1 more steps.
        assert result.nodes <= 3 + 2 * (len(task.numbers) - 1)


def test_unreachable_goal_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="makes 1000"):
        search((1, 2, 3), 1000, SearchConfig(), random.Random(0))


@pytest.mark.parametrize(("strategy", "budget"), [("forward", 1), ("forward", 3), ("backward", 2), ("mixed", 2), ("mixed", 4)])
def test_a_search_that_runs_out_shows_only_failed_paths(strategy: str, budget: int) -> None:
    config = SearchConfig(strategy, max_dead_ends=budget, min_dead_ends=min(budget, 2), find_solution=False)  # type: ignore[arg-type]
    for i, task in enumerate(TASKS):
        result = search(task.numbers, task.target, config, random.Random(i))
        assert result.expression is None
        replay(result.events, task.numbers, task.target, solved=False)
        assert result.dead_ends == budget  # the budget is spent (the tree of 3-4 numbers has enough failed paths)
        assert sum(isinstance(e, Backtrack) for e in result.events) == budget - 1
        assert 1 <= len(result.attempts) <= budget  # a completion through x/0 is left out
        for value, expr in result.attempts:  # every attempt uses every number once and misses the target
            assert evaluate(expr) == value != task.target
            assert sorted(int(t) for t in expr_to_text(expr).replace("(", " ").replace(")", " ").split() if t.isdigit()) == sorted(
                task.numbers
            )
        closest = result.closest()
        assert abs(evaluate(closest) - task.target) == min(abs(v - task.target) for v, _ in result.attempts)


def test_a_search_that_runs_out_is_deterministic() -> None:
    config = SearchConfig("mixed", max_dead_ends=3, find_solution=False)
    for i, task in enumerate(TASKS[:10]):
        assert search(task.numbers, task.target, config, random.Random(i)) == search(task.numbers, task.target, config, random.Random(i))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "sideways"},
        {"min_dead_ends": 2, "max_dead_ends": 1},
        {"branch_cap": 0},
        {"max_nodes": -1},
        {"find_solution": False, "max_dead_ends": 0, "min_dead_ends": 0},
    ],
)
def test_search_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SearchConfig(**kwargs)
