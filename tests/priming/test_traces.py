"""Synthetic traces: format, behaviours (all promised, no others), answers, arithmetic, determinism, length."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from functools import cache

import pytest

from countdown_env import THINK_CLOSE, THINK_OPEN, Outcome, Task, generate_tasks, score_response
from priming import BEHAVIORS, CONDITIONS, INCORRECT_KINDS, Trace, TraceConfig, generate_trace, generate_traces
from tests.priming.steps import MARKERS, marked, steps, wrong_steps

REASONING = [name for name, c in CONDITIONS.items() if c.control is None]
STYLES = ("full", "compact")
CONTRACT_CONDITIONS = {
    "all_strategies",
    "only_backtracking",
    "backtracking_verification",
    "backtracking_backward",
    "backtracking_subgoal",
    "negative_control",
    "empty_cot",
    "dots",
}


@cache
def tasks(preset: str = "priming", n: int = 40) -> tuple[Task, ...]:
    return tuple(generate_tasks(n, seed=7, preset=preset))


#: None: correct traces; else the kind of wrong answer.
KINDS = (None, *INCORRECT_KINDS)


@cache
def batch(condition: str, style: str, kind: str | None = None, preset: str = "priming") -> tuple[Trace, ...]:
    config = TraceConfig.for_style(style)
    return tuple(generate_traces(tasks(preset), condition, seed=3, incorrect=kind is not None, incorrect_kind=kind, config=config))


def think(trace: Trace) -> str:
    return trace.text[trace.text.index(THINK_OPEN) + len(THINK_OPEN) : trace.text.index(THINK_CLOSE)]


def test_contract_conditions_exist() -> None:
    assert set(CONDITIONS) >= CONTRACT_CONDITIONS
    assert BEHAVIORS == ("verification", "backtracking", "subgoal_setting", "backward_chaining")


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("condition", sorted(CONTRACT_CONDITIONS))
def test_traces_parse_and_answers_are_right_or_all_wrong(condition: str, style: str, kind: str | None) -> None:
    traces = batch(condition, style, kind)
    assert len(traces) == len(tasks())
    for trace, task in zip(traces, tasks(), strict=True):
        assert (trace.numbers, trace.target) == (task.numbers, task.target)
        assert trace.text.startswith(THINK_OPEN) and trace.text.endswith("</answer>")
        score = score_response(trace.text, task)
        assert score.well_formed, (trace.text, score.reason)
        assert score.answer == trace.answer
        assert trace.correct == score.correct
        assert score.outcome is (Outcome.CORRECT if kind is None else Outcome.WRONG_VALUE), (trace.text, score.reason)
        assert (trace.incorrect, trace.incorrect_kind) == (kind is not None, kind)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_exactly_the_promised_behaviours(condition: str, style: str, kind: str | None) -> None:
    promised = CONDITIONS[condition].behaviors
    totals: Counter[str] = Counter()
    for trace in batch(condition, style, kind):
        assert set(trace.behaviors) == set(BEHAVIORS)
        assert all(isinstance(c, int) and c >= 0 for c in trace.behaviors.values())
        totals.update(trace.behaviors)
        text = think(trace)
        for name in BEHAVIORS:
            if name not in promised:
                assert trace.behaviors[name] == 0
                found = MARKERS[name].search(text)
                assert found is None, f"{condition} shows {name} ({found.group(0)!r}) in: {text}"
        if "backtracking" in promised:  # min_dead_ends=1: every exploring trace fails at least once and goes back
            assert trace.behaviors["backtracking"] >= 1 and trace.dead_ends >= 1
    assert {name for name in BEHAVIORS if totals[name] > 0} == promised


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("condition", REASONING)
def test_compact_counts_equal_the_phrases_written(condition: str, kind: str | None) -> None:
    """Each comma-separated piece of a compact trace is a step or one behaviour phrase; counting
    the pieces by their markers gives exactly the recorded counts."""
    for trace in batch(condition, "compact", kind):
        counted: Counter[str] = Counter()
        for piece in think(trace).split(", "):
            names = marked(piece)
            assert len(names) <= 1, (piece, names)
            if names:
                counted[names[0]] += 1
            else:
                assert steps(piece), f"neutral piece {piece!r} is not an arithmetic step"
        assert {b: counted[b] for b in BEHAVIORS} == dict(trace.behaviors), trace.text


@pytest.mark.parametrize("style", STYLES)
def test_counts_follow_the_search(style: str) -> None:
    # One return per failed path; verification checks every failed path plus the final result.
    for trace in batch("backtracking_verification", style):
        assert trace.behaviors["backtracking"] == trace.dead_ends
        assert trace.behaviors["verification"] == trace.dead_ends + 1
    for trace in batch("only_backtracking", style):
        assert trace.behaviors["backtracking"] == trace.dead_ends
    for trace in batch("negative_control", style):
        assert trace.dead_ends == 0


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("condition", REASONING)
def test_every_written_step_is_correct(condition: str, style: str, kind: str | None) -> None:
    for trace in batch(condition, style, kind):
        written = steps(think(trace))
        assert len(written) >= len(trace.numbers) - 1, trace.text  # at least the path to the answer
        assert wrong_steps(think(trace)) == [], trace.text


def test_steps_with_fractions_are_written_exactly() -> None:
    # 24 from 1, 3, 4, 6 needs a fraction: 6 / (1 - 3/4).
    task = Task((1, 3, 4, 6), 24)
    for condition in REASONING:
        trace = generate_trace(task, condition, seed=0)
        assert trace.correct and trace.meta["search_rules"] == "full"
        assert any(c.denominator != 1 for *_, c in steps(trace.text))
        assert wrong_steps(trace.text) == []


def test_same_seed_same_traces_and_another_seed_differs() -> None:
    config = TraceConfig.for_style("compact")
    for condition in CONDITIONS:
        a = generate_traces(tasks(), condition, seed=11, config=config)
        b = generate_traces(tasks(), condition, seed=11, config=config)
        assert a == b
        if condition != "empty_cot":  # answer-only traces can coincide across seeds
            c = generate_traces(tasks(), condition, seed=12, config=config)
            assert [t.text for t in a] != [t.text for t in c]


def test_conditions_with_the_same_search_share_the_path() -> None:
    """only_backtracking and backtracking_verification walk the same tree path for a task."""
    for plain, verified in zip(batch("only_backtracking", "full"), batch("backtracking_verification", "full"), strict=True):
        assert steps(think(plain)) == steps(think(verified))
        assert plain.answer == verified.answer


@pytest.mark.parametrize("kind", INCORRECT_KINDS)
def test_incorrect_keeps_the_behaviours_of_the_condition(kind: str) -> None:
    for condition in REASONING:
        right = batch(condition, "compact")
        wrong = batch(condition, "compact", kind)
        present = {b for t in right for b in BEHAVIORS if t.behaviors[b]}
        assert {b for t in wrong for b in BEHAVIORS if t.behaviors[b]} == present
        assert all(t.incorrect and not t.correct for t in wrong)


@pytest.mark.parametrize("style", STYLES)
def test_dots_match_the_source_length_and_empty_cot_is_empty(style: str) -> None:
    for dots, source, empty in zip(batch("dots", style), batch("all_strategies", style), batch("empty_cot", style), strict=True):
        assert set(think(dots)) == {"."}
        assert len(think(dots)) == len(think(source))
        assert dots.answer == source.answer
        assert think(empty) == ""
        assert sum(dots.behaviors.values()) == sum(empty.behaviors.values()) == 0


def test_phrasing_varies_within_a_behaviour() -> None:
    pieces = Counter(p for t in batch("only_backtracking", "compact") for p in think(t).split(", ") if marked(p))
    assert len(pieces) >= 3
    sentences = Counter(s.split(" to ")[0] for t in batch("backtracking_verification", "full") for s in think(t).split(". ") if marked(s))
    assert len(sentences) >= 4


@pytest.mark.parametrize("max_chars", [100, 130])
def test_max_chars_is_respected(max_chars: int) -> None:
    config = TraceConfig.for_style("compact", max_chars=max_chars, max_dead_ends=4)
    traces = generate_traces(tasks("tiny"), "only_backtracking", seed=0, config=config)
    assert all(len(t.text) <= max_chars for t in traces)
    assert all(t.behaviors["backtracking"] >= 1 for t in traces)
    loose = generate_traces(
        tasks("tiny"), "only_backtracking", seed=0, config=TraceConfig.for_style("compact", max_chars=None, max_dead_ends=4)
    )
    assert max(len(t.text) for t in loose) > max_chars  # the limit did shorten some traces


def test_compact_traces_are_short_for_tiny_models() -> None:
    lengths = [len(t.text) for t in batch("only_backtracking", "compact", preset="tiny")]
    assert 60 <= sum(lengths) / len(lengths) <= 200
    assert max(lengths) <= 320


def test_search_budget_bounds_the_failed_paths() -> None:
    for budget in (1, 2, 4):
        config = TraceConfig(max_dead_ends=budget, min_dead_ends=1)
        for trace in generate_traces(tasks(), "all_strategies", seed=1, config=config):
            assert 1 <= trace.dead_ends <= budget
    short = generate_traces(tasks(), "only_backtracking", seed=1, config=TraceConfig(max_nodes=2, max_dead_ends=9))
    assert all(t.nodes <= 2 + len(t.numbers) for t in short)


def test_a_limit_no_trace_fits_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        generate_traces(tasks(), "all_strategies", seed=0, config=TraceConfig(max_chars=60))


@pytest.mark.parametrize(
    "kwargs",
    [{"style": "verbose"}, {"max_chars": 10}, {"min_dead_ends": 3, "max_dead_ends": 2}, {"branch_cap": 0}, {"dots_source": "dots"}],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TraceConfig(**kwargs)


def test_unknown_condition_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="only_backtracking"):
        generate_traces(tasks(), "no_such_condition", seed=0)


def test_importing_priming_does_not_import_torch() -> None:
    code = "import sys, priming, priming.cli, priming.llm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
