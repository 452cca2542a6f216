"""Agreement of a judge with known behaviour counts: precision, recall and F1 of presence per behaviour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from behavior_classifier.behaviors import BEHAVIORS


@dataclass(frozen=True)
class Agreement:
    """Presence agreement for one behaviour (a trace "shows" a behaviour when its count is > 0)."""

    behavior: str
    precision: float
    recall: float
    f1: float
    support: int
    """Traces whose gold count is > 0."""
    n: int
    """Traces compared."""
    mean_abs_error: float
    """Mean absolute difference of the counts."""


def _ratio(num: int, den: int) -> float:
    # An empty denominator means nothing to get wrong (no predictions / no positives): score 1.0, as
    # sklearn's zero_division=1 does, so a behaviour absent from both gold and prediction is not penalised.
    return num / den if den else 1.0


def agreement(gold: Sequence[Mapping[str, int]], predicted: Sequence[Mapping[str, int]]) -> list[Agreement]:
    """Per-behaviour agreement of `predicted` with `gold` (same length and order)."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} rows but predicted has {len(predicted)}; pass them in the same order")
    rows = []
    for name in BEHAVIORS:
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g[name] > 0 and p[name] > 0)
        fp = sum(1 for g, p in zip(gold, predicted, strict=True) if g[name] == 0 and p[name] > 0)
        fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g[name] > 0 and p[name] == 0)
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        mae = sum(abs(g[name] - p[name]) for g, p in zip(gold, predicted, strict=True)) / max(1, len(gold))
        rows.append(Agreement(name, precision, recall, f1, tp + fn, len(gold), mae))
    return rows


def macro_f1(rows: Sequence[Agreement]) -> float:
    return sum(r.f1 for r in rows) / len(rows)


def format_table(rows: Sequence[Agreement]) -> str:
    """A small Markdown table (for bench output and README)."""
    lines = ["| behaviour | precision | recall | F1 | support | n | count MAE |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.behavior} | {r.precision:.2f} | {r.recall:.2f} | {r.f1:.2f} | {r.support} | {r.n} | {r.mean_abs_error:.2f} |")
    lines.append(f"| **macro** | | | **{macro_f1(rows):.2f}** | | | |")
    return "\n".join(lines)
