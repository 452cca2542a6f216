"""The shared LLM client against a real OpenAI-compatible HTTP server on 127.0.0.1 (no patched client)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from behavior_classifier.client import JudgeConfig
from behavior_classifier.local_server import OpenAIServer, Reply
from countdown_env.errors import UsageError
from priming.llm import LLMConfig
from runtime.llm_client import (
    PLACEHOLDER_KEY,
    ClientConfig,
    LLMClient,
    api_key,
    check_seconds,
    describe_error,
    redact,
    token_count,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-test-shared-client-7d1e"


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def ask(client: LLMClient, n: int, content: str = "hi") -> list[tuple[int, object]]:
    """Send `n` chat requests through `client`; (i, reply text or the exception) in completion order."""

    async def run() -> list[tuple[int, object]]:
        async with client.open() as api:

            async def one(i: int) -> object:
                try:
                    reply = await api.chat.completions.create(model="m", messages=[{"role": "user", "content": f"{content} {i}"}])
                except openai.OpenAIError as err:
                    return err
                return reply.choices[0].message.content

            return [item async for item in client.as_completed(one, n)]

    return asyncio.run(run())


# ---- timeouts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 0, -1.0, "5", True, None])
def test_a_timeout_that_is_not_a_finite_positive_number_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"timeout must be a finite number of seconds > 0, got"):
        check_seconds(bad)
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        ClientConfig(timeout=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_both_callers_refuse_a_timeout_of_nan_or_inf(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        JudgeConfig(base_url="http://127.0.0.1:9/v1", timeout=bad)
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        LLMConfig(model="m", timeout=bad)


def test_good_timeouts_pass() -> None:
    assert check_seconds(0.5) == 0.5 and check_seconds(3) == 3.0
    assert check_seconds(2, "poll_interval") == 2.0
    with pytest.raises(ValueError, match="poll_interval"):
        check_seconds(float("nan"), "poll_interval")


def test_the_timeout_is_a_deadline_for_the_whole_request() -> None:
    # A byte every 0.2 s keeps every read alive; the attempt must still end at the 1 s deadline, retried once.
    with OpenAIServer(lambda request, n: Reply.ok("x" * 50, trickle=0.2)) as server:
        client = LLMClient(ClientConfig(server.base_url, timeout=1.0, max_retries=1))
        start = time.monotonic()
        [(_, outcome)] = ask(client, 1)
        took = time.monotonic() - start
        attempts = len(server.requests)
    assert isinstance(outcome, openai.APITimeoutError)
    assert attempts == 2 and took < 6, took


def test_retries_are_the_openai_clients_own() -> None:
    def flaky(request: dict, n: int) -> Reply:
        return Reply.error(429, retry_after=0.05) if n < 2 else Reply.ok("done")

    with OpenAIServer(flaky) as server:
        [(_, outcome)] = ask(LLMClient(ClientConfig(server.base_url, timeout=5, max_retries=2)), 1)
        assert outcome == "done" and len(server.requests) == 3
    with OpenAIServer(flaky) as server:
        [(_, outcome)] = ask(LLMClient(ClientConfig(server.base_url, timeout=5, max_retries=0)), 1)
        assert isinstance(outcome, openai.RateLimitError) and len(server.requests) == 1


# ---- the key ----------------------------------------------------------------------------------------------------


def test_the_key_comes_from_the_environment() -> None:
    with OpenAIServer() as server:
        ask(LLMClient(ClientConfig(server.base_url)), 1)
        assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_a_missing_key_is_an_error_or_a_placeholder(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        LLMClient(ClientConfig("http://127.0.0.1:9/v1"))
    with caplog.at_level(logging.WARNING):
        assert api_key(required=False) == PLACEHOLDER_KEY
    assert "placeholder" in caplog.text
    with OpenAIServer() as server:
        ask(LLMClient(ClientConfig(server.base_url, key_required=False)), 1)
        assert server.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


def test_the_key_never_shows() -> None:
    client = LLMClient(ClientConfig("http://127.0.0.1:9/v1"))
    assert SECRET not in repr(client) and SECRET not in str(client)
    assert redact(f"invalid key {SECRET}!") == "invalid key [redacted]!"
    with OpenAIServer(lambda request, n: Reply.error(401, message=f"Incorrect API key provided: {SECRET}")) as server:
        [(_, err)] = ask(LLMClient(ClientConfig(server.base_url, max_retries=0)), 1)
    assert isinstance(err, openai.AuthenticationError)
    described = describe_error(err)
    assert "AuthenticationError (HTTP 401)" in described and "[redacted]" in described and SECRET not in described


# ---- concurrency ------------------------------------------------------------------------------------------------


def test_concurrency_is_bounded_and_results_come_as_they_finish() -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow(request: dict, n: int) -> Reply:
        i = int(request["messages"][0]["content"].split()[-1])
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.4 if i == 0 else 0.1)
        with lock:
            state["now"] -= 1
        return Reply.ok(str(i))

    with OpenAIServer(slow) as server:
        results = ask(LLMClient(ClientConfig(server.base_url, concurrency=3, timeout=5)), 7)
    assert state["max"] == 3
    assert sorted(i for i, _ in results) == list(range(7)) and all(text == str(i) for i, text in results)
    assert results[0][0] != 0  # the slow first request did not hold back the others


def test_an_error_in_the_work_stops_the_run_and_is_raised() -> None:
    client = LLMClient(ClientConfig("http://127.0.0.1:9/v1", concurrency=2))

    async def work(i: int) -> int:
        if i == 3:
            raise RuntimeError("bug in the caller")
        await asyncio.sleep(0.01)
        return i

    async def run() -> list[int]:
        return [i async for i, _ in client.as_completed(work, 10)]

    with pytest.raises(RuntimeError, match="bug in the caller"):
        asyncio.run(run())
    assert asyncio.run(_collect_empty(client)) == []


async def _collect_empty(client: LLMClient) -> list[tuple[int, int]]:
    async def work(i: int) -> int:
        return i

    return [item async for item in client.as_completed(work, 0)]


# ---- small pieces -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("usage", "count"), [({"prompt_tokens": 7}, 7), ({"prompt_tokens": -1}, 0), ({"prompt_tokens": True}, 0),
                                             ("n/a", 0), (None, 0), ([1, 2], 0)])  # fmt: skip
def test_token_count_never_fails(usage: object, count: int) -> None:
    assert token_count(usage, "prompt_tokens") == count


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="base_url"):
        ClientConfig("localhost:8000")
    with pytest.raises(ValueError, match="concurrency"):
        ClientConfig(concurrency=0)
    with pytest.raises(ValueError, match="max_retries"):
        ClientConfig(max_retries=-1)
    assert ClientConfig().base_url is None  # the openai client's default endpoint


def test_importing_the_client_loads_neither_openai_nor_torch() -> None:
    code = "import sys, runtime.llm_client; print(json.dumps(['openai' in sys.modules, 'torch' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False]
