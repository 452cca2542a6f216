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

The client (key, retries, per-request deadline) is the one every LLM caller shares: `runtime.llm_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from behavior_classifier.behaviors import BEHAVIORS, Counts
from behavior_classifier.classify import RunSummary, _judge_input, _output_row, _read_done, _write_ordered, read_rows
from behavior_classifier.client import JudgeConfig, RequestParams, Usage, create_completion, judge_version, request_plan, unsupported_param
from behavior_classifier.judge import MalformedReply, parse_count_tag, parse_counts
from countdown_env.errors import UsageError
from countdown_env.files import append_jsonl
from runtime.llm_client import ERROR_CHARS, LLMClient, check_seconds, redact, token_count

if TYPE_CHECKING:
    import openai

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "expired", "failed", "cancelled")
MAX_ROUNDS = 3
"""Batches submitted at most in one run: the first, and resubmissions after a refused parameter."""


def state_path(output: Path) -> Path:
    """Where the batch's ids are kept while it runs: next to the output."""
    return output.with_name(output.name + ".batch.json")


def _custom_id(index: int, part: str) -> str:
    return f"row{index}-{part}"


def request_lines(config: JudgeConfig, params: RequestParams, rows: list[dict[str, Any]], indices: Sequence[int]) -> bytes:
    """The batch input file: one chat request per line."""
    lines = []
    for index in indices:
        for part, _, messages in request_plan(config, _judge_input(rows[index])):
            body = params.body(config, messages)
            lines.append(json.dumps({"custom_id": _custom_id(index, part), "method": "POST", "url": ENDPOINT, "body": body}))
    return ("\n".join(lines) + "\n").encode()


async def probe(api: openai.AsyncOpenAI, config: JudgeConfig, params: RequestParams, messages: list[dict[str, str]]) -> None:
    """Send one request as the batch would, adapting `params` to what the server refuses (as the judge does).

    Any other error is left for the batch to report (it is the same request)."""
    import openai

    with contextlib.suppress(openai.APIError):
        await create_completion(api, config, params, messages)


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


async def _read_file(api: openai.AsyncOpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """custom_id -> result line of a batch output or error file."""
    if not file_id:
        return {}
    out = {}
    for line in (await api.files.content(file_id)).text.splitlines():
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
    text_field: str = "text",
    step: int | None = None,
) -> RunSummary:
    """Label every row of `input_path` into `output_path` through the Batch API, resuming a batch already submitted.
    `text_field` and `step` read the rows as `classify_file` does (veRL's dumps: `output`)."""
    check_seconds(poll_interval, "poll_interval")
    start = time.monotonic()
    job = BatchJob(input_path, output_path, config, retry_failed=retry_failed, poll_interval=poll_interval, progress=progress,
                   on_submitted=on_submitted, text_field=text_field, step=step)  # fmt: skip
    asyncio.run(job.run())
    if len(job.done) == len(job.rows):
        _write_ordered(output_path, job.done)
    failed_total = sum(row.get("behaviors") is None for row in job.done.values())
    return RunSummary(len(job.rows), job.already, job.labelled, job.failed, job.usage, time.monotonic() - start, failed_total)


class BatchJob:
    """One run of `classify_file_batch`: the rows, what the output holds, the state file and the request parameters.

    `run` submits (or finds) a batch of the rows not yet in the output, waits for it, records its results, and
    submits the rows the server refused a parameter for again, at most `MAX_ROUNDS` batches in all.
    """

    def __init__(
        self,
        input_path: Path,
        output_path: Path,
        config: JudgeConfig,
        *,
        retry_failed: bool,
        poll_interval: float,
        progress: bool,
        on_submitted: Callable[[str], None] | None,
        text_field: str = "text",
        step: int | None = None,
    ) -> None:
        self.config = config
        self.client = LLMClient(config.client_config)
        self.rows = read_rows(input_path, text_field=text_field, step=step)
        output_path.parent.mkdir(parents=True, exist_ok=True)
        self.output = output_path
        self.done = _read_done(output_path, self.rows, retry_failed)
        self.already = len(self.done)
        self.state_file = state_path(output_path)
        self.state = _load_state(self.state_file, config, self.done)
        saved = (self.state or {}).get("params", {})
        self.params = RequestParams(
            saved.get("token_param", "max_tokens"), saved.get("temperature", True), bool(saved.get("json_mode", config.sends_json_mode))
        )
        self.poll_interval = poll_interval
        self.progress = progress
        self.on_submitted = on_submitted
        self.label = f"openai:{judge_version(config)}"
        self.usage = Usage()
        self.labelled = self.failed = 0

    def say(self, message: str) -> None:
        if self.progress:
            print(f"classify --batch: {message}", file=sys.stderr)

    def record(self, index: int, counts: Counts | None, error: str | None, parse_failures: Sequence[str] = ()) -> None:
        row = _output_row(self.rows[index], index, self.label, counts, error, parse_failures)
        append_jsonl(self.output, [row])
        self.done[index] = row
        self.labelled += counts is not None
        self.failed += counts is None

    def pending(self) -> list[int]:
        return [i for i in range(len(self.rows)) if i not in self.done]

    async def run(self) -> None:
        async with self.client.open() as api:
            for round_ in range(MAX_ROUNDS):
                if self.state is None:
                    if not self.pending():
                        return
                    self.state = await self._upload(api, self.pending(), probe_first=round_ == 0)
                if not self.state["rows"]:  # everything it held is in the output already
                    self.state_file.unlink(missing_ok=True)
                    return
                batch = await self._finished_batch(api)
                results = {**await _read_file(api, batch.error_file_id), **await _read_file(api, batch.output_file_id)}
                resubmit = _collect(self.config, self.rows, self.state["rows"], results, batch.status, self.record, self.usage, self.params)
                if "response_format" in resubmit:
                    self.params.json_mode = False
                self.state_file.unlink(missing_ok=True)
                self.state = None
                if not resubmit:
                    return
                self.say(f"the server refused {sorted(resubmit)}; submitting the rows concerned again without it")
        for i in self.pending():
            self.record(i, None, f"requests refused in {MAX_ROUNDS} batches in a row")

    async def _upload(self, api: openai.AsyncOpenAI, pending: list[int], *, probe_first: bool) -> dict[str, Any]:
        """Upload the requests of `pending` rows (after one probe request on the first round); the new state."""
        config = self.config
        if probe_first:
            await probe(api, config, self.params, request_plan(config, _judge_input(self.rows[pending[0]]))[0][2])
        state = {"model": config.model, "protocol": config.protocol, "mode": config.mode, "rows": pending, "params": asdict(self.params)}
        lines = request_lines(config, self.params, self.rows, pending)
        state["input_file_id"] = (await api.files.create(file=("requests.jsonl", lines), purpose="batch")).id
        _save_state(self.state_file, state)  # from here a re-run never uploads again
        return state

    async def _finished_batch(self, api: openai.AsyncOpenAI) -> Any:
        """The state's batch (submitted first if need be) once it has ended; a failed or cancelled batch stops the job."""
        assert self.state is not None
        if not self.state.get("batch_id"):
            await self._submit(api, self.state)
        batch = await api.batches.retrieve(self.state["batch_id"])
        while batch.status not in TERMINAL:
            counts = getattr(batch, "request_counts", None)
            self.say(f"batch {batch.id} {batch.status}" + (f", {counts.completed}/{counts.total} requests" if counts else ""))
            await asyncio.sleep(self.poll_interval)
            batch = await api.batches.retrieve(self.state["batch_id"])
        if batch.status in ("failed", "cancelled"):
            errors = getattr(batch, "errors", None)
            self.state_file.unlink(missing_ok=True)
            raise UsageError(
                f"batch {batch.id} {batch.status}: {redact(str(errors))[:ERROR_CHARS]}; run the same command to submit a new batch"
            )
        return batch

    async def _submit(self, api: openai.AsyncOpenAI, state: dict[str, Any]) -> None:
        """Create the batch of the uploaded file, or find it: a kill between batches.create and the save leaves a
        batch the state does not name."""
        listed = (await api.batches.list(limit=100)).data
        found = [b for b in listed if getattr(b, "input_file_id", None) == state["input_file_id"]]
        batch = found[0] if found else await api.batches.create(
            input_file_id=state["input_file_id"], endpoint=ENDPOINT, completion_window="24h",
            metadata={"source": "countdown-lab classify", "output": self.output.name[:400]},
        )  # fmt: skip
        state["batch_id"] = batch.id
        _save_state(self.state_file, state)
        self.say(f"{'found' if found else 'submitted'} batch {batch.id} ({len(state['rows'])} traces); the ids are in {self.state_file}")
        if self.on_submitted is not None:
            self.on_submitted(batch.id)


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
        for part, names, _ in request_plan(config, _judge_input(rows[index])):
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
                    what = f"HTTP {code}: {message}" if item else f"no result (batch {status})"
                    error = error or redact(f"batch request {part}: {what}")[:ERROR_CHARS]
                continue
            usage.requests += 1
            usage.prompt_tokens += token_count(body.get("usage"), "prompt_tokens")
            usage.completion_tokens += token_count(body.get("usage"), "completion_tokens")
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
                error = error or redact(f"MalformedReply (batch, not asked again): {problem}")[:ERROR_CHARS]
        if retry:
            continue
        if error is not None:
            record(index, None, error)
        else:
            record(index, {name: counts[name] for name in BEHAVIORS}, None, failures)
    return refused
