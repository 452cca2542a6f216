"""The `Task` type: one Countdown problem (numbers, target) and what is known about it.

Its own module so that code which only passes tasks around (scoring, priming, rl) does not
depend on how tasks are generated (`countdown_env.tasks`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any


def _as_int(value: Any, name: str) -> int:
    """An exact integer from an int-like value (numpy ints, 3.0), never by truncation:
    `int(2.5)` would silently turn a bad row into a different task."""
    must = "numbers must be integers" if name == "numbers" else f"{name} must be an integer"
    if isinstance(value, bool):
        raise ValueError(f"{must}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{must}, got {_short(value)}") from None


def _short(value: Any) -> str:
    """`value` for an error message, cut so a 5000-digit number neither floods it nor fails str()."""
    if isinstance(value, tuple):
        text = "(" + ", ".join(_short(v) for v in value[:8]) + (", ...)" if len(value) > 8 else ")")
    elif isinstance(value, int) and value.bit_length() >= 1000:
        text = f"<a {value.bit_length()}-bit number>"
    else:
        text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


#: The default bound on literals and values (`Rules.max_magnitude`); `Task` refuses numbers beyond it, which no
#: answer could use under the default rules.
LITERAL_LIMIT = 10**15


@dataclass(frozen=True)
class Task:
    """One Countdown problem: reach `target` from `numbers`."""

    numbers: tuple[int, ...]
    target: int
    solution: str | None = None
    """One reference solution, if known."""
    solution_count: int | None = None
    """Distinct solutions up to commutativity/associativity (capped at 100)."""
    plus_minus_only: bool | None = None
    """Whether + and - alone suffice."""
    min_operations: int | None = None
    """Fewest operations of any solution."""
    seed: int | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.numbers, (str, bytes)) or not isinstance(self.numbers, Iterable):
            raise ValueError(f"numbers must be a sequence of integers, got {self.numbers!r}")
        object.__setattr__(self, "numbers", tuple(_as_int(n, "numbers") for n in self.numbers))
        object.__setattr__(self, "target", _as_int(self.target, "target"))
        if not self.numbers:
            raise ValueError("a task needs at least one number")
        if any(n < 0 for n in self.numbers):
            raise ValueError(f"numbers must be non-negative integers, got {_short(self.numbers)}")
        # An answer cannot write a number beyond the literal limit (the scorer refuses it), nor reach such a
        # target: the task could only ever score 0.
        if any(n > LITERAL_LIMIT for n in self.numbers) or abs(self.target) > LITERAL_LIMIT:
            raise ValueError(
                f"numbers and target must be at most 10**15 in size, got numbers {_short(self.numbers)}, target {_short(self.target)}"
            )

    @property
    def key(self) -> tuple[tuple[int, ...], int]:
        """Identity for de-duplication and splits: (sorted numbers, target)."""
        return tuple(sorted(self.numbers)), self.target

    def to_dict(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if v is not None}
        row["numbers"] = list(self.numbers)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Task:
        if not isinstance(row, dict):
            raise ValueError(f'a task row must be an object like {{"numbers": [3, 5], "target": 8}}, got {type(row).__name__}')
        numbers = row.get("numbers", row.get("nums"))
        if numbers is None or "target" not in row:
            raise ValueError(f"a task row needs 'numbers' (or 'nums') and 'target'; got keys {sorted(row)}")
        known = {f.name for f in fields(cls)}
        extra = {k: v for k, v in row.items() if k in known and k not in ("numbers", "target")}
        return cls(numbers=numbers, target=row["target"], **extra)  # __post_init__ validates
