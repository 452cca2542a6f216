"""The LLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from behavior_classifier.behaviors import BEHAVIORS
from behavior_classifier.classify import classify_file
from behavior_classifier.client import JudgeConfig, LLMJudge
from behavior_classifier.local_server import OpenAIServer, Reply
from tests.behavior_classifier.scripted import expected, trace_id

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-test-DO-NOT-LEAK-4f9c2a"


def write_traces(path: Path, n: int) -> list[dict]:
    rows = [
        {"text": f"<think>TRACE-{i}: 3 + 4 = 7, not 9.</think>\n<answer>3 + 4</answer>", "numbers": [3, 4], "target": 9, "step": i % 3}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def good(request: dict) -> Reply:
    return Reply.ok(json.dumps(expected(trace_id(request))))


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


def config(server: OpenAIServer, tmp_path: Path, **overrides) -> JudgeConfig:
    base = {"base_url": server.base_url, "model": "judge-test", "timeout": 1.0, "max_retries": 4, "cache_path": tmp_path / "cache.sqlite"}
    return JudgeConfig(**{**base, **overrides})


def test_every_trace_labelled_or_explicitly_failed_despite_misbehaviour(tmp_path: Path) -> None:
    # Each trace's first request misbehaves in a different way; trace 7 is malformed forever.
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def handler(request: dict, n: int) -> Reply:
        i = trace_id(request)
        with lock:
            attempt = seen[i] = seen.get(i, -1) + 1
        if i == 7:
            return Reply.ok("I think there is some verification here, maybe 2?")
        if attempt == 0:
            script = {
                0: Reply.error(429, retry_after=0.2),
                1: Reply.error(500),
                2: Reply.error(503, retry_after=0.1),
                3: Reply.ok("{}", delay=3.0),  # slower than the 1 s timeout
                4: Reply.dropped(),
                5: Reply.ok('{"verification": 1, "backtracking": '),  # truncated JSON
                6: Reply.ok("Sure! Here are the counts:\n```json\n" + json.dumps(expected(6)) + "\n```\nHope this helps."),
                8: Reply(status=200, body=b"this is not json at all"),  # malformed at the HTTP level
                9: Reply.ok(json.dumps({**expected(9), "backtracking": -1})),  # invalid count
                10: Reply.ok(json.dumps({k: v for k, v in expected(10).items() if k != "verification"})),  # missing key
            }
            if i in script:
                return script[i]
        return good(request)

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = write_traces(inp, 12)
    with OpenAIServer(handler) as server:
        summary = classify_file(inp, out, LLMJudge(config(server, tmp_path, concurrency=4, malformed_retries=2)), progress=False)
        requests = server.requests
    assert not server.errors
    result = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_row"] for r in result] == list(range(12))
    for i, row in enumerate(result):
        assert row["text"] == rows[i]["text"] and row["step"] == rows[i]["step"]  # other fields copied
        if i == 7:
            assert row["behaviors"] is None
            assert "MalformedReply" in row["judge_error"]
        else:
            assert row["behaviors"] == expected(i), (i, row)
            assert "judge_error" not in row
    assert (summary.labelled, summary.failed) == (11, 1)
    assert sum(1 for r in requests if trace_id(r.json) == 7) == 3  # 1 + malformed_retries, then given up
    assert summary.usage.prompt_tokens > 0 and summary.usage.completion_tokens > 0


def test_deeply_nested_reply_is_retried_as_malformed(tmp_path: Path) -> None:
    # A reply that exhausts the JSON decoder's recursion limit is a malformed reply (re-asked), not a crash.
    def handler(request: dict, n: int) -> Reply:
        return Reply.ok("[" * 5000) if n == 0 else good(request)

    with OpenAIServer(handler) as server:
        judge = LLMJudge(config(server, tmp_path, cache_path=None, malformed_retries=1))
        [result] = judge.batch(["TRACE-5"])
        assert len(server.requests) == 2
    assert not server.errors
    assert result.counts == expected(5) and result.error is None and result.requests == 2


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    def handler(request: dict, n: int) -> Reply:
        return Reply.error(429, retry_after=0.6) if n == 0 else good(request)

    with OpenAIServer(handler) as server:
        judge = LLMJudge(config(server, tmp_path, cache_path=None))
        assert judge(json.dumps("TRACE-4")) == expected(4)
        first, second = server.requests
    # The openai client's own backoff (0.5-1 s jittered) would not give this exact floor; Retry-After does.
    assert second.received_at - first.received_at >= 0.55


def test_failure_after_retries_is_explicit_not_zeros(tmp_path: Path) -> None:
    with OpenAIServer(lambda request, n: Reply.error(500)) as server:
        judge = LLMJudge(config(server, tmp_path, max_retries=1))
        [result] = judge.batch(["TRACE-1"])
        assert result.counts is None and "HTTP 500" in (result.error or "")
        with pytest.raises(RuntimeError, match="judge failed"):
            judge("TRACE-2")
        assert len(server.requests) == 4  # 2 traces x (1 + 1 retry)


def test_json_mode_is_dropped_when_the_server_rejects_it(tmp_path: Path) -> None:
    def handler(request: dict, n: int) -> Reply:
        if "response_format" in request:
            return Reply.error(400, message="response_format is not supported by this server")
        return good(request)

    with OpenAIServer(handler) as server:
        results = LLMJudge(config(server, tmp_path, concurrency=1)).batch([f"TRACE-{i}" for i in range(4)])
        requests = server.requests
    assert [r.counts for r in results] == [expected(i) for i in range(4)]
    assert "response_format" in requests[0].json and requests[0].json["temperature"] == 0
    assert all("response_format" not in r.json for r in requests[2:])  # sticky after the first rejection
    assert len(requests) == 5


def test_json_mode_and_prompt_on_the_wire(tmp_path: Path) -> None:
    text = '<think>Let me try 25 + 3 = 28, not 32.\n  Weird   spacing & "quotes" {braces}</think>'
    with OpenAIServer(lambda request, n: Reply.ok(json.dumps(expected(0)))) as server:
        LLMJudge(config(server, tmp_path)).batch([text])
        [request] = server.requests
    body = request.json
    assert body["response_format"] == {"type": "json_object"} and body["temperature"] == 0 and body["model"] == "judge-test"
    user = body["messages"][-1]["content"]
    assert text in user  # verbatim
    assert all(f'"{name}"' in user for name in BEHAVIORS)


def test_cache_makes_a_rerun_free(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    write_traces(inp, 10)
    with OpenAIServer(lambda request, n: good(request)) as server:
        first = classify_file(inp, tmp_path / "a.jsonl", LLMJudge(config(server, tmp_path)), progress=False)
        second = classify_file(inp, tmp_path / "b.jsonl", LLMJudge(config(server, tmp_path)), progress=False)
        other_model = classify_file(inp, tmp_path / "c.jsonl", LLMJudge(config(server, tmp_path, model="other")), progress=False)
        assert len(server.requests) == 20  # 10 + 0 + 10: the cache is keyed by model
    assert first.usage.requests == 10 and second.usage.requests == 0 and second.usage.cache_hits == 10
    assert other_model.usage.requests == 10
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "judge"} for line in p.read_text().splitlines()]  # noqa: E731
    assert strip(tmp_path / "a.jsonl") == strip(tmp_path / "b.jsonl")


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    in_flight, peak = 0, 0
    lock = threading.Lock()

    def handler(request: dict, n: int) -> Reply:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return good(request)

    with OpenAIServer(handler) as server:
        results = LLMJudge(config(server, tmp_path, concurrency=3, cache_path=None)).batch([f"TRACE-{i}" for i in range(15)])
    assert all(r.counts == expected(i) for i, r in enumerate(results))
    assert 2 <= peak <= 3


def test_per_behavior_mode_sends_one_prompt_per_behaviour(tmp_path: Path) -> None:
    def handler(request: dict, n: int) -> Reply:
        user = request["messages"][-1]["content"]
        [name] = [b for b in BEHAVIORS if f'exactly one key, "{b}"' in user]
        return Reply.ok(f'```json\n{{"{name}": {expected(trace_id(request))[name]}}}\n```')

    with OpenAIServer(handler) as server:
        results = LLMJudge(config(server, tmp_path, mode="per_behavior")).batch(["TRACE-5", "TRACE-8"])
        assert len(server.requests) == 8
    assert [r.counts for r in results] == [expected(5), expected(8)]


@contextlib.contextmanager
def _run_cli(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`countdown-lab classify ARGS` in its own process group, killed whole on exit (a timeout or a failed
    assert included) so no judge process outlives the test."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "classify", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:  # not reaped yet, so its pid still names our group and nobody else's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()  # reaps it and closes the pipes


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


@pytest.mark.slow  # more than ~5 s; `pytest -m 'not slow'` skips it
def test_killed_job_resumes_losing_nothing_and_repeating_no_finished_request(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 40
    write_traces(inp, n)
    with OpenAIServer(lambda request, k: Reply.ok(json.dumps(expected(trace_id(request))), delay=0.05)) as server:
        # The cache is off so that only the resumable output can prevent repeats.
        args = [
            str(inp),
            "--output",
            str(out),
            "--base-url",
            server.base_url,
            "--model",
            "m",
            "--concurrency",
            "2",
            "--no-cache",
            "--quiet",
        ]
        with _run_cli(args, _env()):  # killed (SIGKILL to its group) on leaving the block
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 8):
                time.sleep(0.02)
        finished_first = {json.loads(line)["input_row"] for line in out.read_text().splitlines() if line.endswith("}")}
        assert 8 <= len(finished_first) < n, "the job should have been killed mid-way"
        first_run_requests = len(server.requests)

        with _run_cli(args, _env()) as second:
            stdout, stderr = second.communicate(timeout=120)
        assert second.returncode == 0, stderr
        resumed = [trace_id(r.json) for r in server.requests[first_run_requests:]]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_row"] for r in rows] == list(range(n))  # nothing lost, nothing twice, input order
    assert all(r["behaviors"] == expected(r["input_row"]) for r in rows)
    assert not set(resumed) & finished_first  # no finished request repeated
    assert set(resumed) == set(range(n)) - finished_first
    assert f"{len(finished_first)} already done" in stderr


def test_api_key_never_leaks(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_traces(inp, 6)

    def handler(request: dict, n: int) -> Reply:
        i = trace_id(request)
        if i == 0:  # a hostile server echoes the key in its error message, every time
            return Reply.error(400, message=f"invalid key {SECRET}")
        if i == 1:
            return Reply.ok(f"I cannot parse {SECRET}")
        if i == 2 and n < 4:
            return Reply.error(500)
        return good(request)

    with OpenAIServer(handler) as server:
        args = [str(inp), "--output", str(out), "--base-url", server.base_url, "--model", "m", "--max-retries", "1", "--timeout", "2"]
        # OPENAI_LOG=debug makes the openai client log every request it sends.
        with _run_cli(args, _env(OPENAI_API_KEY=SECRET, OPENAI_LOG="debug")) as proc:
            stdout, stderr = proc.communicate(timeout=120)
        requests = server.requests
    assert proc.returncode == 1  # two traces failed, reported by the exit code
    assert "[redacted]" in out.read_text()
    assert "openai" in stderr.lower() or "HTTP" in stderr  # the debug log did run
    for blob in (stdout, stderr, out.read_text(), *(p.read_bytes().decode("latin-1") for p in tmp_path.iterdir())):
        assert SECRET not in blob
    assert requests and all(r.headers["authorization"] == f"Bearer {SECRET}" for r in requests)
    for r in requests:
        others = {k: v for k, v in r.headers.items() if k != "authorization"}
        assert SECRET not in json.dumps(others) and SECRET.encode() not in r.raw_body


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="base_url"):
        JudgeConfig(base_url="localhost:8000")
    with pytest.raises(ValueError, match="concurrency"):
        JudgeConfig(concurrency=0)
    with pytest.raises(ValueError, match="mode"):
        JudgeConfig(mode="each")


# ---- a server that trickles, lies about counts, sends HTML or a broken `usage` ------------------------------------


def test_timeout_is_a_deadline_for_the_whole_request(tmp_path: Path) -> None:
    """A server that sends a byte every 0.2 s keeps every read alive; the request must still end at --timeout."""
    with OpenAIServer(lambda request, n: Reply.ok(json.dumps(expected(1)), trickle=0.2)) as server:
        judge = LLMJudge(config(server, tmp_path, timeout=1.0, max_retries=1))
        start = time.monotonic()
        [result] = judge.batch(["TRACE-1"])
        took = time.monotonic() - start
    assert result.counts is None and "Timeout" in (result.error or "")
    assert took < 6, f"held {took:.1f} s at timeout=1 s with 1 retry"  # the body alone would take ~20 s
    assert len(server.requests) == 2


@pytest.mark.parametrize("count", [10**30, 1001, "99999999999999999999"])
def test_counts_no_trace_can_hold_are_malformed(tmp_path: Path, count: object) -> None:
    with OpenAIServer(lambda request, n: Reply.ok(json.dumps({**expected(1), "verification": count}))) as server:
        [result] = LLMJudge(config(server, tmp_path, malformed_retries=1)).batch(["TRACE-1"])
    assert result.counts is None and "above 1000" in (result.error or "")
    assert len(server.requests) == 2  # re-asked once, then an explicit failure


@pytest.mark.parametrize("usage", ["n/a", None, {"prompt_tokens": "many"}, [1, 2]])
def test_a_malformed_usage_does_not_cost_the_reply(tmp_path: Path, usage: object) -> None:
    with OpenAIServer(lambda request, n: Reply.ok(json.dumps(expected(1)), extra={"usage": usage})) as server:
        [result] = LLMJudge(config(server, tmp_path)).batch(["TRACE-1"])
    assert result.counts == expected(1) and result.requests == 1


def test_an_html_page_with_status_200_says_what_came_back(tmp_path: Path) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1>" + "x" * 1000 + "</body></html>"
    with OpenAIServer(lambda request, n: Reply(body=page, content_type="text/html")) as server:
        [result] = LLMJudge(config(server, tmp_path, malformed_retries=0)).batch(["TRACE-1"])
    assert result.counts is None
    assert "non-JSON reply: <html><body><h1>502 Bad Gateway" in (result.error or "") and len(result.error or "") <= 500


def test_classify_rerun_with_failed_rows_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lab.cli import main

    write_traces(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"

    def handler(request: dict, n: int) -> Reply:
        return Reply.error(500) if trace_id(request) == 1 else good(request)

    with OpenAIServer(handler) as server:
        argv = ["classify", str(tmp_path / "in.jsonl"), "-o", str(out), "--base-url", server.base_url, "--max-retries", "0", "--quiet"]
        assert main(argv) == 1
        assert "1 of 3 rows failed" in capsys.readouterr().err
        assert main(argv) == 1  # nothing re-judged (no --retry-failed), and still not a success
        err = capsys.readouterr().err
        assert "1 of 3 rows failed" in err and "--retry-failed" in err
        server.handler = lambda request, n: good(request)
        assert main([*argv, "--retry-failed"]) == 0
    assert all(json.loads(line)["behaviors"] is not None for line in out.read_text().splitlines())
