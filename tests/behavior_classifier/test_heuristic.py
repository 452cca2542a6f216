"""The offline heuristic judge: agreement with hand-written gold counts, negatives, bounded work."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from behavior_classifier.agreement import agreement, macro_f1
from behavior_classifier.behaviors import BEHAVIORS
from behavior_classifier.heuristic import MAX_CHARS, HeuristicJudge, count_behaviors

DATA = Path(__file__).parent / "data" / "handwritten_traces.jsonl"


def handwritten() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines()]


def test_handwritten_set_is_varied_and_has_negatives() -> None:
    rows = handwritten()
    assert len(rows) >= 30
    assert len({r["text"] for r in rows}) == len(rows)
    for name in BEHAVIORS:
        present = sum(r["gold"][name] > 0 for r in rows)
        assert 5 <= present <= len(rows) - 10, name  # every behaviour has positives and plenty of negatives
    assert sum(all(v == 0 for v in r["gold"].values()) for r in rows) >= 8


def test_macro_f1_on_handwritten_traces() -> None:
    rows = handwritten()
    judge = HeuristicJudge()
    table = agreement([r["gold"] for r in rows], judge.batch(r["text"] for r in rows))
    assert macro_f1(table) >= 0.8, table
    assert all(row.f1 >= 0.7 for row in table), table


@pytest.mark.parametrize(
    ("text", "present"),
    [
        ("<think>6 * 4 = 24, 24 - 2 = 22.</think>\n<answer>6 * 4 - 2</answer>", set()),
        ("<think>We need to get to 9, so let's divide: 32 / 4 = 8, and 8 + 1 = 9.</think>", set()),
        (
            "<think>5 + 6 = 11, 11 * 9 = 99. That's way too big. Let me try 9 * 5 = 45, 45 - 6 = 39.</think>",
            {"verification", "backtracking"},
        ),
        ("<think>48 is 16 * 3, so I need 3 from 2, 21 and 10.</think>", {"backward_chaining"}),
        ("<think>My plan: first make 15 from 10 and 5, then multiply by 3.</think>", {"subgoal_setting"}),
        ("<think>Let me double-check: 30 - 25 is 5, plus 3 is 8, times 4 is 32. Correct.</think>", {"verification"}),
        ("", set()),
    ],
)
def test_table_of_traces(text: str, present: set[str]) -> None:
    counts = count_behaviors(text)
    assert set(counts) == set(BEHAVIORS)
    assert {name for name, v in counts.items() if v > 0} == present


def test_answer_text_is_not_read_as_reasoning() -> None:
    # Words inside <answer> are not behaviours; only the reasoning is read.
    assert count_behaviors("<think>3 + 4 = 7.</think>\n<answer>Let me try again: not 7, too big</answer>") == dict.fromkeys(BEHAVIORS, 0)


def test_untrusted_input_costs_bounded_time() -> None:
    # Shapes that make naive regular expressions backtrack for minutes (runs of parentheses, spaces, digits).
    nasty = [
        "(" * 50_000 + "1",
        "1 + " * 40_000 + "1 = 2",
        "(1 + " * 5_000,
        "1  +  " * 5_000,
        "1 )  + " * 5_000,
        "1" * 100_000,
        "not " * 50_000,
        "{" * 100_000,
        "Wait, " * 30_000 + "\n" * 10_000,
    ]
    for text in nasty:
        start = time.perf_counter()
        counts = count_behaviors(text)
        # Catastrophic regex backtracking costs seconds to minutes on these; the judge takes
        # milliseconds. The bound is loose so a loaded CI machine cannot make it flaky.
        assert time.perf_counter() - start < 5.0, text[:20]
        assert all(isinstance(v, int) and v >= 0 for v in counts.values())
    assert len(nasty[0]) > MAX_CHARS


def test_deterministic() -> None:
    texts = [r["text"] for r in handwritten()]
    assert HeuristicJudge().batch(texts) == HeuristicJudge().batch(texts)
