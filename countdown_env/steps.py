"""The arithmetic a completion writes in its reasoning (`a op b = c`), and whether it is right.

Tiny models learn the format of reasoning long before its arithmetic (bench/README.md,
Calibration: "1*2=21"), so the share of correct written steps belongs beside accuracy in every table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from countdown_env.expression import apply

#: Longest text read: reasoning beyond it is not scanned (bounded work on untrusted text).
MAX_CHARS = 20_000
# "= 7." ends a sentence: only a digit or a decimal part after the result disqualifies it.
_STEP = re.compile(r"(?<![\d.])(\d{1,12})\s*([-+*/])\s*(\d{1,12})\s*=\s*(-?\d{1,15})(?!\d|\.\d)")
_CHAINED = frozenset("+-*/()")


@dataclass(frozen=True)
class Step:
    left: int
    op: str
    right: int
    written: int

    @property
    def correct(self) -> bool:
        value = apply(self.op, self.left, self.right)
        return value is not None and Fraction(value) == self.written


def written_steps(text: str) -> list[Step]:
    """Every integer step `a op b = c` written in `text` (the first MAX_CHARS characters)."""
    text = text[:MAX_CHARS]
    steps = []
    for match in _STEP.finditer(text):
        before = text[: match.start()].rstrip()[-1:]
        if before and before in _CHAINED:
            continue  # "10 - 4 - 2 = 4": the tail of a longer expression, not the step 4 - 2 = 4
        a, op, b, c = match.groups()
        steps.append(Step(int(a), op, int(b), int(c)))
    return steps


def step_accuracy(texts: Iterable[str]) -> tuple[int, float]:
    """(number of written steps, share of them that are arithmetically right) over `texts`."""
    steps = [s for text in texts for s in written_steps(text)]
    return len(steps), (sum(s.correct for s in steps) / len(steps) if steps else float("nan"))
