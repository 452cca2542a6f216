"""The solver against an independent brute force over every expression tree of small instances."""

from __future__ import annotations

import ast
import random
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from functools import cache
from itertools import combinations

import pytest

from countdown_env import Rules, Task, all_solutions, closest, count_solutions, reachable, score_response, solve
from tests.countdown_env.test_expression import exact_eval

TV = Rules(use_all_numbers=False, integer_intermediates=True, allow_negative_intermediates=False)


# ---- brute force: every binary tree over every ordered split, exact values ------------
# A tree is (value, form) where form is a canonical description up to commutativity and
# associativity built from the tree directly: sums as a multiset of (sign, term), products
# as a multiset of (power, factor).
def _flatten(kind: str, form: object, sign: int) -> Counter:
    if isinstance(form, tuple) and form[0] == kind:
        return Counter({(s * sign, f): c for (s, f), c in form[1]})
    return Counter({(sign, form): 1})


def _combine_forms(op: str, a: object, b: object) -> object:
    kind = "sum" if op in "+-" else "prod"
    parts = _flatten(kind, a, 1) + _flatten(kind, b, -1 if op in "-/" else 1)
    return (kind, frozenset(parts.items()))


def _ok(value: Fraction, rules: Rules) -> bool:
    if rules.integer_intermediates and value.denominator != 1:
        return False
    return rules.allow_negative_intermediates or value >= 0


@cache
def brute(numbers: tuple[int, ...], rules: Rules) -> dict[Fraction, frozenset]:
    """value -> set of canonical forms of every expression using *all* of `numbers`."""
    if len(numbers) == 1:
        return {Fraction(numbers[0]): frozenset([numbers[0]])}
    out: dict[Fraction, set] = {}
    idx = range(len(numbers))
    for size in range(1, len(numbers)):
        for left_idx in combinations(idx, size):  # ordered splits: (left, right) and (right, left) both appear
            left = tuple(numbers[i] for i in left_idx)
            right = tuple(numbers[i] for i in idx if i not in left_idx)
            for a, fa in brute(left, rules).items():
                for b, fb in brute(right, rules).items():
                    for op in rules.operators:
                        if op == "/" and b == 0:
                            continue
                        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
                        if not _ok(value, rules):
                            continue
                        forms = out.setdefault(value, set())
                        forms.update(_combine_forms(op, x, y) for x in fa for y in fb)
    return {v: frozenset(f) for v, f in out.items()}


def brute_any_subset(numbers: tuple[int, ...], rules: Rules) -> dict[Fraction, frozenset]:
    if rules.use_all_numbers:
        return brute(numbers, rules)
    out: dict[Fraction, set] = {}
    for size in range(1, len(numbers) + 1):
        for idx in combinations(range(len(numbers)), size):
            for v, f in brute(tuple(numbers[i] for i in idx), rules).items():
                out.setdefault(v, set()).update(f)
    return {v: frozenset(f) for v, f in out.items()}


def form_of_text(text: str) -> object:
    """The canonical form of a solver's output string, through Python's parser."""

    def walk(node: ast.AST) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(node.op)]  # type: ignore[attr-defined]
        return _combine_forms(op, walk(node.left), walk(node.right))  # type: ignore[attr-defined]

    return walk(ast.parse(text, mode="eval").body)


def instances(seed: int, count: int, sizes: tuple[int, ...] = (3, 4), hi: int = 10) -> Iterator[tuple[tuple[int, ...], Rules]]:
    rng = random.Random(seed)
    rule_sets = [Rules(), TV, Rules(allow_negative_intermediates=False), Rules(operators=("+", "-", "*"))]
    for i in range(count):
        n = rng.choice(sizes)
        yield tuple(sorted(rng.randint(0 if i % 7 == 0 else 1, hi) for _ in range(n))), rule_sets[i % len(rule_sets)]


def check_expression(expr: str, numbers: tuple[int, ...], target: int, rules: Rules) -> None:
    assert exact_eval(expr) == target
    assert score_response(f"<answer>{expr}</answer>", Task(numbers, target), rules).correct, expr


@pytest.mark.parametrize("seed", range(4))
def test_solve_finds_a_solution_iff_brute_force_does(seed: int) -> None:
    for numbers, rules in instances(seed, 8):
        values = brute_any_subset(numbers, rules)
        for target in range(0, 60):
            expr = solve(numbers, target, rules)
            assert (expr is not None) == (Fraction(target) in values), (numbers, target, rules)
            if expr is not None:
                check_expression(expr, numbers, target, rules)


@pytest.mark.parametrize("seed", range(3))
def test_reachable_matches_brute_force(seed: int) -> None:
    for numbers, rules in instances(100 + seed, 8):
        ours = reachable(numbers, rules)
        assert set(ours) == set(brute_any_subset(numbers, rules))
        for value, expr in list(ours.items())[:20]:
            from countdown_env.solver import expr_to_text

            assert exact_eval(expr_to_text(expr)) == value


@pytest.mark.parametrize("seed", range(3))
def test_all_solutions_up_to_commutativity_and_associativity(seed: int) -> None:
    for numbers, rules in instances(200 + seed, 6):
        values = brute_any_subset(numbers, rules)
        targets = sorted((v for v in values if v.denominator == 1 and v >= 0), key=lambda v: -len(values[v]))[:3]
        for target in targets:
            t = int(target)
            expected = values[target]
            found = all_solutions(numbers, t, rules, cap=10_000)
            forms = [form_of_text(s) for s in found]
            assert len(set(forms)) == len(forms), "two listed solutions are the same up to commutativity/associativity"
            assert set(forms) == set(expected), (numbers, t, rules)
            assert count_solutions(numbers, t, rules, cap=10_000) == len(expected)
            for s in found:
                check_expression(s, numbers, t, rules)


def test_all_solutions_counts_a_sum_once_and_respects_the_cap() -> None:
    assert all_solutions((1, 2, 3), 6, Rules(operators=("+",))) == ["1 + 2 + 3"]
    assert count_solutions((1, 2, 3), 6) == len({form_of_text(s) for s in all_solutions((1, 2, 3), 6)})
    assert set(all_solutions((1, 2, 3), 6)) >= {"1 + 2 + 3", "1 * 2 * 3"}
    many = count_solutions((1, 2, 3, 4, 5, 6), 21, cap=100)
    assert many == 100
    assert len(all_solutions((1, 2, 3, 4, 5, 6), 21, cap=7)) == 7
    assert all_solutions((5, 5), 3) == [] and count_solutions((5, 5), 3) == 0


@pytest.mark.parametrize("seed", range(2))
def test_closest_matches_brute_force(seed: int) -> None:
    for numbers, rules in instances(300 + seed, 8):
        values = brute_any_subset(numbers, rules)
        for target in (0, 17, 53, 97, 1000):
            near = closest(numbers, target, rules)
            best = min(abs(v - target) for v in values)
            assert near.distance == best
            assert Fraction(near.value) in values
            assert exact_eval(near.expression) == near.value


def test_closest_when_unsolvable_and_when_solvable() -> None:
    near = closest((1, 1, 1, 1, 1, 1), 999, TV)
    assert (near.value, near.distance) == (9, 990)
    assert closest((2, 3), 6).distance == 0


def test_classic_game_under_tv_rules() -> None:
    numbers = (100, 75, 50, 25, 6, 3)
    expr = solve(numbers, 952, TV)
    assert expr is not None
    check_expression(expr, numbers, 952, TV)
    assert solve((1, 1, 1, 1, 1, 1), 999, TV) is None


def test_solve_edge_cases() -> None:
    assert solve((), 3) is None
    assert solve((7,), 7) == "7" and solve((7,), 8) is None
    assert solve((7, 3), 7, Rules(use_all_numbers=False)) == "7"
    assert solve((7, 3), 7) is None
    assert solve((4, 0), 0) is not None
    assert solve((2, 3), -1) == "2 - 3"
    assert solve((2, 3), -1, Rules(allow_negative_intermediates=False)) is None


def test_meet_in_the_middle_agrees_with_depth_first_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five and six numbers: solve (meet in the middle) vs the depth-first search vs reachable."""
    from countdown_env import solver

    rng = random.Random(5)
    cases = [(tuple(rng.randint(1, 12) for _ in range(5)), Rules()) for _ in range(2)]
    cases.append(((1, 2, 3, 5, 7, 11), Rules(operators=("+", "-", "*"))))
    for numbers, rules in cases:
        values = reachable(numbers, rules)
        targets = [*rng.sample(range(0, 400), 12), 10**6 + 7]
        mitm = {t: solve(numbers, t, rules) for t in targets}
        monkeypatch.setattr(solver, "MEET_IN_THE_MIDDLE_FROM", 99)
        dfs = {t: solve(numbers, t, rules) for t in targets}
        monkeypatch.undo()
        for t in targets:
            assert (mitm[t] is None) == (dfs[t] is None) == (t not in values), (numbers, t)
            if mitm[t] is not None:
                check_expression(mitm[t], numbers, t, rules)


@pytest.mark.parametrize(
    ("numbers", "target", "message"),
    [
        ([True, 5], 6, "integers"),  # a bool is no number: never 'True + 5'
        ([-3, 5], 2, "non-negative"),  # never '-3 + 5'
        ([2.5, 2], 5, "integers"),
        ((3, 5), 8.5, "target"),
        ("35", 8, "sequence"),
        ((3, 10**15 + 1), 8, "10\\*\\*15"),
    ],
)
def test_solve_validates_its_inputs_like_task(numbers, target, message) -> None:
    with pytest.raises(ValueError, match=message):
        solve(numbers, target)


def test_solve_takes_numpy_ints_and_whole_floats() -> None:
    import numpy as np

    assert solve(np.array([3, 5, 2]), np.int64(16)) == "2 * (3 + 5)"
    assert solve([np.int32(3), 5.0], 8) == "3 + 5"
    for bad in ([np.float64(2.5), 2], [np.True_, 5]):
        with pytest.raises(ValueError, match="integers"):
            solve(bad, 5)
    assert solve(np.array([], dtype=int), 3) is None
