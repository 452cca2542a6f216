"""The organism's goals on a summary table: every wrong-answer arm is held to the same goals, the study's kind first."""

from __future__ import annotations

import pandas as pd

from organism.goals import goals, wrong_answer_runs


def _table(arms: dict[str, tuple[float, float]]) -> pd.DataFrame:
    rows = []
    for run, (before, after) in arms.items():
        base, condition = run.split("/")
        for seed in (1, 2, 3):
            rows.append({"base": base, "condition": condition, "seed": seed, "acc_before": before, "acc_after": after})
    return pd.DataFrame(rows)


def test_an_extra_wrong_answer_arm_gets_the_wrong_answer_goals() -> None:
    table = _table({
        "poor/none": (0.10, 0.20),
        "poor/only_backtracking": (0.10, 0.30),
        "poor/only_backtracking_incorrect": (0.10, 0.21),
        "poor/only_backtracking_incorrect_falsehit": (0.10, 0.28),
    })  # fmt: skip
    assert wrong_answer_runs(table) == ["poor/only_backtracking_incorrect", "poor/only_backtracking_incorrect_falsehit"]
    met = {g.goal: (round(g.value, 6), g.met) for g in goals(table)}
    assert met["poor/only_backtracking_incorrect ends >= 7 points above poor/none"] == (1.0, False)
    assert met["poor/only_backtracking_incorrect_falsehit ends >= 7 points above poor/none"] == (8.0, True)
    assert met["poor/only_backtracking_incorrect_falsehit ends within 8 points of poor/only_backtracking"] == (2.0, True)
    assert met["RL lifts poor/only_backtracking_incorrect_falsehit by >= 10 points"] == (18.0, True)


def test_a_table_without_extra_arms_keeps_the_goals_it_had() -> None:
    table = _table({"poor/none": (0.1, 0.2), "poor/only_backtracking_incorrect": (0.1, 0.3)})
    assert wrong_answer_runs(table) == ["poor/only_backtracking_incorrect"]
    assert [g.goal for g in goals(table)] == [
        "RL lifts poor/only_backtracking_incorrect by >= 10 points",
        "poor/only_backtracking_incorrect ends >= 7 points above poor/none",
    ]
