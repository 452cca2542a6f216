"""The LLM judge over any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama...): protocol, adaptation, cache.

- The HTTP client is the one every LLM caller shares (`runtime.llm_client`): the `openai` client's own retries
  (408/409/429/5xx, timeouts, connection errors; exponential backoff honouring ``Retry-After``), a deadline
  for each whole HTTP request (``timeout``: connect, headers and the full body), at most ``concurrency``
  requests in flight, and the key read from ``OPENAI_API_KEY`` only, never logged, printed or written (error
  texts are redacted in case a server echoes it; without a key a placeholder is sent, for local servers).
- A reply that holds no valid counts is re-requested `JudgeConfig.malformed_retries` times, then the trace is
  recorded as an explicit failure (`JudgeResult.counts is None`, `error` set): never as zeros.
- ``response_format={"type": "json_object"}`` is sent while the server accepts it; on a 400/422 the request is
  repeated without it and JSON mode stays off for the rest of the run (the parser tolerates prose and fences).
- Reasoning models (OpenAI's o-series and later) reject ``max_tokens`` and any ``temperature`` but the default
  with a 400 naming the parameter. That error, not the model's name, switches the judge to
  ``max_completion_tokens`` and no ``temperature`` (`unsupported_param`); the request is repeated and the
  choice is kept for the rest of the judge's life, so later requests are not rejected first.
- Two protocols, ``json`` and ``study`` (see `behavior_classifier.judge`).
- Results are cached on disk (sqlite, stdlib) under a key of model, prompt version, mode and the prompt inputs,
  so a re-run costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from behavior_classifier.behaviors import BEHAVIORS, Counts
from behavior_classifier.judge import (
    MODES,
    PROMPT_VERSION,
    PROTOCOLS,
    STUDY_MAX_TOKENS,
    STUDY_PROMPT_VERSION,
    MalformedReply,
    build_behavior_messages,
    build_messages,
    build_study_messages,
    parse_count_tag,
    parse_counts,
)
from countdown_env.errors import UsageError
from runtime.llm_client import ERROR_CHARS, ClientConfig, LLMClient, describe_error, redact, token_count

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class JudgeConfig:
    """How the LLM judge talks to its endpoint."""

    base_url: str = "https://api.openai.com/v1"
    """OpenAI-compatible base URL, e.g. http://localhost:8000/v1 for vLLM or http://localhost:11434/v1 for Ollama."""
    model: str = "gpt-4o-mini"
    """Model name sent with each request (the study judged with gpt-4o-mini)."""
    mode: str = "all"
    """json protocol: 'all', one request per trace for the four counts; 'per_behavior', one request per behaviour."""
    protocol: str = "json"
    """'json' (our definitions, JSON replies, one request per trace) or 'study' (the study's: one request per
    behaviour, count tags, a missing tag counted as 0); see `behavior_classifier.judge`."""
    concurrency: int = 16
    """Requests in flight at most."""
    timeout: float = 60.0
    """Seconds one HTTP request may take in all (connect, headers and whole body) before it is abandoned and retried;
    a finite number > 0."""
    max_retries: int = 6
    """Retries of one request on 429/5xx/timeouts/connection errors (the openai client's own backoff, honouring Retry-After)."""
    malformed_retries: int = 2
    """Extra requests when a reply holds no valid counts, before the trace is recorded as failed."""
    json_mode: bool = True
    """Send response_format={"type": "json_object"} while the server accepts it."""
    max_tokens: int = 256
    """Reply length cap; a JSON object of four counts needs far fewer."""
    cache_path: Path | None = None
    """sqlite file caching results across runs; None disables the cache."""

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("base_url must be an http:// or https:// URL, e.g. --base-url http://localhost:8000/v1")
        self.client_config  # noqa: B018 -- validates base_url, timeout, max_retries and concurrency
        if not self.model:
            raise ValueError("model must be a non-empty model name, e.g. --model gpt-4o-mini")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.malformed_retries < 0:
            raise ValueError(f"malformed_retries must be >= 0, got {self.malformed_retries}")
        if self.max_tokens < 16:
            raise ValueError(f"max_tokens must be >= 16 to fit a JSON object of counts, got {self.max_tokens}")

    @property
    def client_config(self) -> ClientConfig:
        """The endpoint as the shared client takes it; no key needed (local servers), a placeholder is sent then."""
        return ClientConfig(self.base_url, self.timeout, self.max_retries, self.concurrency, key_required=False)

    @property
    def sends_json_mode(self) -> bool:
        """Whether requests start with response_format=json_object (the json protocol only)."""
        return self.json_mode and self.protocol == "json"


@dataclass(frozen=True)
class JudgeInput:
    """One trace to judge; numbers and target, when known, go into the prompt."""

    text: str
    numbers: tuple[int, ...] | None = None
    target: int | None = None


@dataclass(frozen=True)
class JudgeResult:
    """The outcome for one trace: counts, or an explicit error."""

    counts: Counts | None
    error: str | None = None
    cached: bool = False
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    parse_failures: tuple[str, ...] = ()
    """Study protocol: behaviours whose reply held no count tag, counted as 0 as the study did."""


@dataclass
class Usage:
    """Totals over a run (mutable accumulator)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    failures: int = 0

    def add(self, result: JudgeResult) -> None:
        self.requests += result.requests
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.cache_hits += int(result.cached)
        self.failures += int(result.counts is None)


class ResultCache:
    """Successful judge results on disk (sqlite): key -> counts. Failures are not cached, so a re-run retries them."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # One connection used from the event loop's thread (and possibly a caller's thread): serialised by a lock.
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, counts TEXT NOT NULL)")
        except sqlite3.DatabaseError as err:  # a directory, a file that is not SQLite, a folder without write access
            raise UsageError(f"cache {path} cannot be used as a SQLite cache ({err}); name another cache file") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> Counts | None:
        with self._lock:
            row = self._db.execute("SELECT counts FROM results WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, counts: Counts) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO results (key, counts) VALUES (?, ?)", (key, json.dumps(counts)))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def cache_key(config: JudgeConfig, item: JudgeInput) -> str:
    # The json protocol's key is unchanged from before protocols existed, so its caches stay valid.
    layout = [PROMPT_VERSION, config.mode] if config.protocol == "json" else [STUDY_PROMPT_VERSION, "study"]
    payload = [config.model, *layout, item.text, list(item.numbers) if item.numbers else None, item.target]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def judge_version(config: JudgeConfig) -> str:
    """What labelled a row (the output's ``judge`` field, after ``openai:``)."""
    if config.protocol == "study":
        return f"{config.model}@{STUDY_PROMPT_VERSION}/study"
    return f"{config.model}@{PROMPT_VERSION}/{config.mode}"


#: Parameters a server may refuse that the judge can do without or rename (reasoning models refuse both).
ADAPTABLE_PARAMS = ("max_tokens", "temperature")


def unsupported_param(status: int | None, error: Any) -> str | None:
    """`max_tokens` or `temperature` when a response of `status` with error body `error` (the ``error`` object of
    an OpenAI error, or its message) rejects that parameter, else None.

    OpenAI answers 400 with ``param`` set ("Unsupported parameter: 'max_tokens' is not supported with this model.
    Use 'max_completion_tokens' instead."); servers that leave ``param`` out still name it in the message.
    """
    if status != 400:
        return None
    if isinstance(error, dict):
        if error.get("param") in ADAPTABLE_PARAMS:
            return str(error["param"])
        error = error.get("message")
    message = str(error or "")
    return next((name for name in ADAPTABLE_PARAMS if f"'{name}'" in message or f'"{name}"' in message), None)


@dataclass
class RequestParams:
    """Which parameters requests carry; changed once when a server refuses one (see `unsupported_param`)."""

    token_param: str = "max_tokens"
    temperature: bool = True
    json_mode: bool = True
    """Send response_format=json_object (never under the study protocol)."""

    def adapt(self, param: str | None) -> bool:
        """Drop or rename `param`; True if that changed anything (so the request is worth repeating)."""
        if param == "max_tokens" and self.token_param == "max_tokens":
            self.token_param = "max_completion_tokens"
        elif param == "temperature" and self.temperature:
            self.temperature = False
        else:
            return False
        log.warning(
            "the server refused %s; sending %s from now on", param, "max_completion_tokens" if param == "max_tokens" else "no temperature"
        )
        return True

    def drop_json_mode(self) -> None:
        """Stop sending response_format (the server rejected it with a 400/422)."""
        if self.json_mode:
            log.warning("the server rejected response_format=json_object; continuing without JSON mode")
        self.json_mode = False

    def body(self, config: JudgeConfig, messages: Messages) -> dict[str, Any]:
        """The chat-completions request body."""
        study = config.protocol == "study"
        kwargs: dict[str, Any] = {"model": config.model, "messages": messages}
        kwargs[self.token_param] = STUDY_MAX_TOKENS if study else config.max_tokens
        if self.temperature and not study:  # the study sent no temperature (the server's default)
            kwargs["temperature"] = 0
        if self.json_mode and not study:
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs


async def create_completion(api: openai.AsyncOpenAI, config: JudgeConfig, params: RequestParams, messages: Messages) -> Any:
    """One chat completion, repeated without (or with a renamed) parameter the server refuses, adapting `params`.

    At most one repeat per thing the server may refuse (max_tokens, temperature, response_format), then its
    answer stands: any other error is raised.
    """
    import openai

    for _ in range(len(ADAPTABLE_PARAMS) + 1):
        kwargs = params.body(config, messages)
        try:
            return await api.chat.completions.create(**kwargs)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
            if params.adapt(unsupported_param(err.status_code, err.body if isinstance(err.body, dict) else err.message)):
                continue
            if "response_format" not in kwargs:
                raise
            # Servers without JSON mode reject the field with 400/422; the parser copes with plain text.
            params.drop_json_mode()
    return await api.chat.completions.create(**params.body(config, messages))


def request_plan(config: JudgeConfig, item: JudgeInput) -> list[tuple[str, Sequence[str], Messages]]:
    """(part name, behaviours it counts, messages) of each request one trace needs under `config`'s protocol."""
    if config.protocol == "study":
        return [(name, (name,), build_study_messages(name, item.text, item.numbers, item.target)) for name in BEHAVIORS]
    if config.mode == "all":
        return [("all", BEHAVIORS, build_messages(item.text, item.numbers, item.target))]
    return [(name, (name,), build_behavior_messages(name, item.text, item.numbers, item.target)) for name in BEHAVIORS]


class LLMJudge:
    """LLM judge: ``judge(text) -> counts`` (raises on failure), ``judge.batch(texts)``, and ``judge.stream(items)``.

    ``stream`` is the async core used by the file job: it yields ``(index, JudgeResult)`` as results arrive.
    """

    name = "openai"

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.version = judge_version(config)
        self.client = LLMClient(config.client_config)
        self.params = RequestParams(json_mode=config.sends_json_mode)
        """Parameters sent with each request, adapted when the server refuses one (kept for the judge's life)."""
        self.cache = ResultCache(config.cache_path) if config.cache_path else None
        self.usage = Usage()

    # -- public forms -------------------------------------------------------------------------------------------
    def __call__(self, text: str) -> Counts:
        result = self.batch([text])[0]
        if result.counts is None:
            raise RuntimeError(f"judge failed: {result.error}")
        return result.counts

    def batch(self, texts: Iterable[str | JudgeInput]) -> list[JudgeResult]:
        items = [t if isinstance(t, JudgeInput) else JudgeInput(t) for t in texts]

        async def collect() -> list[JudgeResult]:
            out: list[JudgeResult | None] = [None] * len(items)
            async for i, result in self.stream(items):
                out[i] = result
            return [r for r in out if r is not None]

        return asyncio.run(collect())

    async def stream(self, items: Sequence[JudgeInput]) -> AsyncIterator[tuple[int, JudgeResult]]:
        """Judge `items` with at most `concurrency` requests in flight; yield results in completion order."""
        async with self.client.open() as api:

            async def judge(i: int) -> JudgeResult:
                try:
                    result = await self._judge_one(api, items[i])
                except Exception as err:  # anything unexpected (e.g. an unparsable HTTP body) fails this trace, not the run
                    result = JudgeResult(None, error=describe_error(err))
                self.usage.add(result)
                return result

            async for i, result in self.client.as_completed(judge, len(items)):
                yield i, result

    # -- one trace ------------------------------------------------------------------------------------------------
    async def _judge_one(self, api: openai.AsyncOpenAI, item: JudgeInput) -> JudgeResult:
        key = cache_key(self.config, item)
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                failures = tuple(cached.pop(PARSE_FAILURES_KEY, ()))  # type: ignore[arg-type]
                return JudgeResult(cached, cached=True, parse_failures=failures)
        if self.config.protocol == "study":
            return await self._judge_study(api, item, key)
        counts: Counts = {}
        totals = [0, 0, 0]  # requests, prompt tokens, completion tokens
        for _part, names, messages in request_plan(self.config, item):
            part, error = await self._ask(api, messages, names, totals)
            if part is None:
                return _failed(error, totals)
            counts.update(part)
        counts = {name: counts[name] for name in BEHAVIORS}
        if self.cache is not None:
            self.cache.put(key, counts)
        return JudgeResult(counts, requests=totals[0], prompt_tokens=totals[1], completion_tokens=totals[2])

    async def _judge_study(self, api: openai.AsyncOpenAI, item: JudgeInput, key: str) -> JudgeResult:
        """The study's protocol: one request per behaviour, the count from a tag, a missing tag counted as 0."""
        import openai

        counts: Counts = {}
        failures: list[str] = []
        totals = [0, 0, 0]
        for name, _names, messages in request_plan(self.config, item):
            try:
                response = await create_completion(api, self.config, self.params, messages)
            except (openai.APIError, asyncio.TimeoutError) as err:
                return _failed(describe_error(err), totals)
            except ValueError:  # a 200 whose body is not a chat completion: no count tag to read
                response = None
            totals[0] += 1
            reply, _problem = _reply_text(response, totals)
            value = parse_count_tag(reply)
            if value is None:
                failures.append(name)
            counts[name] = value or 0
        result = JudgeResult(
            counts, requests=totals[0], prompt_tokens=totals[1], completion_tokens=totals[2], parse_failures=tuple(failures)
        )
        if self.cache is not None:
            self.cache.put(key, {**counts, **({PARSE_FAILURES_KEY: failures} if failures else {})})  # type: ignore[dict-item]
        return result

    async def _ask(
        self, api: openai.AsyncOpenAI, messages: Messages, names: Sequence[str], totals: list[int]
    ) -> tuple[Counts | None, str | None]:
        """One prompt, re-asked while the reply is malformed. Returns (counts, None) or (None, error)."""
        import openai

        last_problem = ""
        for _attempt in range(1 + self.config.malformed_retries):
            try:
                response = await create_completion(api, self.config, self.params, messages)
            except (openai.APIError, asyncio.TimeoutError) as err:
                # The client already retried transient errors; what reaches here is final for this trace.
                return None, describe_error(err)
            except ValueError as err:
                # A 200 whose body is not a chat completion (the client fails to decode it): a malformed reply.
                totals[0] += 1
                last_problem = f"unreadable response body ({type(err).__name__})"
                continue
            totals[0] += 1
            reply, problem = _reply_text(response, totals)
            if problem:
                last_problem = problem
                continue
            try:
                return parse_counts(reply, names), None
            except MalformedReply as err:
                last_problem = str(err)
        return None, redact(f"MalformedReply after {1 + self.config.malformed_retries} attempts: {last_problem}")[:ERROR_CHARS]


def _failed(error: str | None, totals: list[int]) -> JudgeResult:
    """A failed trace, with the requests and tokens it cost (`totals`: requests, prompt tokens, completion tokens)."""
    return JudgeResult(None, error=error, requests=totals[0], prompt_tokens=totals[1], completion_tokens=totals[2])


PARSE_FAILURES_KEY = "_parse_failures"
"""Key under which the cache stores the study protocol's parse failures beside the counts."""


def _reply_text(response: Any, totals: list[int]) -> tuple[str | None, str | None]:
    """(assistant text, None) of a chat completion, adding its token usage to `totals`; (None, problem) when the
    body is not a chat completion (None: the client could not decode it; a string: a proxy's HTML page)."""
    if response is None:
        return None, "unreadable response body"
    if not hasattr(response, "choices"):
        # A 200 whose body is not JSON (a proxy's HTML page): the client hands back the text itself.
        text = " ".join(str(response).split())
        return None, f"non-JSON reply: {text[:200]}" + ("..." if len(text) > 200 else "")
    usage = getattr(response, "usage", None)
    totals[1] += token_count(usage, "prompt_tokens")
    totals[2] += token_count(usage, "completion_tokens")
    try:
        return (response.choices[0].message.content if response.choices else None), None
    except (AttributeError, IndexError, TypeError):
        return None, None
