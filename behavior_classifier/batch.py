"""`countdown-lab classify --batch`: the LLM judge through OpenAI's Batch API (half the price; what the study used).

The rows not yet in the output are written as one JSONL of chat requests (``custom_id`` ``row<i>-<part>``: one
part per trace under the json protocol's ``all`` layout, one per behaviour otherwise), uploaded with
``files.create(purpose="batch")`` and submitted with ``batches.create``; the batch is polled with
``batches.retrieve`` until it ends and its output (and error) file is read with ``files.content``. The output
rows are the same as without ``--batch`` (`classify.classify_file`), and the output is rewritten in input order.

Resuming after a kill: the input file id and then the batch id are written to a state file next to the output
(``OUTPUT.batch.json``) as soon as each exists. A re-run with the state file polls that batch instead of
submitting another; when the state holds a file but no batch (a kill between the two calls), the batches
listed by the server are searched for one made from that file before a new one is created. The state file is
removed once the batch's results are in the output.

Differences from the request-by-request path, by nature of a batch:
- a reply without valid counts is not asked again (the json protocol records the trace as failed; the study
  protocol counts 0, as the study did, and lists it in ``judge_parse_failures``);
- before a batch is submitted, its first request is sent once as an ordinary request, so that a server that
  refuses ``max_tokens``/``temperature`` (reasoning models, one parameter per error) or ``response_format``
  says so in seconds, not after a day-long batch (the client adapts as `client.LLMJudge` does); should a batch
  still come back with such refusals, its rows go into another batch with the parameter renamed or dropped;
- an ``expired`` batch records the requests it did not answer as failures (``--retry-failed`` submits them
  again); a ``failed`` or ``cancelled`` batch stops the job with the server's reason;
- no result cache (a batch is submitted once and its results live in the output).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from behavior_classifier.behaviors import BEHAVIORS, Counts
from behavior_classifier.classify import RunSummary, _judge_input, _output_row, _read_done, _write_ordered, read_rows
from behavior_classifier.client import (
    ADAPTABLE_PARAMS,
    JudgeConfig,
    JudgeInput,
    RequestParams,
    Usage,
    _tokens,
    api_key,
    judge_version,
    redact,
    unsupported_param,
)
from behavior_classifier.judge import (
    MalformedReply,
    build_behavior_messages,
    build_messages,
    build_study_messages,
    parse_count_tag,
    parse_counts,
)
from countdown_env.errors import UsageError
from countdown_env.files import append_jsonl

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "expired", "failed", "cancelled")
MAX_ROUNDS = 3
"""Batches submitted at most in one run: the first, and resubmissions after a refused parameter."""


def state_path(output: Path) -> Path:
    """Where the batch's ids are kept while it runs: next to the output."""
    return output.with_name(output.name + ".batch.json")


def _parts(config: JudgeConfig, item: JudgeInput) -> list[tuple[str, Sequence[str], list[dict[str, str]]]]:
    """(part name, behaviours it counts, messages) of one trace's requests."""
    if config.protocol == "study":
        return [(name, (name,), build_study_messages(name, item.text, item.numbers, item.target)) for name in BEHAVIORS]
    if config.mode == "all":
        return [("all", BEHAVIORS, build_messages(item.text, item.numbers, item.target))]
    return [(name, (name,), build_behavior_messages(name, item.text, item.numbers, item.target)) for name in BEHAVIORS]


def _custom_id(index: int, part: str) -> str:
    return f"row{index}-{part}"


def request_lines(config: JudgeConfig, params: RequestParams, rows: list[dict[str, Any]], indices: Sequence[int], json_mode: bool) -> bytes:
    """The batch input file: one chat request per line."""
    lines = []
    for index in indices:
        for part, _, messages in _parts(config, _judge_input(rows[index])):
            body = params.body(config, messages, json_mode=json_mode)
            lines.append(json.dumps({"custom_id": _custom_id(index, part), "method": "POST", "url": ENDPOINT, "body": body}))
    return ("\n".join(lines) + "\n").encode()


def probe(client: Any, config: JudgeConfig, params: RequestParams, messages: list[dict[str, str]], json_mode: bool) -> bool:
    """Send one request as the batch would, adapting `params` to what the server refuses; returns the JSON mode to use.

    Any other error is left for the batch to report (it is the same request)."""
    import openai

    for _ in range(len(ADAPTABLE_PARAMS) + 1):
        body = params.body(config, messages, json_mode=json_mode)
        try:
            client.chat.completions.create(**body)
            return json_mode
        except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
            if params.adapt(unsupported_param(err.status_code, err.body if isinstance(err.body, dict) else err.message)):
                continue
            if "response_format" not in body:
                return json_mode
            json_mode = False
        except openai.APIError:
            return json_mode
    return json_mode


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)  # a kill never leaves half a state file


def _load_state(path: Path, config: JudgeConfig, done: dict[int, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except ValueError:
        raise UsageError(f"{path} is not a batch state file; delete it to submit a new batch") from None
    same = {"model": config.model, "protocol": config.protocol, "mode": config.mode}
    if {k: state.get(k) for k in same} != same:
        raise UsageError(
            f"{path} belongs to a batch of another judge ({ {k: state.get(k) for k in same} }); use the same --model/--protocol/--mode "
            "to collect it, or delete the state file to submit a new batch"
        )
    state["rows"] = [i for i in state["rows"] if i not in done]
    return state


def _read_file(client: Any, file_id: str | None) -> dict[str, dict[str, Any]]:
    """custom_id -> result line of a batch output or error file."""
    if not file_id:
        return {}
    out = {}
    for line in client.files.content(file_id).text.splitlines():
        if line.strip():
            item = json.loads(line)
            out[str(item.get("custom_id"))] = item
    return out


def _content(body: dict[str, Any]) -> str | None:
    try:
        return body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None


def _error_of(item: dict[str, Any] | None) -> tuple[int | None, Any]:
    """(status, error object) of a failed result line."""
    if item is None:
        return None, None
    response = item.get("response") or {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    return response.get("status_code"), body.get("error", item.get("error"))


def classify_file_batch(
    input_path: Path,
    output_path: Path,
    config: JudgeConfig,
    *,
    retry_failed: bool = False,
    poll_interval: float = 60.0,
    progress: bool = True,
    on_submitted: Callable[[str], None] | None = None,
) -> RunSummary:
    """Label every row of `input_path` into `output_path` through the Batch API, resuming a batch already submitted."""
    import openai

    start = time.monotonic()
    rows = read_rows(input_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    done = _read_done(output_path, rows, retry_failed)
    already = len(done)
    state_file = state_path(output_path)
    state = _load_state(state_file, config, done)
    label = f"openai:{judge_version(config)}"
    usage = Usage()
    labelled = failed = 0
    client = openai.OpenAI(base_url=config.base_url, api_key=api_key(), max_retries=config.max_retries, timeout=config.timeout)
    saved = (state or {}).get("params", {})
    params = RequestParams(saved.get("token_param", "max_tokens"), saved.get("temperature", True))
    json_mode = bool(saved.get("json_mode", config.json_mode and config.protocol == "json"))

    def say(message: str) -> None:
        if progress:
            print(f"classify --batch: {message}", file=sys.stderr)

    def record(index: int, counts: Counts | None, error: str | None, parse_failures: Sequence[str] = ()) -> None:
        nonlocal labelled, failed
        row = _output_row(rows[index], index, label, counts, error, parse_failures)
        append_jsonl(output_path, [row])
        done[index] = row
        labelled += counts is not None
        failed += counts is None

    try:
        for _round in range(MAX_ROUNDS):
            if state is None:
                pending = [i for i in range(len(rows)) if i not in done]
                if not pending:
                    break
                if _round == 0:
                    json_mode = probe(client, config, params, _parts(config, _judge_input(rows[pending[0]]))[0][2], json_mode)
                state = {"model": config.model, "protocol": config.protocol, "mode": config.mode, "rows": pending,
                         "params": {"token_param": params.token_param, "temperature": params.temperature, "json_mode": json_mode}}  # fmt: skip
                uploaded = client.files.create(
                    file=("requests.jsonl", request_lines(config, params, rows, pending, json_mode)), purpose="batch"
                )
                state["input_file_id"] = uploaded.id
                _save_state(state_file, state)  # from here a re-run never uploads again
            if not state["rows"]:  # everything it held is in the output already
                state_file.unlink(missing_ok=True)
                break
            if not state.get("batch_id"):
                # A kill between batches.create and the save leaves a batch the state does not name: find it.
                found = [b for b in client.batches.list(limit=100).data if getattr(b, "input_file_id", None) == state["input_file_id"]]
                batch = found[0] if found else client.batches.create(
                    input_file_id=state["input_file_id"], endpoint=ENDPOINT, completion_window="24h",
                    metadata={"source": "countdown-lab classify", "output": output_path.name[:400]},
                )  # fmt: skip
                state["batch_id"] = batch.id
                _save_state(state_file, state)
                say(f"{'found' if found else 'submitted'} batch {batch.id} ({len(state['rows'])} traces); the ids are in {state_file}")
                if on_submitted is not None:
                    on_submitted(batch.id)
            batch = client.batches.retrieve(state["batch_id"])
            while batch.status not in TERMINAL:
                counts = getattr(batch, "request_counts", None)
                say(f"batch {batch.id} {batch.status}" + (f", {counts.completed}/{counts.total} requests" if counts else ""))
                time.sleep(poll_interval)
                batch = client.batches.retrieve(state["batch_id"])
            if batch.status in ("failed", "cancelled"):
                errors = getattr(batch, "errors", None)
                state_file.unlink(missing_ok=True)
                raise UsageError(
                    f"batch {batch.id} {batch.status}: {redact(str(errors))[:500]}; run the same command to submit a new batch"
                )
            results = {**_read_file(client, batch.error_file_id), **_read_file(client, batch.output_file_id)}
            resubmit = _collect(config, rows, state["rows"], results, batch.status, record, usage, params)
            if resubmit and "response_format" in resubmit:
                json_mode = False
            state_file.unlink(missing_ok=True)
            state = None
            if not resubmit:
                break
            say(f"the server refused {sorted(resubmit)}; submitting the rows concerned again without it")
        else:
            for i in (i for i in range(len(rows)) if i not in done):
                record(i, None, f"requests refused in {MAX_ROUNDS} batches in a row")
    finally:
        client.close()
    if len(done) == len(rows):
        _write_ordered(output_path, done)
    failed_total = sum(row.get("behaviors") is None for row in done.values())
    return RunSummary(len(rows), already, labelled, failed, usage, time.monotonic() - start, failed_total)


def _collect(
    config: JudgeConfig,
    rows: list[dict[str, Any]],
    indices: Sequence[int],
    results: dict[str, dict[str, Any]],
    status: str,
    record: Callable[..., None],
    usage: Usage,
    params: RequestParams,
) -> set[str]:
    """Record the rows of a finished batch; returns the parameters refused (their rows are left for another batch)."""
    refused: set[str] = set()
    for index in indices:
        counts: Counts = {}
        failures: list[str] = []
        error: str | None = None
        retry = False
        for part, names, _ in _parts(config, _judge_input(rows[index])):
            item = results.get(_custom_id(index, part))
            code, err = _error_of(item)
            body = ((item or {}).get("response") or {}).get("body")
            if item is None or code != 200 or not isinstance(body, dict):
                param = unsupported_param(code, err)
                message = err.get("message") if isinstance(err, dict) else err
                if param is not None and params.adapt(param) or param in refused:
                    refused.add(param)
                    retry = True
                elif code == 400 and "response_format" in str(message) and config.protocol == "json":
                    refused.add("response_format")
                    retry = True
                else:
                    error = (
                        error
                        or redact(f"batch request {part}: " + (f"HTTP {code}: {message}" if item else f"no result (batch {status})"))[:500]
                    )
                continue
            usage.requests += 1
            usage.prompt_tokens += _tokens(body.get("usage"), "prompt_tokens")
            usage.completion_tokens += _tokens(body.get("usage"), "completion_tokens")
            reply = _content(body)
            if config.protocol == "study":
                value = parse_count_tag(reply)
                if value is None:
                    failures.append(part)
                counts[part] = value or 0
                continue
            try:
                counts.update(parse_counts(reply, names))
            except MalformedReply as problem:
                error = error or redact(f"MalformedReply (batch, not asked again): {problem}")[:500]
        if retry:
            continue
        if error is not None:
            record(index, None, error)
        else:
            record(index, {name: counts[name] for name in BEHAVIORS}, None, failures)
    return refused
