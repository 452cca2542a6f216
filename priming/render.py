"""Turn a recorded search into first-person reasoning text, counting each behaviour written.

Each behaviour has several phrasings per style, drawn with a seeded `random.Random`, so a model
cannot learn one sentence; everything else (the arithmetic steps, openers, closers) is neutral
text that shows none of the four behaviours (see `priming.conditions` for the definitions).
The counts returned are incremented exactly where a behaviour phrase is written, so they are
the ground truth for the classifier.

Two styles: `full` (sentences, for pretrained models) and `compact` (short phrases joined by
commas, ~100-300 characters for 3 numbers, for tiny character-level models).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from countdown_env.expression import Value
from priming.conditions import BACKTRACKING, BACKWARD_CHAINING, BEHAVIORS, SUBGOAL_SETTING, VERIFICATION
from priming.search import Backtrack, Check, Combine, Compose, Decompose, Event

STYLES = ("full", "compact")


def num(value: Value) -> str:
    """A value as written in a trace: fractions and negatives in parentheses, so that every
    step reads `a op b = c` with unambiguous operands."""
    if isinstance(value, Fraction) and value.denominator == 1:
        value = int(value)
    text = str(value)
    return f"({text})" if isinstance(value, Fraction) or value < 0 else text


def listing(values: Sequence[Value], style: str) -> str:
    """`7, 5 and 9` (full) or `7 5 9` (compact)."""
    words = [num(v) for v in values]
    if style == "compact":
        return " ".join(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def step(left: Value, op: str, right: Value, value: Value, style: str) -> str:
    """One arithmetic step; the only place a computation is written."""
    return f"{num(left)}{op}{num(right)}={num(value)}" if style == "compact" else f"{num(left)} {op} {num(right)} = {num(value)}"


# ---- phrasings ------------------------------------------------------------------------
# Placeholders: {a} {b} operands, {rest} the other values, {goal} the value sought, {v} a
# result, {state} the values gone back to, {x} a needed value, {last} the last step written
# as `x op d = goal`, {nums} the task's numbers, {expr} the answer.

PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "full": {
        "open": (
            "Let me find an equation for {goal} using {nums}.",
            "I have {nums} and want to reach {goal}.",
            "Numbers {nums}, target {goal}.",
        ),
        "step": ("{step}.", "Now {step}.", "{step}, leaving {after}.", "Combine {a} and {b}: {step}."),
        "last_step": ("{step}.", "Next {step}.", "Then {step}."),
        # A step on two other numbers that keeps the previous result for later (4+ numbers):
        # said explicitly, so that it does not read as abandoning that result.
        "step_aside": ("Keeping {prev}, {step}.", "{prev} stays as it is; next {step}.", "Also {step}, to go with {prev}."),
        "close": ("So the answer is {expr}.", "The equation is {expr}.", "Written as one expression: {expr}."),
        VERIFICATION + "/miss": (
            "{v} is not {goal}.",
            "That gives {v}, not {goal}.",
            "Check: {v} against {goal}, no match.",
            "{v} misses {goal}.",
        ),
        VERIFICATION + "/hit": ("{v} is the target.", "That gives {goal}, which is the target.", "Check: {v} equals the target {goal}."),
        VERIFICATION + "/hit_sub": (
            "That is the {goal} I was after.",
            "{v} matches the {goal} I need.",
            "Check: {v} equals {goal}, as required.",
        ),
        BACKTRACKING: (
            "Let me go back to {state} and try another combination.",
            "That path is a dead end; back to {state}.",
            "Going back to {state} to try something else.",
            "Let me undo that and start again from {state}.",
        ),
        SUBGOAL_SETTING: (
            "First combine {a} and {b}, then use {rest} to reach {goal}.",
            "Plan: make one number from {a} and {b}, then bring in {rest} to get {goal}.",
            "First get near {goal} using {a} and {b}, then use {rest} to make up the difference.",
            "Break it into parts: {a} with {b} first, after that {rest}.",
        ),
        BACKWARD_CHAINING: (
            "{goal} = {lastrev}, so I need {x} from {rest}.",
            "Working backwards: if the last step is {last}, then {rest} must make {x}.",
            "To end with {last}, I need {x} from {rest}.",
        ),
    },
    "compact": {
        "open": ("",),
        "step": ("{step}",),
        "last_step": ("{step}",),
        "step_aside": ("{step}",),
        "close": ("",),
        VERIFICATION + "/miss": ("{v} not {goal}", "{v}!={goal}", "{v} vs {goal} no"),
        VERIFICATION + "/hit": ("{v} is target", "got {goal}", "{goal} reached"),
        VERIFICATION + "/hit_sub": ("got {goal}", "{goal} found", "{goal} as needed"),
        BACKTRACKING: ("back", "go back", "undo", "back to {state}"),
        SUBGOAL_SETTING: ("first {a}&{b} then {rest}", "plan {a}&{b} then {rest}", "subgoal {a}&{b} first"),
        BACKWARD_CHAINING: ("need {x} from {rest} as {last}", "{goal}={lastrev} so need {x}", "last step {last} so need {x}"),
    },
}


@dataclass(frozen=True)
class Rendered:
    """The reasoning text (inside `<think>`) and the behaviours written in it."""

    think: str
    behaviors: dict[str, int]


class _Writer:
    def __init__(self, behaviors: frozenset[str], style: str, rng: random.Random) -> None:
        self.behaviors = behaviors
        self.style = style
        self.rng = rng
        self.pieces: list[tuple[str, str]] = []
        """(separator written before it, text)."""
        self.new_line = False
        self.counts: Counter[str] = Counter({b: 0 for b in BEHAVIORS})

    def say(self, kind: str, **slots: object) -> None:
        text = self.rng.choice(PHRASES[self.style][kind]).format(**slots)
        if text:
            sep = ", " if self.style == "compact" else ("\n" if self.new_line else " ")
            self.pieces.append((sep, text))
            self.new_line = False

    def behave(self, behavior: str, kind: str | None = None, **slots: object) -> None:
        """Write one phrase of `behavior` (if the condition shows it) and count it."""
        if behavior in self.behaviors:
            self.say(kind or behavior, **slots)
            self.counts[behavior] += 1

    def text(self) -> str:
        return "".join(sep + text for sep, text in self.pieces)[len(self.pieces[0][0]) :] if self.pieces else ""


def render(
    events: Sequence[Event],
    behaviors: frozenset[str],
    *,
    numbers: Sequence[int],
    goal: Value,
    answer: str,
    style: str,
    rng: random.Random,
) -> Rendered:
    """Write the walk `events` as reasoning that shows exactly `behaviors`.

    Raises ValueError if the walk contains a move the behaviours cannot express (a return
    without backtracking, a decomposition without backward chaining): a condition and its
    search strategy must agree.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    w = _Writer(behaviors, style, rng)
    w.say("open", goal=num(goal), nums=listing(numbers, style))
    previous: Combine | None = None  # the step just before on the current path
    for event in events:
        if isinstance(event, Combine):
            _write_combine(w, event, previous)
            previous = event
        else:
            _write_move(w, event)
            previous = None
    w.say("close", expr=answer)
    return Rendered(w.text(), dict(w.counts))


def _write_combine(w: _Writer, event: Combine, previous: Combine | None) -> None:
    """One step forwards: the subgoal it serves (if any numbers remain), then the step itself."""
    style = w.style
    slots = {
        "a": num(event.left),
        "b": num(event.right),
        "goal": num(event.goal),
        "step": step(event.left, event.op, event.right, event.value, style),
    }
    if event.others:
        w.behave(SUBGOAL_SETTING, rest=listing(event.others, style), **slots)
    if previous is not None and previous.value not in (event.left, event.right):
        w.say("step_aside", prev=num(previous.value), **slots)
    elif event.others:
        w.say("step", after=listing(event.after, style), **slots)
    else:
        w.say("last_step", **slots)


def _write_move(w: _Writer, event: Event) -> None:
    """Any other event of the walk: working backwards, composing, checking, going back."""
    style = w.style
    if isinstance(event, Decompose):
        if BACKWARD_CHAINING not in w.behaviors:
            raise ValueError("the walk works backwards but the condition does not show backward chaining")
        left, op, right, value = event.step
        w.behave(
            BACKWARD_CHAINING,
            goal=num(value),
            x=num(event.need),
            rest=listing(event.rest, style),
            last=step(left, op, right, value, style),
            lastrev=f"{num(left)}{op}{num(right)}" if style == "compact" else f"{num(left)} {op} {num(right)}",
        )
    elif isinstance(event, Compose):
        w.say("last_step", step=step(event.left, event.op, event.right, event.value, style))
    elif isinstance(event, Check):
        kind = VERIFICATION + ("/miss" if not event.hit else "/hit" if event.final else "/hit_sub")
        w.behave(VERIFICATION, kind, v=num(event.value), goal=num(event.goal))
    elif isinstance(event, Backtrack):
        if BACKTRACKING not in w.behaviors:
            raise ValueError("the walk goes back but the condition does not show backtracking")
        w.behave(BACKTRACKING, state=listing(event.values, style))
        w.new_line = True  # full style: each fresh attempt on its own line
