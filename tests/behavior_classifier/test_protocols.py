"""The study's judge protocol and reasoning-model parameters, against the real local HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from behavior_classifier.behaviors import BEHAVIORS, DEFINITIONS, STUDY_DEFINITIONS
from behavior_classifier.classify import classify_file
from behavior_classifier.client import JudgeConfig, LLMJudge, unsupported_param
from behavior_classifier.judge import STUDY_SYSTEM_PROMPT, build_study_messages, parse_count_tag
from behavior_classifier.local_server import OpenAIServer, Reply, reasoning_refusal
from tests.behavior_classifier.scripted import expected, trace_id


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-protocols")


def behaviour_asked(request: dict) -> str:
    user = request["messages"][-1]["content"]
    [name] = [b for b in BEHAVIORS if f"Does the reasoning show {b.replace('_', ' ')}, that is" in user]
    return name


def study_handler(request: dict, n: int) -> Reply:
    i = trace_id(request)
    name = behaviour_asked(request)
    return Reply.ok(f"Looking at the steps... I count them.\n<count>{expected(i)[name]}</count>")


def config(server: OpenAIServer, tmp_path: Path, **overrides) -> JudgeConfig:
    base = {"base_url": server.base_url, "model": "judge-test", "timeout": 2.0, "max_retries": 1, "cache_path": tmp_path / "cache.sqlite"}
    return JudgeConfig(**{**base, **overrides})


def test_parse_count_tag_reads_the_first_tag_like_the_study() -> None:
    assert parse_count_tag("reasoning <count>3</count> and later <count>5</count>") == 3
    assert parse_count_tag("<count>0</count>") == 0
    # The study's pattern is strict: no tag, spaces inside or a non-number is no count (counted as 0 by the caller).
    for reply in (None, "", "I count 3 instances.", "<count> 3 </count>", "<count>three</count>", "<count>99999999</count>"):
        assert parse_count_tag(reply) is None


def test_study_prompt_holds_the_trace_task_and_one_definition() -> None:
    trace = 'Try 25 + 3 = 28, not 32. {"weird": braces}'
    for name in BEHAVIORS:
        system, user = build_study_messages(name, trace, [25, 3, 4], 32)
        assert system["content"] == STUDY_SYSTEM_PROMPT and trace in user["content"]
        assert "[25, 3, 4]" in user["content"] and "32" in user["content"] and "<count>" in user["content"]
        assert STUDY_DEFINITIONS[name] in user["content"]
        assert all(STUDY_DEFINITIONS[other] not in user["content"] for other in BEHAVIORS if other != name)
    # Defined once, both protocols over the same four names; the study's scope differs from ours.
    assert set(STUDY_DEFINITIONS) == set(DEFINITIONS) == set(BEHAVIORS)
    assert "target" in STUDY_DEFINITIONS["verification"] and "too high" in STUDY_DEFINITIONS["verification"]


def test_study_protocol_sends_one_request_per_behaviour_without_temperature(tmp_path: Path) -> None:
    with OpenAIServer(study_handler) as server:
        judge = LLMJudge(config(server, tmp_path, protocol="study"))
        results = judge.batch(["TRACE-5", "TRACE-8"])
        requests = server.requests
    assert [r.counts for r in results] == [expected(5), expected(8)]
    assert all(r.parse_failures == () for r in results)
    assert len(requests) == 8
    assert sorted(behaviour_asked(r.json) for r in requests) == sorted(BEHAVIORS * 2)
    for r in requests:
        assert "temperature" not in r.json and "response_format" not in r.json and r.json["max_tokens"] == 512
    assert judge.version.endswith("/study")


def test_a_reply_without_count_tag_counts_zero_as_in_the_study_and_is_recorded(tmp_path: Path) -> None:
    def handler(request: dict, n: int) -> Reply:
        name = behaviour_asked(request)
        if name == "backtracking":
            return Reply.ok("There are two instances of backtracking.")  # no tag
        if name == "subgoal_setting":
            return Reply(status=200, body="<html>proxy</html>", content_type="text/html")
        return Reply.ok("<count>2</count>")

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"text": "TRACE-1 25 + 3 = 28", "numbers": [25, 3], "target": 28}) + "\n")
    with OpenAIServer(handler) as server:
        judge = LLMJudge(config(server, tmp_path, protocol="study", malformed_retries=3))
        summary = classify_file(inp, out, judge, progress=False)
        assert len(server.requests) == 4  # no re-asks: the study did not ask again
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.failed == 0
    assert row["behaviors"] == {"verification": 2, "backtracking": 0, "subgoal_setting": 0, "backward_chaining": 2}
    assert row["judge_parse_failures"] == ["backtracking", "subgoal_setting"]
    assert row["judge"].endswith("/study")
    # The cache keeps the parse failures: a re-run costs nothing and says the same.
    with OpenAIServer(handler) as server:
        [again] = LLMJudge(config(server, tmp_path, protocol="study")).batch(["TRACE-1 25 + 3 = 28"])
        # numbers/target differ from the classify row above, so this one is asked; then cached
        [cached] = LLMJudge(config(server, tmp_path, protocol="study")).batch(["TRACE-1 25 + 3 = 28"])
        assert len(server.requests) == 4
    assert cached.cached and cached.parse_failures == again.parse_failures == ("backtracking", "subgoal_setting")


def test_an_http_failure_fails_the_trace_in_the_study_protocol_too(tmp_path: Path) -> None:
    def handler(request: dict, n: int) -> Reply:
        return Reply.error(500) if behaviour_asked(request) == "backward_chaining" else Reply.ok("<count>1</count>")

    with OpenAIServer(handler) as server:
        [result] = LLMJudge(config(server, tmp_path, protocol="study", max_retries=0)).batch(["TRACE-0"])
    assert result.counts is None and "HTTP 500" in (result.error or "")


def test_protocols_have_separate_cache_entries(tmp_path: Path) -> None:
    with OpenAIServer(lambda request, n: Reply.ok(json.dumps(expected(4)))) as server:
        LLMJudge(config(server, tmp_path)).batch(["TRACE-4"])
    with OpenAIServer(study_handler) as server:
        [result] = LLMJudge(config(server, tmp_path, protocol="study")).batch(["TRACE-4"])
        assert len(server.requests) == 4 and not result.cached


def test_unsupported_param_reads_openai_errors() -> None:
    max_tokens = reasoning_refusal({"max_tokens": 5}).body["error"]
    temperature = reasoning_refusal({"temperature": 0}).body["error"]
    assert unsupported_param(400, max_tokens) == "max_tokens"
    assert unsupported_param(400, temperature) == "temperature"
    assert unsupported_param(400, {"message": "Unsupported parameter: 'max_tokens' is not supported"}) == "max_tokens"
    assert unsupported_param(400, {"message": "response_format is not supported"}) is None
    assert unsupported_param(500, max_tokens) is None
    assert reasoning_refusal({"temperature": 1, "max_completion_tokens": 5}) is None


@pytest.mark.parametrize("protocol", ["json", "study"])
def test_reasoning_model_gets_max_completion_tokens_and_no_temperature(tmp_path: Path, protocol: str) -> None:
    def handler(request: dict, n: int) -> Reply:
        if protocol == "study":
            return study_handler(request, n)
        return Reply.ok(json.dumps(expected(trace_id(request))))

    with OpenAIServer(handler, reasoning=True) as server:
        judge = LLMJudge(config(server, tmp_path, protocol=protocol, concurrency=1, cache_path=None))
        results = judge.batch([f"TRACE-{i}" for i in range(3)])
        requests = server.requests
    assert [r.counts for r in results] == [expected(i) for i in range(3)]
    refused = [r for r in requests if r.reply.status == 400]
    # max_tokens refused once (and temperature once for the json protocol, which sends 0); then remembered.
    assert [r.reply.body["error"]["param"] for r in refused] == (["max_tokens", "temperature"] if protocol == "json" else ["max_tokens"])
    answered = [r.json for r in requests if r.reply.status == 200]
    assert len(answered) == (3 if protocol == "json" else 12)
    assert all("max_tokens" not in body and "temperature" not in body and body["max_completion_tokens"] > 0 for body in answered)
    assert judge.params.token_param == "max_completion_tokens"
    assert judge.params.temperature is (protocol == "study")  # the study protocol never sends one, so it is never refused
    assert all("response_format" in body for body in answered) is (protocol == "json")  # JSON mode is kept: the refusal named another field


def test_a_regular_model_keeps_max_tokens_and_temperature(tmp_path: Path) -> None:
    with OpenAIServer(lambda request, n: Reply.ok(json.dumps(expected(0)))) as server:
        LLMJudge(config(server, tmp_path)).batch(["TRACE-0"])
        [request] = server.requests
    assert request.json["max_tokens"] == 256 and request.json["temperature"] == 0 and "max_completion_tokens" not in request.json


def test_config_rejects_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="protocol"):
        JudgeConfig(protocol="yaml")
