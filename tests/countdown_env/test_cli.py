"""`countdown-lab generate | solve | score`, run in-process through `lab.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from countdown_env import generate_tasks, read_tasks, solve
from lab.cli import main


def test_generate_both_splits_with_difficulty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "-n", "15", "--seed", "4", "--task-preset", "tiny", "--output-dir", str(tmp_path)]) == 0
    train, test = read_tasks(tmp_path / "train.jsonl"), read_tasks(tmp_path / "test.jsonl")
    assert len(train) == len(test) == 15
    assert not {t.key for t in train} & {t.key for t in test}
    assert all(t.solution_count and t.plus_minus_only is not None for t in train)
    assert train == generate_tasks(15, seed=4, preset="tiny", split="train", difficulty=True)
    assert "wrote 15 train tasks" in capsys.readouterr().out


def test_generate_single_file_and_dataset(tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    assert main(["generate", "-n", "5", "--seed", "0", "--split", "none", "--no-difficulty", "--output", str(out), "--dataset"]) == 0
    tasks = read_tasks(out)
    assert tasks == generate_tasks(5, seed=0) and tasks[0].solution_count is None
    import datasets

    assert len(datasets.load_from_disk(str(tmp_path / "all"))) == 5


def test_solve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", "100", "75", "50", "25", "6", "3", "--target", "952", "--tv-rules"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("= 952")
    assert main(["solve", "1", "2", "3", "--target", "6", "--all"]) == 0
    assert capsys.readouterr().out.split("\n")[:3] == ["1 * 2 * 3", "1 + 2 + 3", "2 * 3 / 1"]
    assert main(["solve", "1", "1", "1", "--target", "100"]) == 1
    assert "closest: 1 + 1 + 1 = 3 (off by 97)" in capsys.readouterr().out
    assert main(["solve", "5", "5", "--target", "3", "--all"]) == 1


def test_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = generate_tasks(3, seed=1)
    rows = [
        {**tasks[0].to_dict(), "text": f"<answer>{solve(tasks[0].numbers, tasks[0].target)}</answer>"},
        {"nums": list(tasks[1].numbers), "target": tasks[1].target, "response": "<answer>2**3</answer>"},
        {**tasks[2].to_dict(), "text": f"<answer>{solve(tasks[2].numbers, tasks[2].target)}</answer> and more"},
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", str(inp), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 3 and summary["outcomes"] == {"correct": 2, "disallowed_operation": 1}
    assert summary["accuracy"] == pytest.approx(2 / 3)
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["outcome"] for r in scored] == ["correct", "disallowed_operation", "correct"] and scored[0]["text"] == rows[0]["text"]
    assert main(["score", str(inp), "--strict-ending"]) == 0
    assert json.loads(capsys.readouterr().out)["outcomes"] == {"correct": 1, "disallowed_operation": 1, "malformed": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"numbers": [1, 2], "target": 3}\n', "no 'text'"),
        ('{"numbers": [1, 2], "target": 3, "text": "x"}\nnot json\n', ":2:"),
        ('{"numbers": [1.5], "target": 3, "text": "x"}\n', ":1:"),
    ],
)
def test_score_bad_input_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    assert main(["score", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(tmp_path / "nope.jsonl")]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("n", [0, 3])
def test_generate_writes_exactly_n(tmp_path: Path, n: int) -> None:
    out = tmp_path / "tasks.jsonl"
    assert main(["generate", "-n", str(n), "--split", "train", "--no-difficulty", "--output", str(out)]) == 0
    assert len(read_tasks(out)) == n


def test_a_tasks_row_that_is_not_an_object_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("[1, 2, 3]\n")
    with pytest.raises(ValueError, match="must be an object"):
        read_tasks(path)
