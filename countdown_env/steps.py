"""The arithmetic a completion writes in its reasoning (`a op b = c`), and whether it is right.

Tiny models learn the format of reasoning long before its arithmetic (shared/CALIBRATION.md:
"1*2=21"), so the share of correct written steps belongs beside accuracy in every table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from countdown_env.expression import apply

#: Longest text read: reasoning beyond it is not scanned (bounded work on untrusted text).
MAX_CHARS = 20_000
_STEP = re.compile(r"(?<![\d.])(\d{1,12})\s*([-+*/])\s*(\d{1,12})\s*=\s*(-?\d{1,15})(?![\d.])")


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
    return [Step(int(a), op, int(b), int(c)) for a, op, b, c in _STEP.findall(text[:MAX_CHARS])]


def step_accuracy(texts: Iterable[str]) -> tuple[int, float]:
    """(number of written steps, share of them that are arithmetically right) over `texts`."""
    steps = [s for text in texts for s in written_steps(text)]
    return len(steps), (sum(s.correct for s in steps) / len(steps) if steps else float("nan"))
