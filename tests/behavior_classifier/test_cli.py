"""`countdown-lab classify` with the heuristic judge and `countdown-lab frequencies`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behavior_classifier.agreement import agreement
from behavior_classifier.behaviors import BEHAVIORS
from lab.cli import main

ROWS = [
    {
        "step": 0,
        "text": "<think>5 + 6 = 11, not 39. Let me try 9 * 5 = 45, 45 - 6 = 39.</think><answer>9 * 5 - 6</answer>",
        "correct": True,
        "numbers": [5, 6, 9],
        "target": 39,
    },
    {"step": 0, "text": "<think>6 * 4 = 24, 24 - 2 = 22.</think><answer>6 * 4 - 2</answer>", "correct": True},
    {"step": 1, "text": "<think>32 is 8 times 4, so I need 8 from 25, 30 and 3.</think>", "correct": False, "extra": {"k": 1}},
]


def test_classify_heuristic_copies_fields_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "rollouts.jsonl", tmp_path / "classified.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["classify", str(inp), "--output", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_row"] for r in rows] == [0, 1, 2]
    for src, row in zip(ROWS, rows, strict=True):
        assert {k: row[k] for k in src} == src
        assert set(row["behaviors"]) == set(BEHAVIORS) and row["judge"].startswith("heuristic")
    assert rows[0]["behaviors"]["backtracking"] == 1 and rows[2]["behaviors"]["backward_chaining"] == 1
    assert main(["classify", str(inp), "--output", str(out), "--quiet"]) == 0
    assert "3 already done" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3

    assert (
        main(["frequencies", str(out), "--condition", "demo", "--output", str(tmp_path / "f.csv"), "--plot", str(tmp_path / "f.png")]) == 0
    )
    assert (tmp_path / "f.png").stat().st_size > 0 and "avg_verifications" in (tmp_path / "f.csv").read_text()


def test_classify_keeps_input_behaviors_as_behaviors_input(tmp_path: Path) -> None:
    # Priming traces carry the counts they were generated with in 'behaviors'; the judge's counts must not erase them.
    truth = [
        {"verification": 0, "backtracking": 3, "subgoal_setting": 0, "backward_chaining": 0},
        {"verification": 2, "backtracking": 0, "subgoal_setting": 1, "backward_chaining": 0},
        None,
    ]
    inp, out, again = tmp_path / "traces.jsonl", tmp_path / "classified.jsonl", tmp_path / "again.jsonl"
    src = [{**r, "behaviors": t} for r, t in zip(ROWS[:2], truth[:2], strict=True)] + [{**ROWS[2], "behaviors": None}]
    inp.write_text("".join(json.dumps(r) + "\n" for r in src) + json.dumps(ROWS[0]) + "\n")
    assert main(["classify", str(inp), "--output", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("behaviors_input", "absent") for r in rows] == [*truth, "absent"]  # a row without the field gets none
    assert rows[0]["behaviors"] != truth[0] and rows[0]["behaviors"]["backtracking"] == 1  # the judge's own counts
    assert agreement([r["behaviors_input"] for r in rows[:2]], [r["behaviors"] for r in rows[:2]])  # computable from the output
    # Classifying the output again keeps the original ground truth, not the first judge's counts (which become
    # 'behaviors_input' only where the input had none).
    assert main(["classify", str(out), "--output", str(again), "--quiet"]) == 0
    assert [json.loads(line).get("behaviors_input") for line in again.read_text().splitlines()] == [*truth, rows[3]["behaviors"]]


def test_classify_of_a_file_still_being_written_labels_the_whole_rows(tmp_path: Path) -> None:
    inp, out = tmp_path / "rollouts.jsonl", tmp_path / "classified.jsonl"
    whole = "".join(json.dumps(r) + "\n" for r in ROWS[:2])
    inp.write_text(whole + json.dumps(ROWS[2])[:30])  # the run is mid-way through writing row 2
    assert main(["classify", str(inp), "--output", str(out), "--quiet"]) == 0
    assert [json.loads(line)["input_row"] for line in out.read_text().splitlines()] == [0, 1]
    inp.write_text(whole + json.dumps(ROWS[2]) + "\n")  # finished: a re-run labels only the new row
    assert main(["classify", str(inp), "--output", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_row"] for r in rows] == [0, 1, 2] and rows[2]["extra"] == {"k": 1}


def test_classify_errors_say_what_to_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "x"}\n')
    assert main(["classify", str(bad), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "needs a string field 'text'" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(ROWS[0]) + "\n")
    assert main(["classify", str(good), "--output", str(tmp_path / "o.jsonl"), "--judge", "openai"]) == 2
    assert "--base-url" in capsys.readouterr().err
    # An output file from another input is refused rather than silently mixed.
    other = tmp_path / "other.jsonl"
    assert main(["classify", str(good), "--output", str(other), "--quiet"]) == 0
    inp2 = tmp_path / "in2.jsonl"
    inp2.write_text(json.dumps(ROWS[1]) + "\n")
    assert main(["classify", str(inp2), "--output", str(other), "--quiet"]) == 2
    assert "another input" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-1"])
@pytest.mark.parametrize("batch", [[], ["--batch"]])
def test_classify_refuses_a_timeout_that_is_not_a_finite_positive_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, timeout: str, batch: list[str]
) -> None:
    from behavior_classifier.local_server import OpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps(ROWS[0]) + "\n")
    with OpenAIServer() as server:
        argv = ["classify", str(inp), "-o", str(out), "--base-url", server.base_url, "--timeout", timeout, "--quiet", *batch]
        assert main(argv) == 2  # before: every row stored as failed
        assert server.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: timeout must be a finite number of seconds > 0")
    assert not out.exists()


@pytest.mark.parametrize("cache", ["folder", "text"])
def test_classify_refuses_a_cache_that_is_not_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cache: str
) -> None:
    from behavior_classifier.local_server import OpenAIServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps(ROWS[0]) + "\n")
    path = tmp_path / cache
    path.mkdir() if cache == "folder" else path.write_text("not a database, just some text that sqlite cannot read\n" * 20)
    before = None if cache == "folder" else path.read_bytes()
    with OpenAIServer() as server:
        argv = ["classify", str(inp), "-o", str(out), "--base-url", server.base_url, "--cache", str(path), "--quiet"]
        assert main(argv) == 2
        assert server.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cache {path} cannot be used as a SQLite cache")
    assert before is None or path.read_bytes() == before  # the user's file is left as it was
