"""The budgeted search: a real walk of the tree that ends at a solution, within its budgets."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from countdown_env import generate_tasks
from countdown_env.expression import apply
from countdown_env.solver import expr_to_text
from priming.search import Backtrack, Check, Combine, Compose, Decompose, SearchConfig, search, wrong_goal

TASKS = generate_tasks(60, seed=5, preset="priming")


def evaluate(expr: object) -> Fraction:
    if isinstance(expr, int):
        return Fraction(expr)
    op, left, right = expr  # type: ignore[misc]
    value = apply(op, evaluate(left), evaluate(right))
    assert value is not None
    return Fraction(value)


def replay(events: tuple, numbers: tuple[int, ...], goal: int) -> None:
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
    assert final.hit and final.value == goal and final.final


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


def test_wrong_goal_is_reachable_and_not_the_target() -> None:
    for task in TASKS:
        goal = wrong_goal(task.numbers, task.target, random.Random(3))
        assert goal != task.target and goal >= 0
        search(task.numbers, goal, SearchConfig(), random.Random(3))  # reachable: no error


@pytest.mark.parametrize(
    "kwargs", [{"strategy": "sideways"}, {"min_dead_ends": 2, "max_dead_ends": 1}, {"branch_cap": 0}, {"max_nodes": -1}]
)
def test_search_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SearchConfig(**kwargs)
