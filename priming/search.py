"""A budgeted search over the Countdown tree that records the path it took, dead ends included.

The solver in `countdown_env.solver` stops at the first solution and remembers nothing; a
reasoning trace needs the walk itself: which pair was combined, which leaf missed, where the
search went back to. This module performs that walk and returns it as a list of typed events
that `priming.render` turns into text. No library does this (search libraries return the
answer, not the walk), hence the hand-written depth-first search.

Two ways to expand a node, as a person solving Countdown would:
- forward: combine two of the numbers still available (`Combine`), recurse;
- backward (at the top of the task only): pick the number used last and the operation, and
  derive the value the other numbers must make (`Decompose`), then solve that sub-problem
  forward and finish with `Compose`.

The walk is bounded. Each node tries at most `branch_cap` children, and the whole search
expands at most `max_nodes` nodes and visits at most `max_dead_ends` failed leaves. Once a
budget is spent (or a node's cap reached) the search only enters children from which the goal
is still reachable (a memoised lookup in the solver's reachable-value table), so it always ends
at a solution of a solvable task, and the trace stays short enough for a small model.

With `find_solution=False` the walk is that of a search that runs out: it never takes the
step that would reach the goal, visits failed paths until its budget is spent and ends there,
and `SearchResult.closest()` is the failed attempt nearest the goal (the answer of a trace
whose final answer is wrong although it kept the right target).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from itertools import combinations
from typing import Literal

from countdown_env.expression import Value, apply
from countdown_env.rules import DEFAULT_RULES, Rules
from countdown_env.solver import Expr, allowed_value, combine, reachable_using_all, solve

Strategy = Literal["forward", "backward", "mixed"]
STRATEGIES: tuple[str, ...] = ("forward", "backward", "mixed")


def search_rules(rules: Rules = DEFAULT_RULES) -> tuple[Rules, ...]:
    """The rules a search tries, in order: the task's rules with whole, non-negative intermediate
    values first (every written step stays simple arithmetic), then the task's rules themselves
    (for tasks that need a fraction or a negative value). Each is as strict as `rules` or stricter,
    so whatever the search finds is correct under `rules`."""
    plain = rules.with_(integer_intermediates=True, allow_negative_intermediates=False)
    return (plain,) if plain == rules else (plain, rules)


def _operands(numbers: Sequence[int], goal: int, rules: Rules, min_operands: int = 1) -> tuple[int, ...] | None:
    """The numbers a solution of `goal` under `rules` uses: all of them, or (when the rules let
    a number go unused) those of the first solution the solver finds, else (that one uses fewer
    than `min_operands`) those of the smallest sub-multiset of at least `min_operands` numbers
    that makes `goal` with every one of them."""
    found = solve(numbers, goal, rules)
    if found is None:
        return None
    if rules.use_all_numbers:
        return tuple(numbers)
    operands = tuple(int(n) for n in re.findall(r"\d+", found))
    if len(operands) >= min_operands:
        return operands
    every = rules.with_(use_all_numbers=True)
    for size in range(min_operands, len(numbers) + 1):  # smallest first: a small solver search each
        for subset in dict.fromkeys(combinations(numbers, size)):
            if solve(subset, goal, every) is not None:
                return subset
    return None


@dataclass(frozen=True)
class SearchConfig:
    """How far the search may wander before it heads for a solution."""

    strategy: Strategy = "forward"
    """forward: combine pairs; backward: derive the last step from the goal first; mixed: both at the top."""
    max_dead_ends: int = 3
    """Failed leaves (every number used, goal missed) visited before the search follows a solution."""
    min_dead_ends: int = 1
    """Failed leaves visited first, when the tree has them (unsolvable children are tried first until then)."""
    branch_cap: int = 2
    """Children tried at one node before it is given up (unless it is the only way to the goal)."""
    max_nodes: int = 40
    """Nodes (combinations and decompositions) expanded before the search follows a solution."""
    find_solution: bool = True
    """False: the search runs out. It skips every step that would reach the goal and stops at the
    failed leaf where `max_dead_ends` failed leaves were visited, or `max_nodes` nodes expanded and
    at least `min_dead_ends` leaves failed (the root, where every number is still
    unused, ignores `branch_cap` so that the budget can be spent)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0 <= self.min_dead_ends <= self.max_dead_ends:
            raise ValueError(f"need 0 <= min_dead_ends <= max_dead_ends, got {self.min_dead_ends}, {self.max_dead_ends}")
        if self.branch_cap < 1:
            raise ValueError(f"branch_cap must be >= 1, got {self.branch_cap}")
        if self.max_nodes < 0:
            raise ValueError(f"max_nodes must be >= 0, got {self.max_nodes}")
        if not self.find_solution and self.max_dead_ends < 1:
            raise ValueError("a search that runs out (find_solution=False) needs max_dead_ends >= 1: its answer is a failed path")


# ---- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Combine:
    """A forward step `left op right = value`, taken from the values in `before`."""

    left: Value
    op: str
    right: Value
    value: Value
    before: tuple[Value, ...]
    after: tuple[Value, ...]
    goal: Value
    """The value this (sub-)search is after."""

    @property
    def others(self) -> tuple[Value, ...]:
        """Values of `before` not used by this step."""
        return _remove(self.before, (self.left, self.right))


@dataclass(frozen=True)
class Decompose:
    """A backward step: `goal = need op operand` (or `operand op need`), so `rest` must make `need`."""

    goal: Value
    op: str
    operand: Value
    need: Value
    need_first: bool
    """True: the last step is `need op operand`; False: `operand op need`."""
    rest: tuple[Value, ...]

    @property
    def step(self) -> tuple[Value, str, Value, Value]:
        """The last step as (left, op, right, value)."""
        left, right = (self.need, self.operand) if self.need_first else (self.operand, self.need)
        return left, self.op, right, self.goal


@dataclass(frozen=True)
class Compose:
    """The step that finishes a decomposition once its sub-goal was reached."""

    left: Value
    op: str
    right: Value
    value: Value


@dataclass(frozen=True)
class Check:
    """A leaf: every number of the (sub-)problem is used; `value` is compared with `goal`."""

    value: Value
    goal: Value
    hit: bool
    final: bool
    """True when `goal` is the task's target (not a sub-goal of a decomposition)."""


@dataclass(frozen=True)
class Backtrack:
    """The search returns to the node holding `values` to try another child."""

    values: tuple[Value, ...]
    goal: Value


Event = Combine | Decompose | Compose | Check | Backtrack


@dataclass(frozen=True)
class SearchResult:
    """The walk and where it ended."""

    events: tuple[Event, ...]
    expression: Expr | None
    """The solution found (nested `(op, left, right)` tuples), or None."""
    goal: Value
    dead_ends: int
    nodes: int
    rules: Rules
    attempts: tuple[tuple[Value, Expr], ...] = ()
    """Each failed path as (value, expression over all the numbers), in the order visited. A miss
    inside a decomposition is completed with the decomposition's last step; a completion that
    divides by zero is left out."""
    misses: tuple[tuple[Value, Expr], ...] = ()
    """Each failed leaf as (value, expression) as checked, not completed: inside a decomposition
    it leaves numbers unused, an answer only under rules that allow that (`classic`)."""

    def closest(self, keep: Callable[[Expr], bool] | None = None, *, partial: bool = False) -> Expr | None:
        """The failed attempt whose value is nearest the goal (the first of equals), or None.
        `keep`: only attempts it accepts (a completed miss can break rules its steps kept, e.g.
        a division with a remainder under `classic`). `partial`: the misses count too, after the attempts."""
        attempts = [a for a in (*self.attempts, *(self.misses if partial else ())) if keep is None or keep(a[1])]
        if not attempts:
            return None
        return min(attempts, key=lambda attempt: abs(attempt[0] - self.goal))[1]


# ---- the search -----------------------------------------------------------------------


@dataclass
class _Child:
    """One way to expand a node. Whether the goal is still reachable through it is computed
    only when the walk asks (most children are never looked at), then kept."""

    kind: Literal["combine", "decompose"]
    i: int
    j: int
    op: str
    swapped: bool
    value: Value
    values: tuple[Value, ...]
    """The values left to combine after this move."""
    goal: Value
    """The value they must make."""
    rules: Rules

    @cached_property
    def solvable(self) -> bool:
        return reaches(self.values, self.goal, self.rules)


def _remove(values: Sequence[Value], used: Sequence[Value]) -> tuple[Value, ...]:
    rest = list(values)
    for v in used:
        rest.remove(v)
    return tuple(rest)


def _normal(value: Value) -> Value:
    """Fractions with denominator 1 as ints, so `7 == Fraction(7)` keys one table entry."""
    return int(value) if isinstance(value, Fraction) and value.denominator == 1 else value


def reaches(values: Sequence[Value], goal: Value, rules: Rules) -> bool:
    """Whether an expression using every one of `values` makes `goal` (memoised in the solver)."""
    return goal in reachable_using_all(tuple(sorted(values)), rules)


def _needs(goal: Value, operand: Value, rules: Rules) -> list[tuple[str, bool, Value]]:
    """(op, need_first, need) with `need op operand == goal` or `operand op need == goal`."""
    out: list[tuple[str, bool, Value]] = []
    g, d = Fraction(goal), Fraction(operand)
    for op in rules.operators:
        if op == "+":
            candidates = [(True, g - d)]
        elif op == "-":
            candidates = [(True, g + d), (False, d - g)]
        elif op == "*":
            candidates = [(True, g / d)] if d else []
        else:
            candidates = [(True, g * d)] + ([(False, d / g)] if g else [])
        for need_first, need in candidates:
            need = _normal(need)
            left, right = (need, operand) if need_first else (operand, need)
            if allowed_value(need, rules) and apply(op, left, right) == goal:
                out.append((op, need_first, need))
    return out


class _Walk:
    """One depth-first walk; mutable counters live here, not in module globals."""

    def __init__(self, goal: Value, size: int, config: SearchConfig, rules: Rules, rng: random.Random) -> None:
        self.goal = goal
        self.size = size
        """How many numbers the task has: a node with that many values is the root."""
        self.config = config
        self.rules = rules
        self.rng = rng
        self.events: list[Event] = []
        self.dead_ends = 0
        self.nodes = 0
        self.attempts: list[tuple[Value, Expr]] = []
        self.misses: list[tuple[Value, Expr]] = []
        self.last_steps: list[tuple[str, Value, Expr, bool]] = []
        """(op, operand, its expression, need_first) of the decompositions the walk is inside."""
        self.stopped = False
        """A search that runs out sets this at the failed leaf where its budget was spent."""

    def spent(self) -> bool:
        return self.dead_ends >= self.config.max_dead_ends or self.nodes >= self.config.max_nodes

    def miss(self, value: Value, expr: Expr) -> None:
        """Record a failed leaf as a full attempt (completed through the enclosing decompositions)."""
        self.dead_ends += 1
        self.misses.append((value, expr))
        for op, operand, e_operand, need_first in reversed(self.last_steps):
            completed = apply(op, value, operand) if need_first else apply(op, operand, value)
            if completed is None:
                return
            value, expr = completed, ((op, expr, e_operand) if need_first else (op, e_operand, expr))
        self.attempts.append((value, expr))
        # Stopping here, at a visible miss, means the trace of a search that runs out ends on a failed check.
        if not self.config.find_solution:
            self.stopped = self.dead_ends >= self.config.max_dead_ends or (
                self.nodes >= self.config.max_nodes and self.dead_ends >= self.config.min_dead_ends
            )

    def skip(self, child: _Child, children: list[_Child], tried: int, root: bool) -> bool:
        """Whether the walk passes over `child` at a node (the root: all the numbers) where it already tried `tried` children."""
        if not self.config.find_solution:
            # Never take the step that reaches the (sub-)goal; below the root, try at most branch_cap children.
            return (len(child.values) == 1 and child.solvable) or (not root and tried >= self.config.branch_cap)
        # A spent budget skips failing children, except the first one of a node that was
        # entered while the budget lasted and cannot succeed: the walk goes down to a leaf,
        # so every return is preceded by a visible miss.
        return not child.solvable and (tried >= self.config.branch_cap or (self.spent() and (tried or any(c.solvable for c in children))))

    def forward_children(self, items: list[tuple[Value, Expr]], goal: Value) -> list[_Child]:
        out = []
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                rest = [items[k][0] for k in range(len(items)) if k not in (i, j)]
                for op, swapped, value in combine(items[i][0], items[j][0], self.rules):
                    out.append(_Child("combine", i, j, op, swapped, value, (*rest, value), goal, self.rules))
        return out

    def backward_children(self, items: list[tuple[Value, Expr]], goal: Value) -> list[_Child]:
        out, seen = [], set()
        for k in range(len(items)):
            rest = [items[m][0] for m in range(len(items)) if m != k]
            for op, need_first, need in _needs(goal, items[k][0], self.rules):
                key = (items[k][0], op, need_first, need)
                if key not in seen:
                    seen.add(key)
                    out.append(_Child("decompose", k, k, op, not need_first, need, tuple(rest), need, self.rules))
        return out

    def fail_first(self, children: list[_Child]) -> list[_Child]:
        """Move one failing child to the front while fewer than `min_dead_ends` failures were
        shown, so the trace shows the search going wrong before it goes right."""
        if self.dead_ends < self.config.min_dead_ends:
            failing = next((k for k, c in enumerate(children) if not c.solvable), None)
            if failing is not None:
                children.insert(0, children.pop(failing))
        return children

    def children(self, items: list[tuple[Value, Expr]], goal: Value, top: bool) -> list[_Child]:
        forward = self.forward_children(items, goal)
        self.rng.shuffle(forward)
        strategy = self.config.strategy
        if not top or len(items) < 3 or strategy == "forward":
            return self.fail_first(forward)
        backward = self.backward_children(items, goal)
        self.rng.shuffle(backward)
        if strategy == "backward" or not backward:
            # Forward moves stay as a last resort: `(a + b) / (c - d)` has no last step with
            # a single number, so no decomposition reaches it.
            return self.fail_first(backward) + forward
        # mixed: one child of a random way, then every child of the other way, then the rest,
        # so the second attempt at the top always uses the other way when it can.
        first, second = (forward, backward) if self.rng.random() < 0.5 else (backward, forward)
        first = self.fail_first(first)
        return first[:1] + second + first[1:]

    def explore(self, items: list[tuple[Value, Expr]], goal: Value, top: bool) -> Expr | None:
        if len(items) == 1:
            value, expr = items[0]
            hit = value == goal
            self.events.append(Check(value, goal, hit, final=goal == self.goal and top))
            if hit:
                return expr
            self.miss(value, expr)
            return None
        tried = 0
        values = tuple(v for v, _ in items)
        children = self.children(items, goal, top)
        for child in children:
            if self.stopped:
                break
            if self.skip(child, children, tried, root=top and len(items) == self.size):
                continue
            if tried:
                self.events.append(Backtrack(values, goal))
            tried += 1
            self.nodes += 1
            found = self.decompose(items, goal, child) if child.kind == "decompose" else self.combine(items, goal, top, child)
            if found is not None:
                return found
        return None

    def combine(self, items: list[tuple[Value, Expr]], goal: Value, top: bool, child: _Child) -> Expr | None:
        (a, ea), (b, eb) = items[child.i], items[child.j]
        left, right, el, er = (b, a, eb, ea) if child.swapped else (a, b, ea, eb)
        rest = [items[k] for k in range(len(items)) if k not in (child.i, child.j)]
        # The new value goes first: the next step then reads `13 + 9`, as people write it.
        after = [(child.value, (child.op, el, er)), *rest]
        self.events.append(Combine(left, child.op, right, child.value, tuple(v for v, _ in items), tuple(v for v, _ in after), goal))
        return self.explore(after, goal, top)

    def decompose(self, items: list[tuple[Value, Expr]], goal: Value, child: _Child) -> Expr | None:
        operand, e_operand = items[child.i]
        rest = [items[m] for m in range(len(items)) if m != child.i]
        need_first = not child.swapped
        event = Decompose(goal, child.op, operand, child.value, need_first, tuple(v for v, _ in rest))
        self.events.append(event)
        self.last_steps.append((child.op, operand, e_operand, need_first))
        sub = self.explore(rest, child.value, top=False)
        self.last_steps.pop()
        if sub is None:
            return None
        left, op, right, value = event.step
        self.events.append(Compose(left, op, right, value))
        self.events.append(Check(value, goal, True, final=goal == self.goal))
        return (op, sub, e_operand) if need_first else (op, e_operand, sub)


def search(
    numbers: Sequence[int], goal: int, config: SearchConfig, rng: random.Random, rules: Rules = DEFAULT_RULES, *, min_operands: int = 1
) -> SearchResult:
    """Walk the tree of `numbers` towards `goal`, recording every step, miss and return.

    Follows `rules` (the task preset's, `countdown_env.preset_rules`), with whole non-negative
    intermediates when the goal is reachable that way (`search_rules`). When the rules let a
    number go unused (`classic`), the walk combines the numbers of the first solution the
    solver finds, or of at least `min_operands` numbers (a trace whose answer must be wrong needs
    a step to get wrong, not a target that is one of the numbers). Raises ValueError if no
    expression (of at least `min_operands` numbers) makes `goal` under the rules.
    """
    for candidate in search_rules(rules):
        # The solver's depth-first search stops at the first solution: much cheaper than the
        # whole reachable-value table of all the numbers, which only sub-multisets need.
        operands = _operands(numbers, goal, candidate, min_operands)
        if operands is not None:
            break
    else:
        how = "using every one of" if rules.use_all_numbers else "from"
        raise ValueError(f"no expression {how} {list(numbers)} makes {goal}; traces need a solvable task")
    # The walk combines every one of its operands, so it follows the rules with that one changed.
    walk_rules = candidate.with_(use_all_numbers=True)
    walk = _Walk(goal, len(operands), config, walk_rules, rng)
    expression = walk.explore([(n, n) for n in operands], goal, top=True)
    return SearchResult(
        tuple(walk.events), expression, goal, walk.dead_ends, walk.nodes, candidate, tuple(walk.attempts), tuple(walk.misses)
    )
