"""Prompt text and reply parsing of the LLM judge (no HTTP here: see `client.py`).

Two protocols (``countdown-lab classify --protocol``):

- ``json`` (default, the contract's wire protocol, fast): our definitions (`behaviors.DEFINITIONS`), replies
  as JSON, sent at temperature 0; a reply without valid counts is asked again, then the trace is recorded as a
  failure (never as zeros). Two layouts (``--mode``):
  - ``all``: one request per trace asking for a JSON object with the four behaviour names as keys;
  - ``per_behavior``: one request per behaviour, each asking for ``{"<name>": count}``.
- ``study`` (Gandhi et al., 2025, as their public code did it): one request per behaviour per trace, with the
  study's definitions (`behaviors.STUDY_DEFINITIONS`, in our words), the answer read from the first
  ``<count>N</count>`` tag of the reply, no temperature sent (the server's default, 1 on OpenAI, as the study
  sent none) and 512 reply tokens. A reply without a count tag is counted as 0 and not asked again, as the
  study's parser did (``int(match.group(1)) if match else 0``); the output row lists such behaviours in
  ``judge_parse_failures`` so they can be told apart from true zeros. A request that fails outright (HTTP error
  after the retries) fails the trace, as in the json protocol. Four requests per trace instead of one: about
  four times the prompt tokens.

Any change to the prompt text must bump `PROMPT_VERSION` (json) or `STUDY_PROMPT_VERSION` (study): they are
part of the cache key, so cached labels from an older prompt are never mixed with new ones.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Final

from behavior_classifier.behaviors import BEHAVIORS, DEFINITIONS, STUDY_DEFINITIONS, Counts, validate_counts

PROMPT_VERSION: Final = "cb-2025.1"
"""Version of the json protocol's prompt text below; part of the cache key."""

STUDY_PROMPT_VERSION: Final = "study-2025.1"
"""Version of the study protocol's prompt text below; part of the cache key."""

MODES: Final = ("all", "per_behavior")
PROTOCOLS: Final = ("json", "study")

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


# ---- the study's protocol -------------------------------------------------------------------------------------

STUDY_SYSTEM_PROMPT: Final = "You are an assistant that analyses the reasoning in worked arithmetic problems."

STUDY_MAX_TOKENS: Final = 512
"""Reply cap of the study's requests (its judge was asked to reason before giving the count)."""

_COUNT_TAG = re.compile(r"<count>(\d+)</count>")


def build_study_messages(behavior: str, text: str, numbers: Sequence[int] | None = None, target: int | None = None) -> list[dict[str, str]]:
    """Chat messages asking for the count of one behaviour, answered in a ``<count>N</count>`` tag (the study's protocol)."""
    if behavior not in BEHAVIORS:
        raise ValueError(f"unknown behaviour {behavior!r}; choose one of {list(BEHAVIORS)}")
    name = behavior.replace("_", " ")
    task = (
        f"The numbers are {list(numbers)} and the target is {target}."
        if numbers is not None and target is not None
        else "The numbers and the target are not given; read them from the reasoning."
    )
    user = (
        "A language model wrote the reasoning below while playing Countdown (reach the target by combining the "
        f"numbers with + - * /). {task}\n\n<reasoning>\n{text}\n</reasoning>\n\n"
        f"Does the reasoning show {name}, that is {STUDY_DEFINITIONS[behavior]}?\n"
        f"Count the distinct instances of {name} and give the count between the tags <count> </count>. "
        "If there is none, answer <count>0</count>."
    )
    return [{"role": "system", "content": STUDY_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_count_tag(reply: str | None) -> int | None:
    """The count in the first ``<count>N</count>`` tag of `reply` (as the study's parser read it), or None when
    there is none or it exceeds `MAX_COUNT` (the caller counts None as 0, as the study did, and records it)."""
    match = _COUNT_TAG.search((reply or "")[:MAX_REPLY_CHARS])
    if match is None or len(match.group(1)) > len(str(MAX_COUNT)):
        return None
    value = int(match.group(1))
    return value if value <= MAX_COUNT else None
