"""The study's findings the organism should show, checked on a summary table (bench/organism_bench.py)."""

from __future__ import annotations

from typing import Any


def goals(table: Any) -> list[tuple[str, float, bool]]:
    """(goal, measured, met) for each of the study's findings that the organism should show,
    from a summary table (mean over its seeds, accuracies in points)."""

    def mean(base: str, condition: str, column: str) -> float:
        rows = table[(table["base"] == base) & (table["condition"] == condition)]
        return float(rows[column].mean()) * 100 if len(rows) and column in rows else float("nan")

    out: list[tuple[str, float, bool]] = []

    def check(goal: str, value: float, threshold: float) -> None:
        out.append((goal, value, value == value and value >= threshold))

    rich_gain = mean("rich", "none", "acc_after") - mean("rich", "none", "acc_before")
    check("rich/none gains >= 10 points", rich_gain, 10)
    check("poor/none ends >= 10 points below rich/none", mean("rich", "none", "acc_after") - mean("poor", "none", "acc_after"), 10)
    for condition, margin in (
        ("only_backtracking", 10),
        ("only_backtracking_incorrect", 7),
        ("only_backtracking_incorrect_slip", 7),
        ("only_backtracking_incorrect_ranout", 7),
    ):
        value = mean("poor", condition, "acc_after") - mean("poor", "none", "acc_after")
        if value == value:
            check(f"poor/{condition} ends >= {margin} points above poor/none", value, margin)
    gap = mean("poor", "only_backtracking", "acc_after") - mean("poor", "empty_cot", "acc_after")
    if gap == gap:
        check("poor/empty_cot ends >= 5 points below poor/only_backtracking", gap, 5)
    return out
