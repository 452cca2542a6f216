"""Synthetic traces: format, behaviours (all promised, no others), answers, arithmetic, determinism, length."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from functools import cache

import pytest

from countdown_env import THINK_CLOSE, THINK_OPEN, Outcome, Task, generate_tasks, score_response
from priming import BEHAVIORS, CONDITIONS, INCORRECT_KINDS, Trace, TraceConfig, generate_trace, generate_traces
from tests.priming.steps import MARKERS, compared_with, marked, named_targets, steps, subgoals, wrong_steps

REASONING = [name for name, c in CONDITIONS.items() if c.control is None]
BACKTRACKING = [name for name, c in CONDITIONS.items() if "backtracking" in c.behaviors]
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
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("condition", REASONING)
def test_every_trace_reasons_towards_the_true_target(condition: str, style: str, kind: str | None) -> None:
    """No misread target: whatever the trace calls the target is the task's target, and every
    check compares with the target or a sub-goal the trace derived from it."""
    verifies = "verification" in CONDITIONS[condition].behaviors
    for trace, task in zip(batch(condition, style, kind), tasks(), strict=True):
        text = think(trace)
        goals = {task.target, *subgoals(text)}  # plans may say how to reach a sub-goal
        named = named_targets(text)
        assert set(named) <= goals, text
        if style == "full":  # full traces open by stating the task
            assert named[0] == task.target, text
        compared = compared_with(text)
        assert set(compared) <= goals, text
        if verifies:  # every check but a goal-less "15 is the target" names what it compares with
            assert len(compared) >= trace.behaviors["verification"] - 1 >= 0, text
            if CONDITIONS[condition].strategy == "forward":
                assert set(compared) == {task.target}, text
        else:
            assert compared == [], text


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_a_slip_is_the_correct_trace_with_another_answer(condition: str, style: str) -> None:
    for right, slip, task in zip(batch(condition, style), batch(condition, style, "slip"), tasks(), strict=True):
        assert think(slip) == think(right)  # same search, same checks, same conclusion in the reasoning
        assert slip.answer != right.answer and slip.meta["reasoned"] == right.answer
        assert (slip.dead_ends, slip.nodes, slip.behaviors) == (right.dead_ends, right.nodes, right.behaviors)
        # One operator changed: the same numbers in the same order.
        assert [int(n) for n in re.findall(r"\d+", slip.answer)] == [int(n) for n in re.findall(r"\d+", right.answer)]
        assert sum(a != b for a, b in zip(re.findall(r"[-+*/]", slip.answer), re.findall(r"[-+*/]", right.answer), strict=True)) == 1
        if CONDITIONS[condition].control is None:  # the reasoning reaches the target before the answer slips
            assert any(c == task.target for *_, c in steps(think(slip))), slip.text
            if "verification" in CONDITIONS[condition].behaviors:
                assert task.target in compared_with(think(slip)) or re.search(r"\bis (the )?target\b", think(slip)), slip.text


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("condition", BACKTRACKING)
def test_a_ranout_trace_shows_failed_paths_and_answers_the_closest(condition: str, style: str) -> None:
    forward = CONDITIONS[condition].strategy == "forward"
    for trace, task in zip(batch(condition, style, "ranout"), tasks(), strict=True):
        text = think(trace)
        assert trace.answer == trace.meta["reasoned"]
        if style == "full":
            assert trace.answer in text  # the reasoning concludes with the answer it gives
        assert trace.dead_ends >= 2 and trace.behaviors["backtracking"] >= 1
        if forward:  # a return between failed paths, none after the last one
            assert trace.behaviors["backtracking"] == trace.dead_ends - 1
        if "verification" in CONDITIONS[condition].behaviors:
            assert trace.behaviors["verification"] == trace.dead_ends  # every failed path checked, nothing found
            assert not re.search(r"\bis (the )?target\b|\breached\b|\bfound\b|\bas needed\b|\bas required\b|\bI was after\b", text)
        if forward:  # the answer is one of the failed paths written (which one is closest: tests/priming/test_search.py)
            assert score_response(trace.text, task).value in {c for *_, c in steps(text)}, text


def test_a_search_that_runs_out_without_backtracking_shows_one_path() -> None:
    for trace, task in zip(batch("negative_control", "compact", "ranout"), tasks(), strict=True):
        assert trace.dead_ends == 1 and sum(trace.behaviors.values()) == 0
        assert len(steps(think(trace))) == len(task.numbers) - 1
        assert score_response(trace.text, task).value == steps(think(trace))[-1][-1]


@pytest.mark.parametrize("kind", INCORRECT_KINDS)
def test_incorrect_traces_are_deterministic_by_seed(kind: str) -> None:
    config = TraceConfig.for_style("compact")
    for condition in CONDITIONS:
        a = generate_traces(tasks(), condition, seed=11, incorrect=True, incorrect_kind=kind, config=config)
        assert a == generate_traces(tasks(), condition, seed=11, incorrect=True, incorrect_kind=kind, config=config)
        if condition != "empty_cot":
            other = generate_traces(tasks(), condition, seed=12, incorrect=True, incorrect_kind=kind, config=config)
            assert [t.text for t in a] != [t.text for t in other]


def test_incorrect_alone_means_slip() -> None:
    plain = generate_traces(tasks()[:5], "all_strategies", seed=0, incorrect=True)
    assert plain == generate_traces(tasks()[:5], "all_strategies", seed=0, incorrect=True, incorrect_kind="slip")
    assert all(t.incorrect_kind == "slip" and t.to_dict()["incorrect_kind"] == "slip" for t in plain)
    assert all(t.incorrect_kind is None for t in generate_traces(tasks()[:5], "all_strategies", seed=0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"incorrect_kind": "ranout"}, "needs incorrect=True"), ({"incorrect": True, "incorrect_kind": "misread"}, "slip")],
)
def test_bad_incorrect_kinds_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_traces(tasks()[:1], "all_strategies", seed=0, **kwargs)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", KINDS)
def test_dots_match_the_source_length_and_empty_cot_is_empty(style: str, kind: str | None) -> None:
    triples = zip(batch("dots", style, kind), batch("all_strategies", style, kind), batch("empty_cot", style, kind), strict=True)
    for dots, source, empty in triples:
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
    code = "import sys, priming, lab.commands.prime, priming.llm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
