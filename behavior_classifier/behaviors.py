"""The four cognitive behaviours of Gandhi et al. (2025), as counted in Countdown reasoning traces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

BEHAVIORS: Final = ("verification", "backtracking", "subgoal_setting", "backward_chaining")
"""Behaviour names, in the order used for columns, prompts and JSON keys (public contract)."""

DEFINITIONS: Final[dict[str, str]] = {
    "verification": (
        "explicitly checking an intermediate or final result against the target or the rules "
        '("52 is not 32", "that gives 32, which is the target", "too big", "7 is used twice")'
    ),
    "backtracking": (
        "realising a path fails and going back to try a different one, explicitly "
        '("let me try again", "that doesn\'t work, try ...") or by starting a new combination '
        "that does not build on the previous result; the first attempt is not backtracking"
    ),
    "subgoal_setting": (
        "breaking the problem into intermediate goals stated as such "
        '("first get close to 30, then use 4 and 3 to make up the difference", "first make 15")'
    ),
    "backward_chaining": (
        'reasoning from the target back to the inputs ("32 = 8 * 4, so I need 8 from 25, 30 and 3", "64 is 97 - 33, so make 33")'
    ),
}
"""One-line definitions, shared by the LLM judge prompts and the docs."""

Counts = dict[str, int]
"""A classifier's result for one trace: each behaviour name to a non-negative count."""


def validate_counts(counts: Mapping[str, object]) -> Counts:
    """Return `counts` as a `Counts` with exactly the four names and non-negative ints, or raise ValueError.

    Accepts integral floats (``2.0``) and digit strings (``"2"``) as judges sometimes write them;
    rejects booleans, negatives, fractions, missing or extra keys.
    """
    missing = [name for name in BEHAVIORS if name not in counts]
    extra = [name for name in counts if name not in BEHAVIORS]
    if missing or extra:
        raise ValueError(f"expected exactly the keys {list(BEHAVIORS)}; missing {missing}, unexpected {extra}")
    out: Counts = {}
    for name in BEHAVIORS:
        value = counts[name]
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a non-negative integer, got a boolean")
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        out[name] = value
    return out
