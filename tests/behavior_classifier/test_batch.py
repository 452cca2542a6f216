"""`classify --batch` against the real local server's Files and Batch endpoints, with the openai client over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from behavior_classifier.batch import classify_file_batch, state_path
from behavior_classifier.behaviors import BEHAVIORS
from behavior_classifier.classify import RunSummary, classify_file
from behavior_classifier.client import JudgeConfig, LLMJudge
from behavior_classifier.local_server import OpenAIServer, Reply
from tests.behavior_classifier.scripted import expected, trace_id

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-batch")


def handler(request: dict, n: int) -> Reply:
    user = request["messages"][-1]["content"]
    i = trace_id(request)
    asked = [b for b in BEHAVIORS if f"Does the reasoning show {b.replace('_', ' ')}, that is" in user]
    if asked:  # the study's protocol: one behaviour, a count tag
        return Reply.ok(f"<count>{expected(i)[asked[0]]}</count>")
    return Reply.ok(json.dumps(expected(i)))


def write_traces(path: Path, n: int) -> None:
    rows = [{"text": f"TRACE-{i}: 3 + 4 = 7, not 9.", "numbers": [3, 4], "target": 9, "step": i % 2} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def config(server: OpenAIServer, **overrides) -> JudgeConfig:
    return JudgeConfig(**{"base_url": server.base_url, "model": "judge-test", "timeout": 5.0, "max_retries": 1, **overrides})


def traces(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """(input with `n` traces, output path) in `tmp_path`."""
    inp = tmp_path / "in.jsonl"
    write_traces(inp, n)
    return inp, tmp_path / "out.jsonl"


def run_batch(server: OpenAIServer, inp: Path, out: Path, **kwargs) -> RunSummary:
    """`classify --batch` of `inp` into `out` against `server`, polling fast and quietly."""
    return classify_file_batch(inp, out, config(server), poll_interval=0.01, progress=False, **kwargs)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("protocol", ["json", "study"])
def test_batch_writes_the_same_rows_as_the_request_path(tmp_path: Path, protocol: str) -> None:
    inp = tmp_path / "in.jsonl"
    write_traces(inp, 6)
    with OpenAIServer(handler) as server:
        summary = classify_file_batch(inp, tmp_path / "batch.jsonl", config(server, protocol=protocol), poll_interval=0.01, progress=False)
        assert len(server.batches) == 1 and summary.labelled == 6 and summary.failed == 0
        [batch] = server.batches.values()
        assert batch["status"] == "completed" and batch["endpoint"] == "/v1/chat/completions"
        assert batch["request_counts"]["total"] == 6 * (4 if protocol == "study" else 1)
        assert [r.method for r in server.requests].count("POST") == 1  # the probe; everything else went through the batch
        classify_file(inp, tmp_path / "direct.jsonl", LLMJudge(config(server, protocol=protocol)), progress=False)
    assert read(tmp_path / "batch.jsonl") == read(tmp_path / "direct.jsonl")
    assert [r["behaviors"] for r in read(tmp_path / "batch.jsonl")] == [expected(i) for i in range(6)]
    assert not state_path(tmp_path / "batch.jsonl").exists()


def test_batch_resumes_the_batch_it_submitted_after_a_kill(tmp_path: Path) -> None:
    inp, out = traces(tmp_path, 5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with OpenAIServer(handler) as server:
        args = [
            "--output",
            str(out),
            "--base-url",
            server.base_url,
            "--model",
            "judge-test",
            "--batch",
            "--poll-interval",
            "600",
            "--quiet",
        ]
        proc = subprocess.Popen([sys.executable, "-m", "lab.cli", "classify", str(inp), *args], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "batch_id" not in (
                json.loads(state_path(out).read_text()) if state_path(out).exists() else {}
            ):
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # killed while it waits for the batch
            proc.communicate()
        state = json.loads(state_path(out).read_text())
        assert list(server.batches) == [state["batch_id"]] and state["input_file_id"] in server.files
        assert not out.exists() or not out.read_text().strip()
        # The re-run polls that batch: no second upload, no second batch.
        summary = run_batch(server, inp, out)
        assert len(server.batches) == 1 and len([f for f in server.files.values() if f["purpose"] == "batch"]) == 1
    assert summary.labelled == 5 and [r["behaviors"] for r in read(out)] == [expected(i) for i in range(5)]
    assert not state_path(out).exists()


def test_a_kill_between_upload_and_submit_finds_the_batch_or_submits_one(tmp_path: Path) -> None:
    inp, out = traces(tmp_path, 3)
    with OpenAIServer(handler) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-batch")
        from behavior_classifier.batch import request_lines
        from behavior_classifier.classify import read_rows
        from behavior_classifier.client import RequestParams

        body = request_lines(config(server), RequestParams(json_mode=True), read_rows(inp), [0, 1, 2])
        uploaded = client.files.create(file=("requests.jsonl", body), purpose="batch")
        created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        client.close()
        # The state names the file but not the batch: killed right after batches.create.
        state = {"model": "judge-test", "protocol": "json", "mode": "all", "rows": [0, 1, 2], "input_file_id": uploaded.id}
        state_path(out).write_text(json.dumps(state))
        summary = run_batch(server, inp, out)
        assert list(server.batches) == [created.id] and summary.labelled == 3
        # Killed before batches.create: the uploaded file is submitted once.
        out.unlink()
        uploaded = openai.OpenAI(base_url=server.base_url, api_key="x").files.create(file=("r.jsonl", body), purpose="batch")
        state_path(out).write_text(json.dumps({**state, "input_file_id": uploaded.id}))
        run_batch(server, inp, out)
        assert len(server.batches) == 2 and list(server.batches.values())[-1]["input_file_id"] == uploaded.id
    assert [r["behaviors"] for r in read(out)] == [expected(i) for i in range(3)]


def test_batch_to_a_reasoning_model_learns_its_parameters_first(tmp_path: Path) -> None:
    inp, out = traces(tmp_path, 3)
    with OpenAIServer(handler, reasoning=True) as server:
        summary = run_batch(server, inp, out)
        # One ordinary request, refused for max_tokens then temperature, then answered; then a single batch.
        probes = [r for r in server.requests if r.method == "POST"]
        assert [r.reply.status for r in probes] == [400, 400, 200]
        assert len(server.batches) == 1
        batched = [r.json for r in server.requests if r.method == "BATCH"]
    assert summary.labelled == 3 and summary.failed == 0
    assert all("max_tokens" not in b and "temperature" not in b and b["max_completion_tokens"] == 256 for b in batched)
    assert [r["behaviors"] for r in read(out)] == [expected(i) for i in range(3)]


def test_a_batch_whose_requests_are_refused_is_resubmitted_with_the_parameter_fixed(tmp_path: Path) -> None:
    from behavior_classifier.local_server import reasoning_refusal

    def picky(request: dict, n: int) -> Reply:
        # The probe (n = 0) passes; every batched request with max_tokens is refused as a reasoning model would.
        return reasoning_refusal({"max_tokens": 1}) if n > 0 and "max_tokens" in request else handler(request, n)

    inp, out = traces(tmp_path, 3)
    with OpenAIServer(picky) as server:
        summary = run_batch(server, inp, out)
        assert len(server.batches) == 2
    assert summary.labelled == 3 and summary.failed == 0
    assert [r["behaviors"] for r in read(out)] == [expected(i) for i in range(3)]


def test_expired_batch_records_unanswered_rows_as_failures_then_retry_failed_finishes(tmp_path: Path) -> None:
    inp, out = traces(tmp_path, 4)
    with OpenAIServer(handler) as server:
        server.batch_outcome = "expired"
        summary = run_batch(server, inp, out)
        assert summary.labelled == 2 and summary.failed == 2
        assert all("expired" in r["judge_error"] for r in read(out) if r["behaviors"] is None)
        server.batch_outcome = "completed"
        summary = run_batch(server, inp, out, retry_failed=True)
        assert summary.labelled == 2 and summary.failed_total == 0 and len(server.batches) == 2
    assert [r["behaviors"] for r in read(out)] == [expected(i) for i in range(4)]


def test_failed_batch_stops_with_the_reason_and_malformed_replies_fail_rows(tmp_path: Path) -> None:
    from countdown_env.errors import UsageError

    inp, out = traces(tmp_path, 2)
    with OpenAIServer(handler) as server:
        server.batch_outcome = "failed"
        with pytest.raises(UsageError, match="failed"):
            run_batch(server, inp, out)
        assert not state_path(out).exists()
    # n = 0 is the probe; the first batched request gets a reply without counts.
    with OpenAIServer(lambda request, n: Reply.ok("no counts here") if n == 1 else handler(request, n)) as server:
        summary = run_batch(server, inp, out)
    assert summary.failed == 1 and "MalformedReply" in read(out)[0]["judge_error"]


def test_cli_batch_needs_the_llm_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lab.cli import main

    inp = tmp_path / "in.jsonl"
    write_traces(inp, 1)
    assert main(["classify", str(inp), "--output", str(tmp_path / "o.jsonl"), "--batch"]) != 0
    assert "--batch needs the LLM judge" in capsys.readouterr().err
