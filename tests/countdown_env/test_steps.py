import math

import pytest

from countdown_env.steps import Step, step_accuracy, written_steps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>12-6=6, 6-3=1, go back</think>", [Step(12, "-", 6, 6), Step(6, "-", 3, 1)]),
        ("25 + 30 = 55 and 55 / 5 = 11", [Step(25, "+", 30, 55), Step(55, "/", 5, 11)]),
        ("2.5*2=5 is a decimal, 3 ** 2 = 9 is not a step", []),
        ("no arithmetic here", []),
        ("3 + 4 = 7. Then 7 * 2 = 14.", [Step(3, "+", 4, 7), Step(7, "*", 2, 14)]),
        ("10 - 4 - 2 = 4, and (3 + 5) * 2 = 16", []),
    ],
)
def test_written_steps(text, expected):
    assert written_steps(text) == expected


def test_step_correctness_and_share():
    assert [s.correct for s in written_steps("12-6=6, 6-3=1, 7/2=3, 8/0=0, 9*9=81")] == [True, False, False, False, True]
    n, share = step_accuracy(["1+1=2, 2*2=5", "3-1=2"])
    assert n == 3 and share == pytest.approx(2 / 3)
    assert math.isnan(step_accuracy(["none"])[1])


def test_every_step_of_full_priming_traces_is_read_and_right():
    from countdown_env import generate_tasks
    from priming import generate_traces

    traces = generate_traces(generate_tasks(30, seed=1, preset="tiny"), "all_strategies", seed=0)
    n, share = step_accuracy(t.text for t in traces)
    assert n >= 60 and share == 1.0  # the generator's arithmetic is right, and the reader finds it


def test_bounded_on_hostile_text():
    assert len(written_steps("1+1=2 " * 100_000)) == 20_000 // 6  # only the first MAX_CHARS characters are read
