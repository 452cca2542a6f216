"""The LLM trace generator against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from behavior_classifier.local_server import OpenAIServer, Reply
from countdown_env import Task, generate_tasks, score_response
from priming import CONDITIONS, generate_trace
from priming.llm import LLMConfig, generate_llm_traces, parse_reply, read_rows, select_rows, system_prompt, task_key

TASKS = generate_tasks(6, seed=2, preset="tiny")
_QUESTION = re.compile(r"numbers \[([\d, ]+)\], create an equation that equals (\d+)")


def task_of(request: dict) -> Task:
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    numbers, target = _QUESTION.search(user).groups()  # type: ignore[union-attr]
    return Task(tuple(int(n) for n in numbers.split(",")), int(target))


def solver(request: dict, n: int) -> Reply:
    """A model that answers with a real reasoning trace for the task it was asked about."""
    return Reply.ok("Sure!\n" + generate_trace(task_of(request), "backtracking_verification", seed=n).text)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")


def config(server: OpenAIServer, **kwargs: object) -> LLMConfig:
    return LLMConfig(
        base_url=server.base_url, **{"model": "test-model", "condition": "backtracking_verification", "max_retries": 2, **kwargs}
    )  # type: ignore[arg-type]


def test_traces_are_requested_scored_and_written(tmp_path: Path) -> None:
    out = tmp_path / "responses.jsonl"
    with OpenAIServer(solver) as server:
        run = generate_llm_traces(TASKS, config(server), out, progress=False)
        requests = server.requests
    assert (run.requested, run.written, run.failed, run.skipped) == (6, 6, 0, 0)
    assert len(requests) == 6
    first = requests[0]
    assert first.headers["authorization"] == "Bearer sk-test-key"  # from the environment only
    body = first.json
    assert body["model"] == "test-model"
    assert body["messages"][0] == {"role": "system", "content": system_prompt("backtracking_verification")}
    rows = read_rows(out)
    assert sorted(r["key"] for r in rows) == sorted(task_key(i, t) for i, t in enumerate(TASKS))
    for row in rows:
        task = TASKS[row["index"]]
        assert row["numbers"] == list(task.numbers) and row["target"] == task.target
        assert row["text"].startswith("<think>") and "Sure!" not in row["text"]  # normalised to the trace format
        assert row["correct"] is True and score_response(row["text"], task).correct
        assert row["behaviors"] is None and row["usage"]["completion_tokens"] > 0


def test_resume_requests_only_missing_tasks(tmp_path: Path) -> None:
    out = tmp_path / "responses.jsonl"
    with OpenAIServer(solver) as server:
        generate_llm_traces(TASKS[:4], config(server), out, progress=False)
        with out.open("a") as f:
            f.write('{"key": "4:1 2')  # a line cut off by a crash
        run = generate_llm_traces(TASKS, config(server), out, progress=False)
        asked = [task_of(r.json).key for r in server.requests]
        again = generate_llm_traces(TASKS, config(server), out, progress=False)
        total = len(server.requests)
    assert (run.requested, run.skipped, run.written) == (2, 4, 2)
    assert sorted(asked[4:]) == sorted(t.key for t in TASKS[4:])  # only the two tasks not in the file (in flight together: any order)
    assert (again.requested, again.written) == (0, 0) and total == 6
    keys = [r["key"] for r in read_rows(out)]
    assert len(keys) == len(set(keys)) == 6


def test_retries_and_failures(tmp_path: Path) -> None:
    out = tmp_path / "responses.jsonl"
    bad = TASKS[1]

    def flaky(request: dict, n: int) -> Reply:
        if task_of(request).key == bad.key:
            return Reply.error(400, message="bad request")  # not retried by the client
        if n == 0:
            return Reply.error(429, retry_after=0.05)  # retried
        return solver(request, n)

    with OpenAIServer(flaky) as server:
        run = generate_llm_traces(TASKS, config(server, concurrency=1), out, progress=False)
        n_first = len(server.requests)
    assert (run.written, run.failed) == (5, 1)
    assert "BadRequestError" in run.errors[0]
    assert n_first == 7  # 6 tasks + one retry after the 429
    with OpenAIServer(solver) as server:
        rerun = generate_llm_traces(TASKS, config(server), out, progress=False)
        assert [task_of(r.json).key for r in server.requests] == [bad.key]
    assert (rerun.requested, rerun.written, rerun.failed) == (1, 1, 0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"condition": "only_backtracking"}, "condition"),
        ({"incorrect": True}, "incorrect"),
        ({"model": "other-model"}, "model"),
    ],
)
def test_replies_of_another_setup_are_not_reused(tmp_path: Path, change: dict, named: str) -> None:
    out = tmp_path / "responses.jsonl"
    with OpenAIServer(solver) as server:
        generate_llm_traces(TASKS[:2], config(server), out, progress=False)
        before = out.read_text()
        with pytest.raises(ValueError, match=f"{named} .*another --output-dir"):
            generate_llm_traces(TASKS, config(server, **change), out, progress=False)
        assert len(server.requests) == 2  # nothing was requested for the refused run
    assert out.read_text() == before


def test_replies_of_another_generator_version_are_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "responses.jsonl"
    with OpenAIServer(solver) as server:
        generate_llm_traces(TASKS[:2], config(server), out, progress=False)
        rows = read_rows(out)
        out.write_text("".join(json.dumps({**row, "generator": "openai-0"}) + "\n" for row in rows))
        with pytest.raises(ValueError, match="generator 'openai-0'.*another --output-dir"):
            generate_llm_traces(TASKS, config(server), out, progress=False)


def test_api_key_echoed_by_the_server_is_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "responses.jsonl"

    def echo_key(request: dict, n: int) -> Reply:
        # A hostile server: its error message repeats the key it was sent (the fixture's OPENAI_API_KEY).
        return Reply.error(401, message="Incorrect API key provided: sk-test-key")

    with OpenAIServer(echo_key) as server:
        run = generate_llm_traces(TASKS[:2], config(server, max_retries=0), out, progress=False)
        assert server.requests[0].headers["authorization"] == "Bearer sk-test-key"
    assert run.failed == 2 and all("[redacted]" in e for e in run.errors)
    printed = capsys.readouterr()
    assert "[redacted]" in printed.err
    for blob in (*run.errors, printed.out, printed.err, out.read_text()):
        assert "sk-test-key" not in blob


def test_requests_run_concurrently_within_the_bound(tmp_path: Path) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow(request: dict, n: int) -> Reply:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return solver(request, n)

    with OpenAIServer(slow) as server:
        start = time.monotonic()
        generate_llm_traces(TASKS, config(server, concurrency=3), tmp_path / "r.jsonl", progress=False)
        elapsed = time.monotonic() - start
    assert state["max"] == 3
    assert elapsed < 6 * 0.15  # faster than one at a time


def test_no_filter_by_default_and_keep_option(tmp_path: Path) -> None:
    out = tmp_path / "responses.jsonl"

    def half_wrong(request: dict, n: int) -> Reply:
        task = task_of(request)
        if task.target % 2:
            return Reply.ok(generate_trace(task, "backtracking_verification", seed=0, incorrect=True).text)
        return solver(request, n)

    with OpenAIServer(half_wrong) as server:
        generate_llm_traces(TASKS, config(server), out, progress=False)
    rows = read_rows(out)
    wrong = {r["key"] for r in rows if not r["correct"]}
    assert wrong == {task_key(i, t) for i, t in enumerate(TASKS) if t.target % 2} and 0 < len(wrong) < 6
    assert len(select_rows(rows, TASKS, "all")) == 6
    assert {r["key"] for r in select_rows(rows, TASKS, "correct")} == {r["key"] for r in rows} - wrong
    assert {r["key"] for r in select_rows(rows, TASKS, "incorrect")} == wrong


def test_controls_strip_the_reasoning(tmp_path: Path) -> None:
    for condition in ("dots", "empty_cot"):
        out = tmp_path / f"{condition}.jsonl"
        with OpenAIServer(solver) as server:
            generate_llm_traces(TASKS[:2], config(server, condition=condition), out, progress=False)
            assert server.requests[0].json["messages"][0]["content"] == system_prompt("all_strategies")
        for row in read_rows(out):
            think = row["text"][len("<think>") : row["text"].index("</think>")]
            source = parse_reply(row["raw"]).think
            assert think == ("." * len(source) if condition == "dots" else "")
            assert row["correct"]


def test_garbage_replies_are_kept_and_scored(tmp_path: Path) -> None:
    out = tmp_path / "responses.jsonl"
    with OpenAIServer(lambda request, n: Reply.ok("I don't know. import os; os.system('rm -rf /')")) as server:
        generate_llm_traces(TASKS[:2], config(server), out, progress=False)
    rows = read_rows(out)
    assert all(r["well_formed_reply"] is False and r["outcome"] == "no_answer" and not r["correct"] for r in rows)


def test_system_prompts_ask_for_the_condition_and_forbid_the_rest() -> None:
    for name, condition in CONDITIONS.items():
        if condition.control is not None:
            continue
        prompt = system_prompt(name)
        for behavior in ("verification", "backtracking", "subgoal setting", "backward chaining"):
            asked = f"- {behavior}:" in prompt
            assert asked == (behavior.replace(" ", "_") in condition.behaviors), (name, behavior)
        assert "<think>" in prompt and "<answer>" in prompt
    assert "WRONG" in system_prompt("only_backtracking", incorrect=True)
    assert "without saying why it failed" in system_prompt("only_backtracking")
    assert "without saying why it failed" not in system_prompt("backtracking_verification")
    assert len({system_prompt(n) for n, c in CONDITIONS.items() if c.control is None}) == 6


def test_missing_api_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        generate_llm_traces(TASKS, LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"), tmp_path / "out" / "r.jsonl", progress=False)
    assert not (tmp_path / "out").exists()  # nothing written before the key is known


def test_parse_reply_normalises_and_takes_the_last_answer() -> None:
    parsed = parse_reply("noise <think> a \n</think> junk <answer>1</answer> <answer> 1 + 2 </answer> tail")
    assert parsed.well_formed and parsed.text == "<think>a</think>\n<answer>1 + 2</answer>"
    assert not parse_reply("<answer>3</answer>").well_formed
    assert json.loads(json.dumps(parse_reply("").__dict__))["well_formed"] is False
