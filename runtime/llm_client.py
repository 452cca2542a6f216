"""The one client for OpenAI-compatible chat endpoints (OpenAI, vLLM, Ollama...), shared by every LLM caller.

Two callers use it: the trace generator (`priming.llm`) and the behaviour judge (`behavior_classifier.client`,
and its Batch API path `behavior_classifier.batch`). What they share lives here and nowhere else:

- **Retries** are the `openai` client's own: ``max_retries`` retries 408/409/429/5xx, timeouts and dropped
  connections with exponential backoff, honouring ``Retry-After`` / ``retry-after-ms``.
- **Timeout**: ``timeout`` is a deadline for each whole HTTP request attempt (connect, headers and the full
  body). The HTTP library's own timeouts bound each read only, so a server trickling a byte a second would
  hold a request forever; `ClientConfig.timeout` must be a finite number of seconds > 0 (`check_seconds`).
  An attempt past its deadline is retried like any timeout, then surfaces as ``openai.APITimeoutError``.
- **The key** comes from ``OPENAI_API_KEY`` only (never a flag, never a log). A caller either requires it
  (`ClientConfig.key_required`) or, for local servers that need none, sends a placeholder with a warning.
  `redact` removes the key from any text that is logged or written, in case a server echoes it.
- **Concurrency**: `LLMClient.as_completed` runs at most ``concurrency`` requests at once on one event loop
  and yields results as they arrive; memory stays bounded whatever the number of requests.

Importing this module imports neither openai nor torch (the client is built on first use).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from countdown_env.errors import UsageError

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
PLACEHOLDER_KEY = "EMPTY"
"""Sent when no key is set and the caller allows it (what vLLM's docs use for a server without authentication)."""
ERROR_CHARS = 500
"""Longest error text `describe_error` returns (a server's error page can be long)."""

T = TypeVar("T")


def check_seconds(value: object, name: str = "timeout") -> float:
    """`value` as float if it is a finite number of seconds > 0, else a ValueError naming `name`.

    ``nan`` and ``inf`` are refused: every comparison with nan is False (so ``nan <= 0`` lets it through), and
    either would make every request fail or wait forever.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ClientConfig:
    """How one OpenAI-compatible endpoint is reached; each caller's config builds one."""

    base_url: str | None = None
    """OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (None: the openai client's default)."""
    timeout: float = 60.0
    """Seconds one HTTP request attempt may take in all (connect, headers and whole body) before it is retried."""
    max_retries: int = 3
    """Retries of one request on 408/409/429/5xx, timeouts and connection errors (the openai client's backoff)."""
    concurrency: int = 8
    """Requests in flight at most."""
    key_required: bool = True
    """True: a missing OPENAI_API_KEY is an error. False: send `PLACEHOLDER_KEY` (local servers need none)."""

    def __post_init__(self) -> None:
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        check_seconds(self.timeout, "timeout")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")


def api_key(*, required: bool = True) -> str:
    """The key from ``OPENAI_API_KEY``; without one, a `UsageError` (`required`) or a placeholder. Never log the value."""
    key = os.environ.get(API_KEY_ENV)
    if key:
        return key
    if required:
        raise UsageError(f"set {API_KEY_ENV} in the environment (any non-empty value for a local server without authentication)")
    log.warning("%s is not set; sending a placeholder key (fine for local vLLM/Ollama servers)", API_KEY_ENV)
    return PLACEHOLDER_KEY


def redact(message: str) -> str:
    """`message` with the API key (if any) replaced, for anything that is logged or written."""
    key = os.environ.get(API_KEY_ENV)
    return message.replace(key, "[redacted]") if key else message


def describe_error(err: BaseException) -> str:
    """A short, key-free description of a failed request: the error's type, HTTP status and message."""
    status = getattr(err, "status_code", None)
    text = f"{type(err).__name__}" + (f" (HTTP {status})" if status else "") + f": {err}"
    return redact(text)[:ERROR_CHARS]


def token_count(usage: Any, name: str) -> int:
    """A token count (`name`, e.g. ``prompt_tokens``) from a reply's `usage`, object or dict; 0 when the server sent
    something else there (a malformed usage never costs the reply)."""
    value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _deadline_http_client(seconds: float) -> Any:
    """The openai client's own async HTTP client class, with every request bounded by a total deadline of `seconds`.

    Wrapping `send` (which, for a non-streaming request, returns only once the whole body is read) bounds the
    request as a whole. Expiry raises the HTTP library's ReadTimeout, which the openai client treats like any
    timeout: retried with backoff, then `openai.APITimeoutError`.
    """
    import openai

    base = openai.DefaultAsyncHttpxClient
    # httpx or its successor (httpx2), whichever this openai release is built on.
    http = sys.modules[next(c for c in base.__mro__[1:] if c.__name__ == "AsyncClient").__module__.partition(".")[0]]

    class DeadlineClient(base):  # type: ignore[misc, valid-type]
        async def send(self, request: Any, **kwargs: Any) -> Any:
            try:
                return await asyncio.wait_for(super().send(request, **kwargs), seconds)
            except asyncio.TimeoutError:
                raise http.ReadTimeout(f"no complete reply within {seconds:g} s", request=request) from None

    return DeadlineClient(timeout=seconds)


class LLMClient:
    """One OpenAI-compatible endpoint, as both LLM callers use it.

    The key is read when the client is made (a missing required key fails before any work). Inside an event
    loop, `open` gives an ``openai.AsyncOpenAI`` for that loop and `as_completed` runs requests concurrently::

        client = LLMClient(ClientConfig(base_url="http://localhost:8000/v1", timeout=60))

        async def main() -> None:
            async with client.open() as api:
                async for i, reply in client.as_completed(lambda i: api.chat.completions.create(...), n):
                    ...

        asyncio.run(main())
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._key = api_key(required=config.key_required)

    def __repr__(self) -> str:  # the key stays out of reprs (and so out of tracebacks and logs)
        return f"LLMClient({self.config!r})"

    def open(self) -> openai.AsyncOpenAI:
        """A new ``openai.AsyncOpenAI`` with this endpoint's key, retries and deadline; use it as ``async with``
        (its connections belong to the running event loop)."""
        import openai

        config = self.config
        return openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=self._key,
            max_retries=config.max_retries,
            timeout=config.timeout,
            http_client=_deadline_http_client(config.timeout),
        )

    async def as_completed(self, work: Callable[[int], Awaitable[T]], n: int) -> AsyncIterator[tuple[int, T]]:
        """``(i, await work(i))`` for i in ``range(n)``, in completion order, at most ``concurrency`` at once.

        `work` should turn the errors it expects into results; anything it raises stops the others and is
        raised here.
        """
        indices = iter(range(n))
        done: asyncio.Queue[tuple[int, T | None, Exception | None]] = asyncio.Queue()

        async def worker() -> None:
            # A fixed pool of workers draws from one iterator: bounded concurrency and memory for any n.
            for i in indices:
                try:
                    result = await work(i)
                except Exception as err:
                    await done.put((i, None, err))
                    return
                await done.put((i, result, None))

        workers = [asyncio.create_task(worker()) for _ in range(min(self.config.concurrency, max(1, n)))]
        try:
            for _ in range(n):
                i, result, error = await done.get()
                if error is not None:
                    raise error
                yield i, result  # type: ignore[misc]
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
