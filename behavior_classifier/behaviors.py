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
"""One-line definitions of the JSON protocol (``--protocol json``), shared by its prompts and the docs."""

STUDY_DEFINITIONS: Final[dict[str, str]] = {
    "verification": (
        "steps where the reasoning checks the result it has reached against the target number. Explicit checks count "
        '("this gives 1, which is not 22", "since 25 is not 22"), and so do implicit verdicts ("too high!", "this works!")'
    ),
    "backtracking": (
        "the reasoning sees that a path will not reach the target and goes back to try another. In Countdown, "
        "every fresh attempt at a combination of the numbers that does not continue from the result just computed "
        'is one instance: with numbers [20, 7, 11, 78], the attempts "(78 - 20) - (11 - 7) = 54", "(78 - 11) - (20 - 7) = 54", '
        '"(78 - 20) + (11 + 7) = 76" each restart from the given numbers, two instances of backtracking after the first attempt'
    ),
    "subgoal_setting": (
        "the reasoning splits the problem into smaller intermediate goals stated as such, "
        '("first I will try to get close to half the target, then ..."); count each distinct subgoal'
    ),
    "backward_chaining": (
        "the reasoning starts from the target and works back towards the given numbers "
        '(target 24 with 12 and 2: "working back from 24: 24 / 2 = 12, so 12 * 2 = 24"; target 22 with 25 and 3: '
        '"the target is 22 and 22 + 3 = 25, so ...")'
    ),
}
"""Definitions of the study's protocol (``--protocol study``): the scope of the four prompts Gandhi et al. (2025)
sent to gpt-4o-mini, in our own words. Where they differ from `DEFINITIONS`: verification is a check against
the target only (not of the rules, "7 is used twice"), implicit verdicts ("too high!") included; backtracking
is counted per restart from the given numbers, as in the study's worked example."""

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
