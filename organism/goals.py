"""The study's findings the organism should show, checked on a summary table (bench/organism_bench.py).

Accuracies are the test split's, greedy, in points; each goal is the mean over the table's seeds,
with the range over seeds beside it (a goal met by the mean but not by every seed says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Goal:
    goal: str
    value: float
    """Mean over seeds (points, or counts for behaviour goals)."""
    low: float
    high: float
    """Range over seeds."""
    met: bool


def _per_seed(table: pd.DataFrame, run: str, column: str) -> pd.Series:
    base, condition = run.split("/")
    rows = table[(table["base"] == base) & (table["condition"] == condition)]
    return rows.set_index("seed")[column] if column in rows else pd.Series(dtype=float)


def _points(table: pd.DataFrame, run: str, column: str) -> pd.Series:
    return _per_seed(table, run, column) * 100


def _check(goals: list[Goal], text: str, values: pd.Series, threshold: float, *, at_most: bool = False) -> None:
    values = values.dropna()
    if values.empty:
        return
    mean = float(values.mean())
    met = mean <= threshold if at_most else mean >= threshold
    goals.append(Goal(text, mean, float(values.min()), float(values.max()), met))


def wrong_answer_runs(table: pd.DataFrame) -> list[str]:
    """The table's wrong-answer arms of the primed poor base: `poor/only_backtracking_incorrect` (the study's kind)
    first, then any extra kind (`..._incorrect_falsehit`), or the study's kind alone when the table has none."""
    found = sorted({f"{b}/{c}" for b, c in zip(table["base"], table["condition"], strict=True)
                    if b == "poor" and c.startswith("only_backtracking_incorrect")})  # fmt: skip
    study = "poor/only_backtracking_incorrect"
    return [study, *(r for r in found if r != study)]


def goals(table: pd.DataFrame) -> list[Goal]:
    """Every goal of the organism issue that the table has the runs for."""
    out: list[Goal] = []
    gain = lambda run: _points(table, run, "acc_after") - _points(table, run, "acc_before")  # noqa: E731
    after = lambda run: _points(table, run, "acc_after")  # noqa: E731
    _check(out, "rich/none gains >= 10 points", gain("rich/none"), 10)
    _check(out, "rich/none ends >= 10 points above poor/none", after("rich/none") - after("poor/none"), 10)
    _check(out, "RL lifts poor/only_backtracking by >= 15 points", gain("poor/only_backtracking"), 15)
    wrong = wrong_answer_runs(table)
    for run in wrong:  # the study's kind first; an extra arm (`_incorrect_<kind>`) is held to the same goals
        _check(out, f"RL lifts {run} by >= 10 points", gain(run), 10)
        _check(out, f"{run} ends >= 7 points above poor/none", after(run) - after("poor/none"), 7)
        _check(out, f"{run} ends within 8 points of poor/only_backtracking",
               (after("poor/only_backtracking") - after(run)).abs(), 8, at_most=True)  # fmt: skip
    _check(out, "poor/empty_cot ends >= 10 points below poor/only_backtracking",
           after("poor/only_backtracking") - after("poor/empty_cot"), 10)  # fmt: skip
    for run in ("poor/only_backtracking", *wrong):
        for what in ("verifications", "backtracking"):
            column = f"heldout_avg_{what}"
            change = _per_seed(table, run, f"{column}_after") - _per_seed(table, run, f"{column}_before")
            _check(out, f"{run}: {what} per answer hold or grow under RL (after - before >= -0.1)", change, -0.1)
    _check(out, "poor/none never checks (verifications per answer after RL <= 0.05)",
           _per_seed(table, "poor/none", "heldout_avg_verifications_after"), 0.05, at_most=True)  # fmt: skip
    return out


def goal_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {"goal": g.goal, "mean": round(g.value, 2), "min": round(g.low, 2), "max": round(g.high, 2), "met": g.met} for g in goals(table)
    ]
