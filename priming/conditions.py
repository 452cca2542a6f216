"""The priming conditions of the study: which behaviours a trace shows, and the controls.

What each behaviour means here (the study's definitions, made operational):
- verification: an explicit comparison of a computed value with the value sought, the target
  or a sub-goal derived from it ("26 is not 22", "that gives 22, which is the target").
- backtracking: an explicit return to an earlier state to try another combination after a
  path failed ("let me go back to 25, 30 and 3").
- subgoal_setting: a stated plan of intermediate goals before acting ("first combine 7 and 5,
  then use 9 to reach 22").
- backward_chaining: reasoning from the value sought back to what the inputs must make
  ("22 = 13 + 9, so I need 13 from 7 and 5"); the search really works backwards then.

The one judgement call: a path fails without verification. A backtracking step must follow
*some* realisation that the path failed, but saying why ("44 is not 22", "too big") is a
comparison with the target, i.e. verification. So in conditions without verification a failed
path ends with its last computation followed directly by the return ("35 - 9 = 26. Let me go
back to 7, 5 and 9."): the return itself is the only sign of failure, no value is compared
with the target, and no "not", "wrong", "too big" or "close" is written. The decision to go
back is part of backtracking as defined above; it is not counted as verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from behavior_classifier.behaviors import BEHAVIORS

VERIFICATION, BACKTRACKING, SUBGOAL_SETTING, BACKWARD_CHAINING = BEHAVIORS

Control = Literal["empty", "dots"]


@dataclass(frozen=True)
class Condition:
    """One priming condition."""

    name: str
    behaviors: frozenset[str]
    """Behaviours its traces show (every other behaviour is absent)."""
    strategy: Literal["forward", "backward", "mixed"] = "forward"
    """How its search expands the top of the tree (see `priming.search`)."""
    control: Control | None = None
    """empty: no reasoning, answer only; dots: reasoning replaced by dots of the same length."""
    description: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.behaviors) - set(BEHAVIORS)
        if unknown:
            raise ValueError(f"unknown behaviours {sorted(unknown)}; known: {BEHAVIORS}")
        if (BACKWARD_CHAINING in self.behaviors) != (self.strategy != "forward"):
            raise ValueError("backward chaining is shown exactly when the search works backwards (strategy backward or mixed)")
        if self.behaviors - {BACKTRACKING} and BACKTRACKING not in self.behaviors:
            # Verification, subgoals and backward chaining are written around failed paths and
            # returns; without backtracking a trace would have no failed paths to show them on.
            raise ValueError("conditions showing any behaviour must include backtracking")

    @property
    def explores(self) -> bool:
        """Whether its traces visit failed paths before the solution."""
        return BACKTRACKING in self.behaviors


def _condition(name: str, behaviors: tuple[str, ...], description: str, **kw: object) -> Condition:
    return Condition(name, frozenset(behaviors), description=description, **kw)  # type: ignore[arg-type]


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        _condition(
            "all_strategies", BEHAVIORS, "all four behaviours; the top of the search mixes forward and backward steps", strategy="mixed"
        ),
        _condition("only_backtracking", (BACKTRACKING,), "failed paths and returns, nothing else"),
        _condition("backtracking_verification", (BACKTRACKING, VERIFICATION), "returns, and every result compared with the goal"),
        _condition(
            "backtracking_backward",
            (BACKTRACKING, BACKWARD_CHAINING),
            "returns, and a search that starts from the target",
            strategy="backward",
        ),
        _condition("backtracking_subgoal", (BACKTRACKING, SUBGOAL_SETTING), "returns, and a plan stated before each combination"),
        _condition("negative_control", (), "straight to a solution: steps only, none of the four behaviours"),
        _condition("empty_cot", (), "empty reasoning, answer only", control="empty"),
        _condition("dots", (), "reasoning replaced by dots as long as the all_strategies trace", control="dots"),
    )
}


def get_condition(name: str) -> Condition:
    """The condition called `name`, or a ValueError listing the choices."""
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown condition {name!r}; choose one of {sorted(CONDITIONS)}") from None
