"""Read the arithmetic and the behaviour phrases back out of trace text, independently of the renderer."""

from __future__ import annotations

import re
from fractions import Fraction

# An operand as traces write it: 12, or (7/2) / (-3) in parentheses.
_NUM = r"(\d+|\(-?\d+(?:/\d+)?\))"
_OP = r"([-+*/])"
FORWARD = re.compile(rf"{_NUM}\s*{_OP}\s*{_NUM}\s*=\s*{_NUM}")
#: "22 = 13 + 9" (backward chaining writes the target first); not followed by another "=".
REVERSED = re.compile(rf"(?<![-+*/]\s)(?<![-+*/\d]){_NUM}\s*=\s*{_NUM}\s*{_OP}\s*{_NUM}(?!\s*=)")


def value(token: str) -> Fraction:
    return Fraction(token.strip("()"))


def apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def steps(text: str) -> list[tuple[Fraction, str, Fraction, Fraction]]:
    """Every `a op b = c` (and `c = a op b`) written in `text`, as (a, op, b, c)."""
    out = [(value(a), op, value(b), value(c)) for a, op, b, c in FORWARD.findall(text)]
    out += [(value(a), op, value(b), value(c)) for c, a, op, b in REVERSED.findall(text)]
    return out


def wrong_steps(text: str) -> list[str]:
    """The steps of `text` whose arithmetic is wrong, as text."""
    return [f"{a} {op} {b} = {c}" for a, op, b, c in steps(text) if apply(a, op, b) != c]


#: Language that signals each behaviour, written from the study's definitions (not copied from
#: the renderer's templates): a trace must contain none of the markers of a behaviour it does not show.
MARKERS = {
    "verification": re.compile(
        r"\bis not\b|\bnot \(?\d|!=|\bno match|\bmisses\b|\bmatches\b|\bequals\b|\bis (the )?target\b|\bgot \d|\breached\b|"
        r"\bfound\b|\bas needed\b|\bas required\b|\bI was after\b|\btoo (big|small|high|low)\b|\bclose\b|\bcorrect\b|\bwrong\b|\bvs\b",
        re.I,
    ),
    "backtracking": re.compile(r"\bback\b|\bundo\b|\bdead end\b|\bagain\b|\bretry\b|\bgive up\b", re.I),
    "subgoal_setting": re.compile(r"\bfirst\b|\bplan\b|\bsub-?goal\b|\bbreak it\b|\bafter that\b|\bthen use\b|\bstep one\b", re.I),
    "backward_chaining": re.compile(r"\bneed\b|\bwork(ing)? back|\bto end with\b|\bmust make\b|\blast step\b", re.I),
}


def marked(piece: str) -> list[str]:
    """Behaviours whose markers occur in `piece`."""
    return [name for name, pattern in MARKERS.items() if pattern.search(piece)]


# Numbers a trace compares a value with (verification), names as the target, or derives as a
# sub-goal (backward chaining); patterns written from what such sentences say in either style.
_GOAL = _NUM
COMPARED_WITH = re.compile(
    rf"\bis not {_GOAL}|, not {_GOAL}|\bagainst {_GOAL}|\bmisses {_GOAL}|\bnot {_GOAL}|!={_GOAL}|\bvs {_GOAL}|"
    rf"\bgives {_GOAL}, which is the target|\bequals the target {_GOAL}|\bthe {_GOAL} I (?:was after|need)|\bequals {_GOAL}, as required|"
    rf"\bgot {_GOAL}|{_GOAL} reached|{_GOAL} found|{_GOAL} as needed"
)
NAMED_TARGET = re.compile(rf"\btarget {_GOAL}|\breach {_GOAL}|\bequation for {_GOAL}|\bthe target {_GOAL}")
SUBGOAL = re.compile(rf"\bneed {_GOAL}|\bmust make {_GOAL}")


def _found(pattern: re.Pattern[str], text: str) -> list[Fraction]:
    return [value(next(g for g in groups if g)) for groups in pattern.findall(text)]


def compared_with(text: str) -> list[Fraction]:
    """Every value a check in `text` compares a result with."""
    return _found(COMPARED_WITH, text)


def named_targets(text: str) -> list[Fraction]:
    """Every value `text` calls the target (openers such as "I want to reach 22", "target 22")."""
    return _found(NAMED_TARGET, text)


def subgoals(text: str) -> list[Fraction]:
    """Every value `text` derives as needed from some of the numbers ("so I need 13")."""
    return _found(SUBGOAL, text)
