"""Errors a user can cause, across every command: one line `error: ...` on stderr, exit 2, no file lost.

One table; each case sets up files in a temporary directory, runs `countdown-lab` in-process through
`lab.cli.main`, and checks the exit code, the message and that every file that existed before is
byte-identical afterwards. A bug (anything not a user error) must keep its traceback: see the last tests.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from countdown_env.errors import UsageError
from lab.cli import main

ROW = json.dumps({"numbers": [3, 5], "target": 8, "text": "<think>3+5</think><answer>3 + 5</answer>"}) + "\n"
TASKS = json.dumps({"numbers": [3, 5], "target": 8}) + "\n"
UNRELATED = json.dumps({"step": 1, "reward/mean": 0.5}) + "\n" + json.dumps({"step": 2, "reward/mean": 0.6}) + "\n"


@dataclass(frozen=True)
class Case:
    argv: list[str]
    """Arguments; `{d}` is replaced by the temporary directory."""
    code: int
    message: str
    """A fragment the one-line error must contain."""
    files: dict[str, str] = field(default_factory=dict)
    """Files to create first (a name ending in / is a directory)."""


CASES = {
    # 1, 2: score never empties its input or an existing output.
    "score output is the input": Case(["score", "{d}/x.jsonl", "--output", "{d}/x.jsonl"], 2, "also the input", {"x.jsonl": ROW}),
    "score missing input keeps output": Case(
        ["score", "{d}/missing.jsonl", "--output", "{d}/existing.jsonl"], 2, "does not exist", {"existing.jsonl": ROW}
    ),
    "score bad row keeps output": Case(
        ["score", "{d}/x.jsonl", "--output", "{d}/existing.jsonl"], 2, "x.jsonl:2", {"x.jsonl": ROW + "{oops\n", "existing.jsonl": ROW}
    ),
    # 3, 4: classify refuses a file that is not its own output, and the input as output.
    "classify over unrelated rows": Case(
        ["classify", "{d}/traces.jsonl", "-o", "{d}/metrics.jsonl", "--quiet"],
        2,
        "not an output of classify",
        {"traces.jsonl": ROW, "metrics.jsonl": UNRELATED},
    ),
    "classify output is the input": Case(
        ["classify", "{d}/x.jsonl", "-o", "{d}/x.jsonl", "--quiet"], 2, "also the input", {"x.jsonl": ROW}
    ),
    "classify --batch --poll-interval nan": Case(
        [
            "classify",
            "{d}/x.jsonl",
            "-o",
            "{d}/out.jsonl",
            "--batch",
            "--judge",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--poll-interval",
            "nan",
        ],
        2,
        "finite number of seconds",
        {"x.jsonl": ROW},
    ),
    # 5: paths that are directories, files or below files.
    "generate --output-dir existing file": Case(
        ["generate", "-n", "2", "--output-dir", "{d}/existing.jsonl"], 2, "not a directory", {"existing.jsonl": ROW}
    ),
    # -o is one file: with both splits (the default) a .jsonl name is refused before anything is written.
    "generate -o FILE for both splits": Case(["generate", "-n", "2", "-o", "{d}/tasks.jsonl"], 2, "one split"),
    "generate -o below a file": Case(
        ["generate", "-n", "2", "--split", "train", "-o", "{d}/existing.jsonl/t.jsonl"], 2, "is a file", {"existing.jsonl": ROW}
    ),
    "prime --output-dir existing file": Case(
        ["prime", "-c", "dots", "-n", "2", "--output-dir", "{d}/existing.jsonl"], 2, "not a directory", {"existing.jsonl": ROW}
    ),
    "score input is a directory": Case(["score", "{d}/dir"], 2, "is a directory", {"dir/": ""}),
    "score output is a directory": Case(["score", "{d}/x.jsonl", "-o", "{d}/dir"], 2, "is a directory", {"x.jsonl": ROW, "dir/": ""}),
    "score output below a file": Case(["score", "{d}/x.jsonl", "-o", "{d}/x.jsonl/y.jsonl"], 2, "is a file", {"x.jsonl": ROW}),
    "classify input is a directory": Case(["classify", "{d}/dir", "-o", "{d}/out.jsonl"], 2, "is a directory", {"dir/": ""}),
    "classify output is a directory": Case(["classify", "{d}/x.jsonl", "-o", "{d}/dir"], 2, "is a directory", {"x.jsonl": ROW, "dir/": ""}),
    "classify output below a file": Case(["classify", "{d}/x.jsonl", "-o", "{d}/x.jsonl/y.jsonl"], 2, "is a file", {"x.jsonl": ROW}),
    "eval --model missing path": Case(
        ["eval", "--model", "{d}/no/such/model", "--tasks", "{d}/t.jsonl", "--output", "{d}/e.json"],
        2,
        "does not exist",
        {"t.jsonl": TASKS},
    ),
    "eval --model a file": Case(
        ["eval", "--model", "{d}/t.jsonl", "--tasks", "{d}/t.jsonl", "--output", "{d}/e.json"], 2, "is a file", {"t.jsonl": TASKS}
    ),
    # 6: solve's limits.
    "solve too many numbers": Case(["solve", *map(str, range(1, 11)), "--target", "99991"], 2, "at most 6 numbers"),
    "solve negative numbers": Case(["solve", "-5", "3", "--target", "-2"], 2, "non-negative"),
    "solve 20-digit number": Case(["solve", "3", "5", "--target", "1" * 20], 2, "must be at most"),  # wording: countdown_env's
    "solve --cap 0": Case(["solve", "3", "5", "--target", "8", "--all", "--cap", "0"], 2, "--cap: must be >= 1"),
    "solve --cap -1": Case(["solve", "3", "5", "--target", "8", "--all", "--cap", "-1"], 2, "--cap: must be >= 1"),
    # 7: counts with a floor and a ceiling.
    "eval --limit -1": Case(["eval", "--model", "m", "--tasks", "{d}/t.jsonl", "--output", "{d}/e.json", "--limit", "-1"], 2, "--limit"),
    "eval --limit 0": Case(["eval", "--model", "m", "--tasks", "{d}/t.jsonl", "--output", "{d}/e.json", "--limit", "0"], 2, "--limit"),
    "generate -n too large": Case(["generate", "-n", "1000000000", "--output-dir", "{d}/out"], 2, "<= 1,000,000"),
    "export-verl to a file": Case(["export-verl", "--output-dir", "{d}/x.jsonl", "-n", "3"], 2, "not a directory", {"x.jsonl": ROW}),
    # Config errors from the user's flags.
    "classify openai without url": Case(
        ["classify", "{d}/x.jsonl", "-o", "{d}/o.jsonl", "--judge", "openai"], 2, "--base-url", {"x.jsonl": ROW}
    ),
    "classify bad timeout": Case(
        ["classify", "{d}/x.jsonl", "-o", "{d}/o.jsonl", "--base-url", "http://127.0.0.1:9/v1", "--timeout", "0"],
        2,
        "timeout must be",  # the rest of the wording is behavior_classifier's
        {"x.jsonl": ROW},
    ),
    "score rows without text": Case(["score", "{d}/t.jsonl"], 2, "no 'text'", {"t.jsonl": TASKS}),
    # Hub datasets offline (every case here runs with HF_HUB_OFFLINE=1).
    "ppo --tasks hub id offline": Case(
        ["ppo", "--model", "m", "--output-dir", "{d}/r", "--tasks", "Jiayi-Pan/Countdown-Tasks-3to4"], 2, "hub is offline"
    ),
    "export-verl --tasks hub id:split offline": Case(
        ["export-verl", "--output-dir", "{d}/v", "-n", "3", "--tasks", "Jiayi-Pan/Countdown-Tasks-3to4:train"], 2, "hub is offline"
    ),
    "sft --data hub id offline": Case(["sft", "--model", "m", "--data", "org/traces:test", "--output-dir", "{d}/s"], 2, "hub is offline"),
    "generate --push-to-hub offline": Case(
        ["generate", "-n", "2", "--split", "train", "-o", "{d}/t.jsonl", "--push-to-hub", "me/tasks"], 2, "hub is offline"
    ),
    "ppo --report-to a tracker not installed": Case(
        ["ppo", "--model", "m", "--output-dir", "{d}/r", "--report-to", "trackio"], 2, "pip install trackio"
    ),
}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No case may reach the network; a hub id must fail with one line saying the hub is offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_files(root: Path, files: dict[str, str]) -> dict[Path, bytes]:
    for name, text in files.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.write_text(text)
    return snapshot(root)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_line_and_loses_no_file(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    before = make_files(tmp_path, case.files)
    code = main([arg.replace("{d}", str(tmp_path)) for arg in case.argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # progress bars aside
    assert code == case.code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.message in lines[0]
    after = snapshot(tmp_path)
    assert {p: after.get(p) for p in before} == before, "an existing file changed"
    assert not [p for p in after if p.name.endswith(".tmp")], "a temporary file was left behind"


def test_classify_resumes_its_own_output(tmp_path: Path) -> None:
    """The refusal in the table does not stop a genuine re-run."""
    (tmp_path / "x.jsonl").write_text(ROW * 3)
    argv = ["classify", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "o.jsonl"), "--quiet"]
    assert main(argv) == 0
    first = (tmp_path / "o.jsonl").read_bytes()
    assert main(argv) == 0 and (tmp_path / "o.jsonl").read_bytes() == first


def test_score_writes_its_output_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.jsonl").write_text(ROW * 2)
    (tmp_path / "out.jsonl").write_text("old\n")
    assert main(["score", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, True]
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


def test_solve_at_the_limit_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["solve", "100", "75", "50", "25", "6", "3", "--target", "952", "--tv-rules"]) == 0
    assert "= 952" in capsys.readouterr().out
    assert main(["solve", "--help"]) == 0
    assert "at most 6" in capsys.readouterr().out


def test_export_verl_path_with_quotes_writes_valid_python(tmp_path: Path) -> None:
    out = tmp_path / 'q"""\'z'
    assert main(["export-verl", "--output-dir", str(out), "-n", "5", "--num-test", "3", "--preset", "tiny"]) == 0
    ast.parse((out / "countdown_reward.py").read_text())


def test_compute_score_refuses_non_integer_ground_truth() -> None:
    from rl.verl_export import compute_score

    assert compute_score("countdown", "<answer>3 + 5</answer>", {"numbers": [3, 5], "target": 8}) == {"score": 1.0, "acc": True}
    with pytest.raises(ValueError, match="integer"):
        compute_score("countdown", "<answer>3 + 5</answer>", {"numbers": [3, 5.5], "target": 8})
    with pytest.raises(ValueError, match="integer"):
        compute_score("countdown", "<answer>3 + 5</answer>", {"numbers": [3, 5], "target": 8.7})


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only user errors become one-line messages: a ValueError from inside the work propagates."""
    import lab.commands.env

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("internal bug")

    monkeypatch.setattr(lab.commands.env, "solve", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["solve", "3", "5", "--target", "8"])


def test_usage_error_is_a_value_error() -> None:
    # Library callers that catch ValueError keep working.
    assert issubclass(UsageError, ValueError)
