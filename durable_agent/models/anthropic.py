"""Claude through the ``anthropic`` SDK, with the SDK's own retries off.

One Temporal activity attempt is exactly one HTTP request, so every attempt is
visible in the event history and Temporal decides when to try again. Failures
are classified here, once, into :class:`~durable_agent.retry.ErrorKind` with the
server's requested wait (``retry-after-ms``, ``retry-after``, or the
``anthropic-ratelimit-*-reset`` headers).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import anthropic

try:  # the HTTP library the anthropic SDK is built on (renamed httpx2 in its newer releases)
    import httpx2 as _http
except ImportError:  # pragma: no cover - older anthropic releases
    import httpx as _http  # type: ignore[no-redef]

from durable_agent.models.base import ModelError, ModelRequest, ModelResponse
from durable_agent.retry import ErrorKind
from durable_agent.schemas import Usage

log = logging.getLogger("durable_agent.models.anthropic")

#: The beta that turns on the API's server-side context management.
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"

#: Seconds one HTTP request may take before it counts as a timeout.
REQUEST_TIMEOUT_SECONDS = float(os.environ.get("ANTHROPIC_REQUEST_TIMEOUT", "240"))
#: Seconds a token count may take: counting only saves an estimate, so a slow count is
#: given up (the prompt is estimated locally) long before it could eat the call's own time.
COUNT_TIMEOUT_SECONDS = 30.0

#: Seconds an idle connection to the API is kept open for the next call (the SDK's default is 5).
KEEPALIVE_SECONDS = 60.0

CredentialsProvider = Callable[[], str | None]


def _env_api_key() -> str | None:
    return os.environ.get("ANTHROPIC_API_KEY") or None


_credentials_provider: CredentialsProvider = _env_api_key


def set_credentials_provider(provider: CredentialsProvider | None) -> None:
    """Install a function that returns the current API key (a secrets manager, say).

    It is called before every attempt, so after a 401 the next attempt uses
    whatever the provider returns then. ``None`` restores the environment default.
    """
    global _credentials_provider
    _credentials_provider = provider or _env_api_key


#: The clients of this process, per event loop and base URL: one connection pool each, for every call.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, anthropic.AsyncAnthropic]] = weakref.WeakKeyDictionary()


def shared_client(api_key: str, base_url: str | None, timeout: float) -> anthropic.AsyncAnthropic:
    """The worker's long-lived client for ``base_url``, sending ``api_key``.

    Every call of the process reuses its connections (keep-alive), so a step over a
    real network costs no new TCP and TLS handshake. A changed credential (a
    rotated key, a secrets manager's new one) gets a client that sends it over the
    same connection pool. The pool belongs to the running event loop (an
    ``httpx`` client cannot cross loops): a new loop gets a new one.
    """
    loop = asyncio.get_running_loop()
    clients = _clients.setdefault(loop, {})
    client = clients.get(base_url)
    if client is None:
        limits = _http.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_SECONDS)
        client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,  # Temporal owns retries: one attempt, one request.
            timeout=timeout,
            http_client=anthropic.DefaultAsyncHttpxClient(limits=limits, timeout=timeout),
        )
    elif client.api_key != api_key:
        client = client.with_options(api_key=api_key)  # the same connection pool, the new credential
    clients[base_url] = client
    return client


def _parse_seconds(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        when = None
    if when is None:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def retry_after_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from the response headers, or ``None``.

    ``retry-after-ms`` wins, then ``retry-after`` (seconds or an HTTP date), then
    the ``anthropic-ratelimit-*-reset`` timestamps: of the limits that are used
    up (``-remaining: 0``) the latest reset, else the earliest reset to come.
    """
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    seconds = _parse_seconds(lower.get("retry-after"), now)
    if seconds is not None:
        return seconds
    exhausted: list[float] = []
    upcoming: list[float] = []
    for key, value in lower.items():
        if key.startswith("anthropic-ratelimit-") and key.endswith("-reset"):
            wait = _parse_seconds(value, now)
            if wait is None:
                continue
            upcoming.append(wait)
            remaining = lower.get(key[: -len("-reset")] + "-remaining")
            if remaining is not None and remaining.strip() == "0":
                exhausted.append(wait)
    if exhausted:
        return max(exhausted)
    if upcoming:
        return min(upcoming)
    return None


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``anthropic-ratelimit-*`` headers of a response (lower-cased names)."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("anthropic-ratelimit-")}


#: The HTTP status the API uses for each ``error.type``, for errors sent inside a stream.
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def classify(exc: BaseException) -> ModelError:
    """Turn an ``anthropic`` exception into a :class:`ModelError` with its retry kind."""
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return ModelError(ErrorKind.TIMEOUT, "the Anthropic API did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError(ErrorKind.CONNECTION, f"cannot reach the Anthropic API: {exc}")
    if isinstance(exc, anthropic.APIStatusError):
        error = _classify_status(exc)
        error.request_id = exc.request_id
        verdict = (exc.response.headers.get("x-should-retry") or "").strip().lower()
        error.should_retry = {"true": True, "false": False}.get(verdict)
        if isinstance(error, ModelError) and error.kind == ErrorKind.RATE_LIMIT:
            error.rate_limit_headers = rate_limit_headers(exc.response.headers)
        return error
    return ModelError(ErrorKind.SERVER, f"unexpected error calling the Anthropic API: {exc!r}")


def _classify_status(exc: anthropic.APIStatusError) -> ModelError:
    """The error kind of an HTTP error answer (or an error event inside a stream)."""
    status = exc.status_code
    api_message = getattr(exc, "api_message", None) or str(exc)
    retry_after = retry_after_from_headers(exc.response.headers)
    if status < 400:
        # An ``error`` event in the middle of a stream: the response said 200, the
        # body's error type says what really happened (overloaded, most often).
        status = _STATUS_OF_ERROR_TYPE.get(getattr(exc, "type", None) or "", 500)
    if status == 429:
        return ModelError(ErrorKind.RATE_LIMIT, f"rate limited (429): {api_message}", retry_after=retry_after, status_code=status)
    if status == 529:
        return ModelError(ErrorKind.OVERLOADED, f"Anthropic is overloaded (529): {api_message}", retry_after=retry_after, status_code=status)
    if status in (401, 403):
        return ModelError(
            ErrorKind.AUTH,
            f"the Anthropic API rejected the API key ({status}): {api_message}; check ANTHROPIC_API_KEY",
            status_code=status,
        )
    if status == 408:
        return ModelError(ErrorKind.TIMEOUT, f"request timeout (408): {api_message}", status_code=status)
    if status >= 500:
        return ModelError(ErrorKind.SERVER, f"Anthropic server error ({status}): {api_message}", retry_after=retry_after, status_code=status)
    if status == 400 and is_prompt_too_long(api_message):
        return ModelError(ErrorKind.CONTEXT_OVERFLOW, f"the prompt is over the model's context window (400): {api_message}", status_code=status)
    return ModelError(ErrorKind.INVALID_REQUEST, f"the Anthropic API refused the request ({status}): {api_message}", status_code=status)


def is_prompt_too_long(api_message: str) -> bool:
    """Whether a 400's message says the prompt does not fit the context window."""
    lowered = api_message.lower()
    return "prompt is too long" in lowered or "exceed context limit" in lowered or "context window" in lowered


def with_cache_breakpoints(
    system: str, tools: list[dict[str, Any]], messages: list[dict[str, Any]], stable: list[int] | None = None
) -> dict[str, Any]:
    """Request parts with ``cache_control`` on the stable prefixes. At most the API's four breakpoints.

    One on the system prompt (the tools come before it, so it caches them too), one
    on the last block of the conversation so far, so each call reads from cache what
    the previous one wrote, and one on each of the last two compaction boundaries
    (``stable``: message indexes), so after a compaction the part compacted before
    is still read from cache rather than written again. Without a system prompt the
    last tool takes its breakpoint.
    """
    ephemeral = {"type": "ephemeral"}
    cached_tools = [dict(t) for t in tools]
    system_blocks = [{"type": "text", "text": system, "cache_control": ephemeral}] if system else []
    if cached_tools and not system_blocks:
        cached_tools[-1]["cache_control"] = ephemeral
    cached_messages = [dict(m) for m in messages]
    points = sorted({i for i in (stable or []) if 0 <= i < len(cached_messages) - 1})[-2:]
    for index in [*points, len(cached_messages) - 1] if cached_messages else []:
        message = cached_messages[index]
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if content:
            content = [dict(block) for block in content]
            content[-1]["cache_control"] = ephemeral
            message["content"] = content
    return {"system": system_blocks, "tools": cached_tools, "messages": cached_messages}


class AnthropicModel:
    """The Messages API with tool use. Honours ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL``."""

    def __init__(self, *, stream: bool | None = None, timeout: float | None = None) -> None:
        """Choose streaming and the request timeout.

        Args:
            stream: Stream the answer (heartbeating as it arrives); default ``DURABLE_AGENT_STREAM`` or on.
            timeout: Seconds one HTTP request may take; default ``ANTHROPIC_REQUEST_TIMEOUT`` or 240.
        """
        self.stream = stream if stream is not None else os.environ.get("DURABLE_AGENT_STREAM", "1") != "0"
        self.timeout = timeout if timeout is not None else REQUEST_TIMEOUT_SECONDS

    def _client(self) -> anthropic.AsyncAnthropic:
        key = _credentials_provider()
        if not key:
            raise ModelError(ErrorKind.AUTH, "no Anthropic API key: set ANTHROPIC_API_KEY (or use model 'offline')")
        return shared_client(key, os.environ.get("ANTHROPIC_BASE_URL") or None, self.timeout)

    @staticmethod
    def _request_kwargs(request: ModelRequest) -> dict[str, Any]:
        """What the prompt is made of: the same for a call and for counting its tokens."""
        parts = with_cache_breakpoints(request.system, request.tools, request.messages, request.cache_points)
        kwargs: dict[str, Any] = {"model": request.model, "messages": parts["messages"]}
        if parts["system"]:
            kwargs["system"] = parts["system"]
        if parts["tools"]:
            kwargs["tools"] = parts["tools"]
            if not request.parallel_tool_calls:
                # One tool call a turn, unless the profile lets independent calls come (and run) together.
                kwargs["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
        if request.thinking_budget_tokens:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget_tokens}
        if request.context_management:
            # Tier 3: the API clears old tool results itself once the prompt grows (a beta).
            kwargs["extra_headers"] = {"anthropic-beta": CONTEXT_MANAGEMENT_BETA}
            kwargs["extra_body"] = {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}
        return kwargs

    async def count_tokens(self, request: ModelRequest) -> int | None:
        """The prompt's size by the API's token-counting endpoint; ``None`` when it cannot say."""
        kwargs = self._request_kwargs(request)
        try:
            client = self._client()
        except ModelError:
            return None  # no key: the call itself will say so
        try:
            counted = await client.messages.count_tokens(**kwargs, timeout=min(self.timeout, COUNT_TIMEOUT_SECONDS))
        except Exception as exc:  # noqa: BLE001 - counting is an optimisation: the caller estimates instead
            log.info("token counting unavailable (%s); estimating locally", type(exc).__name__)
            return None
        return int(counted.input_tokens)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        kwargs = self._request_kwargs(request)
        kwargs["max_tokens"] = request.max_tokens
        if request.user_id:
            kwargs["metadata"] = {"user_id": request.user_id}
        # Per request: the shared client was made with whichever timeout its first caller had.
        kwargs["timeout"] = max(self.timeout, request.timeout_seconds or 0)
        client = self._client()
        request_id: str | None = None
        try:
            if self.stream:
                async with client.messages.stream(**kwargs) as stream:
                    request_id = stream.request_id
                    headers = rate_limit_headers(stream.response.headers)
                    async for _event in stream:
                        request.on_progress()
                    message = await stream.get_final_message()
            else:
                raw = await client.messages.with_raw_response.create(**kwargs)
                headers = rate_limit_headers(raw.headers)
                message = await raw.parse()
                request_id = message._request_id or raw.headers.get("request-id")
        except Exception as exc:
            error = classify(exc)
            error.request_id = error.request_id or request_id
            raise error from None
        usage = message.usage
        return ModelResponse(
            content=[block.model_dump(exclude_none=True, exclude={"citations"}) for block in message.content],
            usage=Usage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
                cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            ),
            stop_reason=message.stop_reason,
            response_id=message.id,
            model=message.model,
            request_id=request_id,
            rate_limit_headers=headers,
        )
