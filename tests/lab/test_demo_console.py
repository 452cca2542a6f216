"""The end of `demo`/`experiment` on the console: what happened and where the plots are, not the
full summary table (which stays on disk). The house style's rule 12, issue 18 item 9."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lab.commands.experiment import _report, closing_words

ORGANISM = pd.DataFrame(
    {
        "base": ["rich", "rich", "poor"],
        "condition": ["none", "none", "only_backtracking"],
        "seed": [0, 1, 0],
        "acc_before": [0.10, 0.20, 0.05],
        "acc_after": [0.50, 0.70, 0.06],
        "heldout_avg_verifications_before": [1.0, 1.0, 0.0],
        "heldout_avg_verifications_after": [2.0, 2.0, 0.0],
        "heldout_avg_backtracking_before": [0.5, 0.5, 0.0],
        "heldout_avg_backtracking_after": [1.5, 1.5, 0.0],
        **{f"column_{i}": [0.0, 0.0, 0.0] for i in range(24)},  # the 30-odd columns of the real summary
    }
)


def test_closing_words_mean_over_seeds_per_base_and_condition() -> None:
    lines = closing_words(ORGANISM)
    assert lines[0] == "What happened (held-out accuracy, greedy; mean over 2 seeds):"
    assert lines[1] == "  rich base: 0.15 -> 0.60 (checks per answer 1.00 -> 2.00, returns 0.50 -> 1.50)"
    assert lines[2].startswith("  poor base primed with only_backtracking: 0.05 -> 0.06")


def test_closing_words_without_organism_bases() -> None:
    table = pd.DataFrame(
        {"base": ["default"] * 2, "condition": ["none", "dots"], "seed": [0, 0], "acc_before": [0.1, 0.1], "acc_after": [0.3, 0.2]}
    )
    assert closing_words(table) == [
        "What happened (held-out accuracy, greedy; one seed):",
        "  no priming: 0.10 -> 0.30",
        "  primed with dots: 0.10 -> 0.20",
    ]
    assert closing_words(table.drop(columns="base"))[1] == "  no priming: 0.10 -> 0.30"
    assert closing_words(table.drop(columns=["acc_before", "acc_after"])) == []


def test_report_ends_with_what_happened_and_the_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ORGANISM.to_csv(tmp_path / "summary.csv", index=False)
    (tmp_path / "summary.md").write_text("| " + " | ".join(ORGANISM.columns) + " |\n")
    (tmp_path / "timing.json").write_text(json.dumps({"minutes": 7.5, "runs": 3}))
    (tmp_path / "plots").mkdir()
    for name in ("accuracy_vs_step.png", "spread_vs_step.png"):
        (tmp_path / "plots" / name).write_bytes(b"")
    _report(tmp_path)
    out = capsys.readouterr().out
    assert "column_23" not in out and "|" not in out  # the full table stays in summary.md
    lines = [line for line in out.splitlines() if line]
    assert lines[0] == "took 7.5 minutes (3 runs)"
    assert lines[1:4] == closing_words(ORGANISM)
    assert lines[-2] == f"tables: {tmp_path / 'summary.md'} (every column; also summary.csv, frequencies.csv)"
    assert lines[-1] == f"plots:  {tmp_path / 'plots'}/ (accuracy_vs_step.png, spread_vs_step.png)"


def test_closing_words_name_the_test_split_when_there_is_a_dev_split() -> None:
    lines = closing_words(ORGANISM.assign(dev_acc_before=0.1, dev_acc_after=0.2))
    assert lines[0] == "What happened (test-split accuracy, greedy; mean over 2 seeds):"
