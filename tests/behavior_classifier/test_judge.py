"""Prompt construction and tolerant parsing of judge replies."""

from __future__ import annotations

import json

import pytest

from behavior_classifier.behaviors import BEHAVIORS, validate_counts
from behavior_classifier.judge import PROMPT_VERSION, MalformedReply, build_behavior_messages, build_messages, parse_counts

COUNTS = {"verification": 2, "backtracking": 1, "subgoal_setting": 0, "backward_chaining": 3}
PLAIN = json.dumps(COUNTS)


@pytest.mark.parametrize(
    "reply",
    [
        PLAIN,
        f"  \n\t{PLAIN}\n\n",
        f"```json\n{PLAIN}\n```",
        f"```\n{json.dumps(COUNTS, indent=2)}\n```",
        f"Here is my analysis.\n\nThe trace verifies twice.\n{PLAIN}\nLet me know if you need more.",
        f"Counts: {PLAIN} (backward chaining dominates)",
        '{"verification": 2.0, "backtracking": "1", "subgoal_setting": 0, "backward_chaining": 3}',
        "{not json} then " + PLAIN,
    ],
)
def test_parse_tolerates_whitespace_prose_and_fences(reply: str) -> None:
    assert parse_counts(reply) == COUNTS


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "I count 2 verifications and 1 backtrack.",
        '{"verification": 1, "backtracking": 1}',  # missing keys
        json.dumps({**COUNTS, "reflection": 4}),  # unexpected key
        json.dumps({**COUNTS, "backtracking": -1}),
        json.dumps({**COUNTS, "backtracking": 1.5}),
        json.dumps({**COUNTS, "backtracking": True}),
        '{"verification": 2, "backtracking": ',
    ],
)
def test_parse_rejects_malformed_replies(reply: str) -> None:
    with pytest.raises(MalformedReply):
        parse_counts(reply)


def test_parse_single_behaviour() -> None:
    assert parse_counts('```json\n{"backtracking": 4}\n```', ("backtracking",)) == {"backtracking": 4}
    with pytest.raises(MalformedReply):
        parse_counts('{"backtracking": -4}', ("backtracking",))
    with pytest.raises(MalformedReply):
        parse_counts('{"backtracking": 1, "planning": 2}', ("backtracking",))


@pytest.mark.parametrize(
    "reply",
    [
        "[" * 5000,  # json.loads recurses once per level: RecursionError, not ValueError
        '{"verification": ' + "[" * 5000,  # the same inside raw_decode from a brace
        "```json\n" + "[" * 5000 + "\n```",  # and inside a fenced block
        "{" + '"a":{' * 5000,
    ],
)
def test_parse_deep_nesting_is_a_malformed_reply(reply: str) -> None:
    with pytest.raises(MalformedReply):
        parse_counts(reply)


def test_parse_bounded_on_huge_replies() -> None:
    with pytest.raises(MalformedReply):
        parse_counts("{" * 1_000_000)


def test_messages_hold_trace_verbatim_and_ask_for_the_four_keys() -> None:
    trace = "<think>Let me try 25 + 3 = 28\n\n  not 32 {}</think>"
    messages = build_messages(trace, (25, 3, 4), 32)
    user = messages[-1]["content"]
    assert trace in user and "[25, 3, 4]" in user and "32" in user
    assert all(f'"{name}"' in user for name in BEHAVIORS)
    for name in BEHAVIORS:
        one = build_behavior_messages(name, trace)[-1]["content"]
        assert trace in one and f'"{name}"' in one
        assert not any(f'"{other}"' in one for other in BEHAVIORS if other != name)
    with pytest.raises(ValueError, match="unknown behaviour"):
        build_behavior_messages("reflection", trace)
    assert PROMPT_VERSION


def test_validate_counts_messages() -> None:
    with pytest.raises(ValueError, match="missing"):
        validate_counts({"verification": 1})
    assert validate_counts(dict.fromkeys(BEHAVIORS, 0)) == dict.fromkeys(BEHAVIORS, 0)
