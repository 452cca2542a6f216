"""Priming traces follow the task preset's rules (e.g. `classic`: a number may go unused)."""

import json
import random

import pytest

from countdown_env import Outcome, Task, generate_tasks, preset_rules, score_response, write_tasks
from priming.search import SearchConfig, search, search_rules
from priming.traces import TraceConfig, generate_traces

#: 2 + 3 = 5 leaves 1000 unused: solvable under `classic` only.
SUBSET_TASK = Task((2, 3, 1000), 5)
#: The target is one of the numbers: a wrong answer needs a solution with a step (100 = 50 * 2) to get wrong.
TARGET_IN_NUMBERS = Task((100, 50, 2, 7), 100)


def test_search_rules_refine_the_given_rules():
    classic = preset_rules("classic")
    assert search_rules(classic) == (classic,)  # already whole and non-negative
    default = preset_rules("tinyzero")
    plain, full = search_rules(default)
    assert full == default and plain.integer_intermediates and not plain.allow_negative_intermediates and plain.use_all_numbers


def test_search_under_classic_uses_a_subset_and_under_tinyzero_refuses():
    result = search(SUBSET_TASK.numbers, 5, SearchConfig(), random.Random(0), preset_rules("classic"))
    assert result.expression is not None and result.rules == preset_rules("classic")
    with pytest.raises(ValueError, match="no expression"):
        search(SUBSET_TASK.numbers, 5, SearchConfig(), random.Random(0), preset_rules("tinyzero"))


@pytest.mark.parametrize("kind", [None, "slip", "ranout"])
def test_traces_are_checked_under_the_presets_rules(kind):
    rules = preset_rules("classic")
    incorrect = kind is not None
    tasks = [SUBSET_TASK, TARGET_IN_NUMBERS, *generate_tasks(2, seed=0, preset="classic")]
    traces = generate_traces(tasks, "all_strategies", seed=0, incorrect=incorrect, incorrect_kind=kind, config=TraceConfig(), rules=rules)
    for trace, task in zip(traces, tasks, strict=True):
        outcome = score_response(trace.text, task, rules).outcome
        assert outcome is (Outcome.WRONG_VALUE if incorrect else Outcome.CORRECT) and trace.correct is not incorrect
        assert trace.incorrect_kind == kind and trace.target == task.target
    # The subset trace is correct under classic and wrong (numbers) under tinyzero.
    if not incorrect:
        assert score_response(traces[0].text, SUBSET_TASK, preset_rules("tinyzero")).outcome is Outcome.WRONG_NUMBERS


def test_prime_cli_prompts_and_traces_follow_the_preset(tmp_path):
    from lab.cli import main

    path = write_tasks([SUBSET_TASK], tmp_path / "tasks.jsonl")
    out = tmp_path / "prime"
    argv = [
        "prime",
        "-c",
        "only_backtracking",
        "--tasks",
        str(path),
        "--preset",
        "classic",
        "--prompt-style",
        "tinyzero",
        "--test-size",
        "0",
    ]
    assert main([*argv, "-o", str(out)]) == 0
    row = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert preset_rules("classic").describe() in row["prompt"] and row["correct"]
    assert score_response(row["completion"], SUBSET_TASK, preset_rules("classic")).correct
