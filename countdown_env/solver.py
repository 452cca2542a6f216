"""Exact Countdown solver, memoised over multisets of numbers.

Values are ints while they can be and `Fraction`s only after an inexact division, so the
common case runs on machine-speed integer arithmetic. Expressions are nested tuples
`(op, left, right)` with int leaves, rendered to text only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import combinations

from countdown_env.expression import BinOp, ExpressionError, Neg, Node, Num, Value, apply, parse, to_text
from countdown_env.rules import DEFAULT_RULES, Rules
from countdown_env.task import Task

Expr = int | tuple  # int leaf or (op, left, right)


def expr_to_node(expr: Expr) -> Node:
    if isinstance(expr, int):
        return Num(expr)
    op, left, right = expr
    return BinOp(op, expr_to_node(left), expr_to_node(right))


def expr_to_text(expr: Expr) -> str:
    return to_text(expr_to_node(expr))


def allowed_value(value: Value, rules: Rules) -> bool:
    if isinstance(value, Fraction):
        if rules.integer_intermediates:
            return False
        if max(abs(value.numerator), value.denominator) > rules.max_magnitude:
            return False
    elif abs(value) > rules.max_magnitude:
        return False
    return rules.allow_negative_intermediates or value >= 0


def combine(a: Value, b: Value, rules: Rules) -> Iterator[tuple[str, bool, Value]]:
    """(op, swapped, value) for every allowed binary operation on a and b.

    + and * are tried in one order only (commutativity); - and / in both.
    """
    for op in rules.operators:
        orders = ((False, a, b),) if op in "+*" else ((False, a, b), (True, b, a))
        for swapped, x, y in orders:
            value = apply(op, x, y)
            if value is not None and allowed_value(value, rules):
                yield op, swapped, value


def _splits(items: tuple[Value, ...]) -> Iterator[tuple[tuple[Value, ...], tuple[Value, ...]]]:
    """Distinct unordered splits of a sorted multiset into two non-empty sub-multisets."""
    n = len(items)
    seen: set[tuple[tuple[Value, ...], tuple[Value, ...]]] = set()
    for size in range(1, n // 2 + 1):
        for idx in combinations(range(n), size):
            left = tuple(items[i] for i in idx)
            right = tuple(items[i] for i in range(n) if i not in idx)
            key = (left, right) if left <= right else (right, left)
            if key not in seen:
                seen.add(key)
                yield key


#: Sub-multisets up to this size are memoised across calls. Larger ones are not: six
#: numbers under the default rules reach ~340k values (~80 MB), and a cache of thousands
#: of those would exhaust memory, while small ones are shared by nearly every search.
CACHED_SIZE = 4


def reachable_using_all(items: tuple[Value, ...], rules: Rules) -> dict[Value, Expr]:
    """Every value an expression using *all* of `items` (sorted) reaches, one expression each."""
    if len(items) <= CACHED_SIZE:
        return _reachable_cached(items, rules)
    return _reachable(items, rules)


@lru_cache(maxsize=4096)
def _reachable_cached(items: tuple[Value, ...], rules: Rules) -> dict[Value, Expr]:
    return _reachable(items, rules)


def _reachable(items: tuple[Value, ...], rules: Rules) -> dict[Value, Expr]:
    if len(items) == 1:
        return {items[0]: items[0]}
    out: dict[Value, Expr] = {}
    for left, right in _splits(items):
        lvals, rvals = reachable_using_all(left, rules), reachable_using_all(right, rules)
        for a, ea in lvals.items():
            for b, eb in rvals.items():
                for op, swapped, value in combine(a, b, rules):
                    if value not in out:
                        out[value] = (op, eb, ea) if swapped else (op, ea, eb)
    return out


def sub_multisets(items: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    seen: set[tuple[int, ...]] = set()
    for size in range(1, len(items) + 1):
        for idx in combinations(range(len(items)), size):
            sub = tuple(items[i] for i in idx)
            if sub not in seen:
                seen.add(sub)
                yield sub


def reachable(numbers: Sequence[int], rules: Rules = DEFAULT_RULES) -> dict[Value, Expr]:
    """Every value reachable under the rules, with one expression for each.

    With `use_all_numbers` the expression uses every number; otherwise any sub-multiset,
    preferring the fewest numbers.
    """
    items = tuple(sorted(numbers))
    if rules.use_all_numbers:
        return reachable_using_all(items, rules)
    out: dict[Value, Expr] = {}
    for sub in sub_multisets(items):  # smallest subsets first, so fewest operations win
        for value, expr in reachable_using_all(sub, rules).items():
            out.setdefault(value, expr)
    return out


def _last_step(a: Value, ea: Expr, b: Value, eb: Expr, target: int, ops: tuple[str, ...]) -> Expr | None:
    """The final operation on the last two values, if one reaches `target`.

    The leaves of the search are most of its nodes, so this tests the target directly
    (`a == target * b` instead of building a Fraction for a / b) rather than listing
    every value. The caller has checked that `target` itself is an allowed value.
    """
    if "+" in ops and a + b == target:
        return ("+", ea, eb)
    if "*" in ops and a * b == target:
        return ("*", ea, eb)
    if "-" in ops:
        if a - b == target:
            return ("-", ea, eb)
        if b - a == target:
            return ("-", eb, ea)
    if "/" in ops:
        if b != 0 and a == target * b:
            return ("/", ea, eb)
        if a != 0 and b == target * a:
            return ("/", eb, ea)
    return None


def _dfs(items: list[tuple[Value, Expr]], target: int, rules: Rules, dead: set[tuple[Value, ...]]) -> Expr | None:
    if not rules.use_all_numbers:
        for value, expr in items:
            if value == target:
                return expr
    if len(items) == 1:
        return items[0][1] if items[0][0] == target else None
    if len(items) == 2:
        (a, ea), (b, eb) = items
        return _last_step(a, ea, b, eb, target, rules.operators) if allowed_value(target, rules) else None
    key = tuple(sorted(v for v, _ in items))
    if key in dead:
        return None
    for i, j in combinations(range(len(items)), 2):
        (a, ea), (b, eb) = items[i], items[j]
        rest = [items[k] for k in range(len(items)) if k != i and k != j]
        for op, swapped, value in combine(a, b, rules):
            expr = (op, eb, ea) if swapped else (op, ea, eb)
            found = _dfs([*rest, (value, expr)], target, rules, dead)
            if found is not None:
                return found
    dead.add(key)
    return None


def solve(numbers: Sequence[int], target: int, rules: Rules = DEFAULT_RULES) -> str | None:
    """One expression reaching `target` under the rules, or None if none does.

    Up to four numbers (or when numbers may be left out): depth-first "combine two
    numbers, recurse" with a memo of dead multisets, which stops at the first solution
    and is far cheaper than enumerating every reachable value. From five numbers, all
    used: meet in the middle (see `MEET_IN_THE_MIDDLE_FROM`).
    """
    numbers, target = _checked(numbers, target)
    if not numbers:
        return None
    if rules.use_all_numbers and len(numbers) >= MEET_IN_THE_MIDDLE_FROM:
        expr = _meet_in_the_middle(tuple(sorted(numbers)), target, rules)
    else:
        expr = _dfs([(n, n) for n in numbers], target, rules, set())
    return None if expr is None else expr_to_text(expr)


def _checked(numbers: Sequence[int], target: int) -> tuple[tuple[int, ...], int]:
    """(numbers, target) as exact ints, validated as `Task` validates them (numpy ints and whole floats are
    converted; bools, 2.5, negative numbers and values beyond the literal limit raise ValueError), so the
    solver never answers `True + 5` or `-3 + 5`. No numbers at all is allowed: nothing reaches the target."""
    if isinstance(numbers, (str, bytes)) or not isinstance(numbers, Iterable):
        raise ValueError(f"numbers must be a sequence of integers, got {numbers!r}")
    numbers = tuple(numbers)
    if not numbers:
        return (), Task((0,), target).target
    task = Task(numbers, target)
    return task.numbers, task.target


#: From this many numbers (all of them used), `solve` splits the numbers in two and
#: matches reachable values instead of searching depth-first: 4x faster when there is
#: no solution for six numbers (the depth-first search must then visit every tree),
#: but slower than the depth-first search's early exit for four.
MEET_IN_THE_MIDDLE_FROM = 5


def _meet_in_the_middle(items: tuple[Value, ...], target: int, rules: Rules) -> Expr | None:
    """An expression whose last operation joins a value of one part of `items` with one of
    the other. Balanced splits first: their value sets are the cheapest to list."""
    if not allowed_value(target, rules):
        return None
    for left, right in sorted(_splits(items), key=lambda split: max(len(split[0]), len(split[1]))):
        lvals, rvals = reachable_using_all(left, rules), reachable_using_all(right, rules)
        if len(lvals) > len(rvals):
            lvals, rvals = rvals, lvals
        for a, ea in lvals.items():
            for op, swapped, b in _partners(a, target, rules.operators, rvals):
                return (op, rvals[b], ea) if swapped else (op, ea, rvals[b])
    return None


@dataclass(frozen=True)
class Closest:
    value: Value
    expression: str
    distance: Value


def closest(numbers: Sequence[int], target: int, rules: Rules = DEFAULT_RULES) -> Closest:
    """The reachable value nearest to `target` (ties go to the smaller value).

    An exact solution is looked for first (the depth-first `solve` stops early); only
    without one is every reachable value listed, which for six numbers under the
    default (fractional) rules takes seconds.
    """
    exact = solve(numbers, target, rules)
    if exact is not None:
        return Closest(target, exact, 0)
    values = reachable(numbers, rules)
    best = min(values, key=lambda v: (abs(v - target), v))
    return Closest(best, expr_to_text(values[best]), abs(best - target))


# ---- all solutions, up to commutativity and associativity -----------------------------
# A canonical form flattens chains of + and - into (positive terms, negative terms) and
# chains of * and / into (numerator factors, denominator factors), each sorted, so
# a+b+c, c+(b+a) and (a+c)+b are one solution.


def _canon_key(form: object) -> str:
    return repr(form)


def _canon(op: str, a: object, b: object) -> tuple:
    kind, inv = ("s", "-") if op in "+-" else ("p", "/")

    def parts(x: object) -> tuple[tuple, tuple]:
        if isinstance(x, tuple) and x[0] == kind:
            return x[1], x[2]
        return (x,), ()

    (ap, an), (bp, bn) = parts(a), parts(b)
    pos, neg = (ap + bn, an + bp) if op == inv else (ap + bp, an + bn)
    return (kind, tuple(sorted(pos, key=_canon_key)), tuple(sorted(neg, key=_canon_key)))


def _render_canon(form: object) -> str:
    if isinstance(form, int):
        return str(form)
    kind, pos, neg = form  # type: ignore[misc]
    plus, minus = (" + ", " - ") if kind == "s" else (" * ", " / ")

    def term(x: object) -> str:
        # Flattening leaves only sums inside products, and those need parentheses.
        text = _render_canon(x)
        return f"({text})" if isinstance(x, tuple) and kind == "p" else text

    text = plus.join(term(x) for x in pos)
    for x in neg:
        text += minus + term(x)
    return text


def _node_canon(node: Node) -> object:
    """The canonical form of a parsed tree (`_canon` applied bottom-up); `-x` is `0 - x` with no 0 term."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Neg):
        return ("s", (), (_node_canon(node.operand),))
    return _canon(node.op, _node_canon(node.left), _node_canon(node.right))


def canonical_form(answer: str, rules: Rules = DEFAULT_RULES) -> str | None:
    """One text per answer up to commutativity and associativity, or None if it does not parse.

    `3 + 5`, `5+3` and `(5 + 3) = 8` give the same text, and so do `(a+b)+c` and `a+(b+c)`;
    `a-b` and `b-a`, or `a/b` and `b/a`, do not. The same form `all_solutions` counts by, so
    `distinct solutions` of a model's answers and a task's `solution_count` agree.
    """
    try:
        return _render_canon(_node_canon(parse(answer, rules)))
    except ExpressionError:
        return None


def _partners(a: Value, value: Value, ops: tuple[str, ...], rvals: dict[Value, Expr]) -> Iterator[tuple[str, bool, Value]]:
    """(op, swapped, b) for every b in `rvals` with `a op b == value` (or `b op a` if swapped).

    Solves for b instead of trying every b; only 0 * b and 0 / b (any b reaches 0) need a scan.
    """
    candidates: list[tuple[str, bool, Value | None]] = []
    if "+" in ops:
        candidates.append(("+", False, value - a))
    if "-" in ops:
        candidates += [("-", False, a - value), ("-", True, a + value)]
    if "*" in ops:
        if a != 0:
            candidates.append(("*", False, apply("/", value, a)))
        elif value == 0:
            candidates += [("*", False, b) for b in rvals]
    if "/" in ops:
        if value != 0:
            candidates.append(("/", False, apply("/", a, value)))
        elif a == 0:
            candidates += [("/", False, b) for b in rvals if b != 0]
        if a != 0:
            candidates.append(("/", True, value * a))
    for op, swapped, b in candidates:
        # The exact re-check keeps this a filter: a candidate is only ever a guess.
        if b is not None and b in rvals and (apply(op, b, a) if swapped else apply(op, a, b)) == value:
            yield op, swapped, b


@lru_cache(maxsize=4096)
def _forms_for(items: tuple[Value, ...], value: Value, rules: Rules, cap: int) -> frozenset:
    """Canonical forms (at most `cap`) of expressions over all of `items` that reach `value`.

    Top-down: for each split, each left value a and only the right values b that combine
    with a into `value`, so forms are built for the values on a path to the target
    rather than for every reachable value (seconds for six numbers otherwise).
    """
    if len(items) == 1:
        return frozenset([items[0]]) if items[0] == value else frozenset()
    if not allowed_value(value, rules):
        return frozenset()
    out: set = set()
    for left, right in _splits(items):
        rvals = reachable_using_all(right, rules)
        for a in reachable_using_all(left, rules):
            for op, swapped, b in _partners(a, value, rules.operators, rvals):
                fa, fb = _forms_for(left, a, rules, cap), _forms_for(right, b, rules, cap)
                for x in fa:
                    for y in fb:
                        out.add(_canon(op, y, x) if swapped else _canon(op, x, y))
                        if len(out) >= cap:
                            return frozenset(out)
    return frozenset(out)


def all_solutions(numbers: Sequence[int], target: int, rules: Rules = DEFAULT_RULES, cap: int = 100) -> list[str]:
    """Distinct solutions up to commutativity/associativity, at most `cap` of them.

    The cap bounds the forms kept per (sub-multiset, value), so work stays bounded for
    six numbers; below the cap the list is complete. Which solutions make the list when
    there are more than `cap` depends on search order (the list is sorted, not ranked).
    """
    items = tuple(sorted(numbers))
    subsets: Iterable[tuple[int, ...]] = [items] if rules.use_all_numbers else sub_multisets(items)
    found: dict[str, None] = {}
    for sub in subsets:
        for form in _forms_for(sub, target, rules, cap):
            found.setdefault(_render_canon(form), None)
            if len(found) >= cap:
                return sorted(found)
    return sorted(found)


def count_solutions(numbers: Sequence[int], target: int, rules: Rules = DEFAULT_RULES, cap: int = 100) -> int:
    """How many distinct solutions (up to commutativity/associativity), capped at `cap`."""
    return len(all_solutions(numbers, target, rules, cap))
