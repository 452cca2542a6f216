"""Prompt text and reply parsing of the LLM judge (no HTTP here: see `client.py`).

Two layouts:
- ``all`` (default, the contract's wire protocol): one request per trace asking for a JSON object with
  exactly the four behaviour names as keys and integer counts as values.
- ``per_behavior`` (the study's layout): one request per behaviour, each asking for ``{"<name>": count}``.

Any change to the prompt text must bump `PROMPT_VERSION`: it is part of the cache key, so cached labels
from an older prompt are never mixed with new ones.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Final

from behavior_classifier.behaviors import BEHAVIORS, DEFINITIONS, Counts, validate_counts

PROMPT_VERSION: Final = "cb-2025.1"
"""Version of the prompt text below; part of the cache key."""

MODES: Final = ("all", "per_behavior")

MAX_REPLY_CHARS = 20_000
"""Longest reply parsed; replies are untrusted text, so parsing work is bounded."""

SYSTEM_PROMPT: Final = (
    "You are an expert annotator of reasoning traces. You count cognitive behaviours in a language model's "
    "attempt at the Countdown game (combine the given numbers with + - * / to reach the target, each number used "
    "once). You answer with a single JSON object and nothing else."
)

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


class MalformedReply(ValueError):
    """The judge's reply holds no JSON object with the expected keys and non-negative integer counts."""


def _task_line(numbers: Sequence[int] | None, target: int | None) -> str:
    if numbers is None or target is None:
        return "The task is not given; infer it from the trace if needed.\n"
    return f"The numbers are {list(numbers)} and the target is {target}.\n"


def _definitions(names: Sequence[str]) -> str:
    return "\n".join(f"- {name}: {DEFINITIONS[name]}" for name in names)


def build_messages(text: str, numbers: Sequence[int] | None = None, target: int | None = None) -> list[dict[str, str]]:
    """Chat messages asking for all four counts of one trace (the trace is included verbatim)."""
    keys = ", ".join(f'"{name}"' for name in BEHAVIORS)
    example = json.dumps(dict.fromkeys(BEHAVIORS, 0))
    user = (
        "Here is a chain of reasoning a language model wrote while playing Countdown.\n"
        + _task_line(numbers, target)
        + "Count the distinct instances of each behaviour in it:\n"
        + _definitions(BEHAVIORS)
        + "\nTrying different combinations is natural in this game; a new combination that does not build on the "
        "previous result counts as backtracking. Plain arithmetic without a judgement is not verification.\n\n"
        "<trace>\n" + text + "\n</trace>\n\n"
        f"Answer with a JSON object with exactly the keys {keys} and non-negative integer counts as values, "
        f"for example {example}."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def build_behavior_messages(
    behavior: str, text: str, numbers: Sequence[int] | None = None, target: int | None = None
) -> list[dict[str, str]]:
    """Chat messages asking for the count of one behaviour (the study's one-prompt-per-behaviour layout)."""
    if behavior not in BEHAVIORS:
        raise ValueError(f"unknown behaviour {behavior!r}; choose one of {list(BEHAVIORS)}")
    user = (
        "Here is a chain of reasoning a language model wrote while playing Countdown.\n"
        + _task_line(numbers, target)
        + f"Count the distinct instances of {behavior.replace('_', ' ')}:\n"
        + _definitions([behavior])
        + "\n\n<trace>\n"
        + text
        + "\n</trace>\n\n"
        f'Answer with a JSON object with exactly one key, "{behavior}", and a non-negative integer count, '
        f'for example {{"{behavior}": 0}}.'
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_UNDECODABLE: Final = (ValueError, RecursionError)
"""What json raises on text that is not JSON (deep nesting exhausts the recursion limit)."""


def _json_objects(reply: str) -> list[object]:
    """JSON objects found in `reply`: the whole reply, fenced blocks, then every `{` that starts one."""
    reply = reply[:MAX_REPLY_CHARS].strip()
    candidates: list[object] = []
    # RecursionError: the stdlib decoder recurses once per nesting level, so `[[[[...` raises it, not ValueError.
    with contextlib.suppress(*_UNDECODABLE):
        candidates.append(json.loads(reply))
    for block in _FENCE.findall(reply):
        with contextlib.suppress(*_UNDECODABLE):
            candidates.append(json.loads(block.strip()))
    decoder = json.JSONDecoder()
    # raw_decode from each opening brace finds an object embedded in prose; capped so a reply full of
    # braces costs bounded work.
    for i, match in enumerate(re.finditer(r"\{", reply)):
        if i >= 64:
            break
        try:
            obj, _ = decoder.raw_decode(reply, match.start())
        except _UNDECODABLE:
            continue
        candidates.append(obj)
    return candidates


#: Largest count a reply may give for one behaviour. No trace the judge reads holds more instances than this;
#: a bigger number (10**30) is a broken reply, and stored it would swamp every average.
MAX_COUNT = 1000


def parse_counts(reply: str | None, behaviors: Sequence[str] = BEHAVIORS) -> Counts:
    """The counts in a judge reply, tolerant of whitespace, prose and code fences; `MalformedReply` otherwise.

    With `behaviors` a subset (per-behaviour mode), only those keys are expected.
    """
    if not reply or not reply.strip():
        raise MalformedReply("empty reply")
    problems: list[str] = []
    for obj in _json_objects(reply):
        if not isinstance(obj, dict):
            continue
        try:
            if tuple(behaviors) == BEHAVIORS:
                counts = validate_counts(obj)
            else:
                full = validate_counts({**dict.fromkeys(BEHAVIORS, 0), **obj})
                counts = {name: full[name] for name in behaviors}
            too_big = {name: value for name, value in counts.items() if value > MAX_COUNT}
            if too_big:
                raise ValueError(f"counts above {MAX_COUNT} ({', '.join(f'{k}: {len(str(v))} digits' for k, v in too_big.items())})")
            return counts
        except ValueError as err:
            problems.append(str(err))
    detail = f": {problems[0]}" if problems else ": no JSON object found"
    raise MalformedReply(f"reply is not a JSON object of {list(behaviors)} counts{detail}")
