"""Frequencies of behaviours per step and condition, and the study's reference CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from behavior_classifier.frequencies import (
    COLUMNS,
    behavior_frequencies,
    classified_frame,
    load_reference,
    plot_frequencies,
    read_classified,
)


def b(v: int, bt: int, s: int, c: int) -> dict[str, int]:
    return {"verification": v, "backtracking": bt, "subgoal_setting": s, "backward_chaining": c}


ROWS = [
    {"step": 0, "text": "a" * 10, "correct": True, "behaviors": b(2, 0, 0, 1)},
    {"step": 0, "text": "a" * 30, "correct": False, "behaviors": b(0, 0, 0, 0)},
    {"step": 0, "text": "a" * 20, "correct": False, "behaviors": None, "judge_error": "MalformedReply"},
    {"step": 10, "text": "a" * 100, "correct": True, "behaviors": b(1, 3, 1, 0)},
    {"step": 10, "text": "a" * 200, "correct": True, "behaviors": b(1, 1, 0, 0)},
]


def test_read_classified_skips_a_half_written_last_line_only(tmp_path: Path) -> None:
    # A notebook reading a run's JSONL while the run still appends sees a torn last line (no newline yet).
    path = tmp_path / "live.jsonl"
    whole = "".join(json.dumps(r) + "\n" for r in ROWS[:2])
    torn = json.dumps(ROWS[3])[:25]
    path.write_text(whole + torn)
    frame = read_classified(path, "live")
    assert len(frame) == 2 and list(frame["response_length"]) == [10, 30]
    path.write_text(whole + json.dumps(ROWS[3]) + "\n")  # the writer finished the line
    assert len(read_classified(path, "live")) == 3
    # A bad line in the middle, or a bad last line that was completed with its newline, is an error naming file:line.
    path.write_text(json.dumps(ROWS[0]) + "\n" + torn + "\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(ValueError, match=r"live\.jsonl:2: not JSON"):
        read_classified(path)
    path.write_text(whole + torn + "\n")
    with pytest.raises(ValueError, match=r"live\.jsonl:3: not JSON"):
        read_classified(path)
    path.write_text(whole + "[1, 2]\n")
    with pytest.raises(ValueError, match=r"live\.jsonl:3: a list, not a JSON object"):
        read_classified(path)


def test_frequencies_shape_and_values(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.classified.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    other = [{**r, "condition": "primed", "behaviors": b(5, 5, 5, 5) if r["behaviors"] else None} for r in ROWS[:2]]
    frame = behavior_frequencies(pd.concat([read_classified(path, "base"), classified_frame(other)], ignore_index=True))
    assert tuple(frame.columns) == COLUMNS
    assert list(zip(frame["condition"], frame["step"], strict=True)) == [("base", 0), ("base", 10), ("primed", 0)]
    base0, base10, primed0 = (frame.iloc[i] for i in range(3))
    assert (base0["n"], base0["failed"]) == (2, 1)
    assert base0["avg_verifications"] == 1.0 and base0["share_verifications"] == 0.5 and base0["total_verifications"] == 2
    assert base0["avg_backwards"] == 0.5 and base0["share_backtracking"] == 0.0
    assert base0["accuracy"] == pytest.approx(1 / 3)  # accuracy over all responses, labelled or not
    assert base0["response_length"] == 20.0
    assert base10["avg_backtracking"] == 2.0 and base10["share_subgoals"] == 0.5 and base10["accuracy"] == 1.0
    assert primed0["avg_subgoals"] == 5.0 and primed0["n"] == 2


def test_reference_loader_and_plot(tmp_path: Path) -> None:
    csv = tmp_path / "ref.csv"
    header = "condition,step,avg_verifications,avg_backtracking,avg_subgoals,avg_backwards,total_verifications,total_backtracking,total_subgoals,total_backwards,accuracy,response_length"
    lines = [
        header,
        "base_ppo,0,0.5,0.6,0.1,0.0,100,120,20,0,0.01,600.0",
        "base_ppo,10,0.2,0.1,0.0,0.0,40,20,0,0,0.08,140.0",
        "base_ppo,10,9,9,9,9,9,9,9,9,0.9,9",
    ]
    csv.write_text("\n".join(lines) + "\n")
    ref = load_reference(str(csv))
    assert tuple(ref.columns) == COLUMNS and len(ref) == 2  # the duplicated (condition, step) row is dropped
    assert ref.iloc[1]["avg_verifications"] == 0.2 and ref["share_verifications"].isna().all()
    ours = behavior_frequencies(classified_frame(ROWS, "ours"))
    png = plot_frequencies(pd.concat([ref, ours], ignore_index=True), tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="llama"):
        load_reference("mistral")
    with pytest.raises(FileNotFoundError, match="COUNTDOWN_REFERENCE_DIR"):
        load_reference("llama", tmp_path)
