"""`countdown-lab prime` end to end: synthetic and LLM generators, dataset, JSONL and metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest

from behavior_classifier.local_server import OpenAIServer, Reply
from countdown_env import Outcome, Task, generate_tasks, score_response, write_tasks
from lab.cli import main
from priming import GENERATOR_VERSION, generate_trace
from priming.llm import LLM_GENERATOR_VERSION


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_synthetic_prime_writes_dataset_jsonl_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "prime"
    argv = ["prime", "-c", "only_backtracking", "--task-preset", "tiny", "-n", "20", "--seed", "4"]
    argv += ["--test-size", "0.25", "--output-dir", str(out)]
    assert main(argv) == 0
    data = datasets.load_from_disk(str(out / "dataset"))
    assert set(data) == {"train", "test"} and (len(data["train"]), len(data["test"])) == (15, 5)
    assert {"prompt", "completion"} <= set(data["train"].column_names)
    meta = json.loads((out / "metadata.json").read_text())
    assert (meta["condition"], meta["seed"], meta["generator"], meta["generator_version"]) == (
        "only_backtracking",
        4,
        "synthetic",
        GENERATOR_VERSION,
    )
    assert meta["trace_config"]["style"] == "compact" and meta["tasks"]["preset"] == "tiny"
    assert json.loads(data["train"].info.description)["condition"] == "only_backtracking"
    rows = read_jsonl(out / "train.jsonl") + read_jsonl(out / "test.jsonl")
    assert [r["completion"] for r in read_jsonl(out / "train.jsonl")] == data["train"]["completion"]
    assert meta["summary"]["traces_with_behavior"] == {"verification": 0, "backtracking": 20, "subgoal_setting": 0, "backward_chaining": 0}
    for row in rows:
        task = Task(tuple(row["numbers"]), row["target"])
        assert row["prompt"] == f"Numbers: {' '.join(map(str, task.numbers))}\nTarget: {task.target}\n"
        assert score_response(row["completion"], task).correct and row["correct"]
        assert len(row["completion"]) <= 320
    # Same command, same output.
    first = (out / "train.jsonl").read_text()
    assert main(argv) == 0
    assert (out / "train.jsonl").read_text() == first


@pytest.mark.parametrize(
    ("flags", "kind"), [([], "slip"), (["--incorrect-kind", "slip"], "slip"), (["--incorrect-kind", "ranout"], "ranout")]
)
def test_prime_from_a_tasks_file_with_wrong_answers(tmp_path: Path, flags: list[str], kind: str) -> None:
    tasks = generate_tasks(6, seed=1, preset="priming")
    path = write_tasks(tasks, tmp_path / "tasks.jsonl")
    out = tmp_path / "wrong"
    argv = [
        "prime",
        "-c",
        "backtracking_backward",
        "--tasks",
        str(path),
        "--incorrect",
        *flags,
        "--prompt-style",
        "tinyzero",
        "--test-size",
        "0",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    assert not (out / "test.jsonl").exists()
    rows = read_jsonl(out / "train.jsonl")
    assert [r["numbers"] for r in rows] == [list(t.numbers) for t in tasks]
    for row, task in zip(rows, tasks, strict=True):
        assert score_response(row["completion"], task).outcome is Outcome.WRONG_VALUE
        assert row["prompt"].startswith("A conversation between User and Assistant")
        assert row["behaviors"]["backward_chaining"] >= 1 and row["behaviors"]["verification"] == 0
        assert "I need" in row["completion"] or "must make" in row["completion"]  # full sentences for the tinyzero prompt
        assert (
            f"reach {task.target}" in row["completion"]
            or f"target {task.target}" in row["completion"]
            or (f"equation for {task.target}" in row["completion"])
        )
        assert row["incorrect_kind"] == kind
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["incorrect"] is True and meta["incorrect_kind"] == kind


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--incorrect-kind", "ranout"], "needs --incorrect"), (["--incorrect", "--incorrect-kind", "misread"], "invalid choice")],
)
def test_prime_refuses_a_kind_without_incorrect(tmp_path: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    argv = ["prime", "-c", "only_backtracking", "--preset", "tiny", "-n", "2", *flags, "-o", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse rejects unknown choices itself
        code = exit_.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prime_with_the_openai_generator_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli")
    question = re.compile(r"numbers \[([\d, ]+)\], create an equation that equals (\d+)")

    def handler(request: dict, n: int) -> Reply:
        numbers, target = question.search(request["messages"][1]["content"]).groups()  # type: ignore[union-attr]
        task = Task(tuple(int(x) for x in numbers.split(",")), int(target))
        return Reply.ok(generate_trace(task, "all_strategies", seed=n, incorrect=n % 2 == 1).text)

    out = tmp_path / "llm"
    with OpenAIServer(handler) as server:
        base = ["prime", "--generator", "openai", "--base-url", server.base_url, "--model", "judge-1", "-c", "all_strategies"]
        argv = [*base, "--preset", "tiny", "-n", "6", "--concurrency", "2", "--test-size", "0", "-o", str(out)]
        assert main(argv) == 0
        assert len(server.requests) == 6
        assert main([*argv, "--keep", "correct"]) == 0  # resumed: nothing requested again
        assert len(server.requests) == 6
    replies = read_jsonl(out / "responses.jsonl")
    kept = read_jsonl(out / "train.jsonl")
    assert len(replies) == 6 and len(kept) == sum(r["correct"] for r in replies) == 3
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["generator_version"] == LLM_GENERATOR_VERSION and meta["llm"]["model"] == "judge-1" and meta["complete"]
    assert "sk-cli" not in (out / "metadata.json").read_text()


def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prime", "-c", "all_strategies", "--preset", "tiny", "-n", "3", "--max-chars", "45", "-o", str(tmp_path)]) == 2
    assert "max_chars" in capsys.readouterr().err
    assert main(["prime", "-c", "all_strategies", "--generator", "openai", "-n", "2", "-o", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err
