"""A local stand-in for the Anthropic Messages API, for tests of the real ``anthropic`` client.

:class:`FakeAnthropic` is an HTTP server on the loopback interface (a free port,
a thread of its own) that answers ``POST /v1/messages`` the way the API does:
plain JSON, or server-sent events when the body says ``"stream": true``
(``message_start``, ``content_block_start``/``_delta``/``_stop`` with
``text_delta`` and ``input_json_delta``, ``message_delta`` with the usage and
stop reason, ``message_stop``). Errors have the API's shape
``{"type": "error", "error": {"type": "rate_limit_error", "message": "..."}}``
and any headers a test likes (``retry-after``, ``anthropic-ratelimit-*-reset``).

Like the API, it can enforce an organisation's rate limits
(:meth:`FakeAnthropic.limit`: requests and input tokens per window, a 429 with
``retry-after`` when a request would pass one) and it sends the
``anthropic-ratelimit-*-limit``, ``-remaining`` and ``-reset`` headers on every
answer. Input tokens are counted from the request as :func:`count_input_tokens`
says (about four characters a token).

Replies are scripted, one per request, in order (:meth:`FakeAnthropic.script`);
when the script runs out the fake answers 400 with a message saying so, which
the agent does not retry, so a test that expected fewer calls fails at once.
Every request is recorded (time, headers, body) so tests can count attempts,
measure their spacing, and check keys and ``cache_control`` breakpoints.

It speaks HTTP/1.1 with keep-alive (streams in chunked encoding) and counts the
TCP connections it accepts (:attr:`FakeAnthropic.connections`), so tests can see
whether a client reuses its connection; :attr:`FakeAnthropic.latency` adds a
network's round trip to every request.

``POST /v1/messages/count_tokens`` answers ``{"input_tokens": N}`` counted as
:mod:`tests.fake_tokens` does (after ``count_delay`` seconds: a slow endpoint);
given a ``context_window``, the fake refuses a longer prompt as the API does and
remembers the largest prompt it was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import jiter

from tests.fake_tokens import PromptCache, count_tokens

#: The error ``type`` the API uses for each status (``error.type`` in the body).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}

#: Private key of a cut tool_use block: the argument JSON as far as it was written.
_PARTIAL_JSON = "_partial_json"

DEFAULT_USAGE = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


@dataclass
class Reply:
    """One scripted answer.

    Attributes:
        status: The HTTP status; 200 answers with ``content``, anything else with an error body.
        content: Content blocks of a successful message (``text`` / ``tool_use``).
        stop_reason: ``end_turn`` or ``tool_use`` (derived from ``content`` when ``None``).
        usage: Token counts reported for the message.
        error_type: ``error.type`` of an error body (from the status when ``None``).
        message: ``error.message`` of an error body.
        headers: Extra response headers (``retry-after``, rate-limit headers...).
        delay: Seconds to wait before answering (a slow model; a window to kill a worker).
        mid_stream: For a streamed request, send the error as an SSE ``error`` event
            after ``message_start`` (status 200), as the API does when it fails mid-answer.
        cut_json_at: Cut the last ``tool_use`` block's argument JSON after this many
            characters and stop with ``max_tokens``, as the API does when the allowance
            runs out mid-call: streamed, the partial JSON is sent and the block closed;
            plain, ``input`` is that partial JSON completed leniently (what a client that
            trusts it would run).
    """

    status: int = 200
    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    error_type: str | None = None
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    mid_stream: bool = False
    cut_json_at: int | None = None

    def error_body(self) -> dict[str, Any]:
        kind = self.error_type or ERROR_TYPES.get(self.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": self.message or kind}}


def text(answer: str, *, usage: dict[str, int] | None = None, delay: float = 0.0, stop_reason: str | None = None) -> Reply:
    """A final answer in one text block (``stop_reason`` e.g. ``refusal``, ``pause_turn``, ``max_tokens``)."""
    return Reply(
        content=[{"type": "text", "text": answer}], usage={**DEFAULT_USAGE, **(usage or {})}, delay=delay, stop_reason=stop_reason
    )


_tool_ids = itertools.count(1)
_request_ids = itertools.count(1)


def tool_use(
    name: str,
    args: dict[str, Any] | None = None,
    *,
    say: str = "",
    id: str | None = None,
    usage: dict[str, int] | None = None,
    delay: float = 0.0,
    stop_reason: str | None = None,
) -> Reply:
    """A reply that calls tool ``name`` with ``args`` (after a text block when ``say`` is given)."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": say}] if say else []
    blocks.append({"type": "tool_use", "id": id or f"toolu_fake_{next(_tool_ids):04d}", "name": name, "input": args or {}})
    return Reply(content=blocks, usage={**DEFAULT_USAGE, **(usage or {})}, delay=delay, stop_reason=stop_reason)


def truncated_tool_use(
    name: str, args: dict[str, Any], *, cut_at: int, say: str = "", id: str | None = None, usage: dict[str, int] | None = None
) -> Reply:
    """A reply cut by ``max_tokens`` after ``cut_at`` characters of the call's argument JSON.

    ``json.dumps(args)[:cut_at]`` is what the model had written; ``cut_at`` can come
    from ``raw.index(...)`` to cut inside a value (``{"amount": 2`` of ``20``).
    """
    reply = tool_use(name, args, say=say, id=id, usage=usage)
    reply.cut_json_at = cut_at
    reply.stop_reason = "max_tokens"
    return reply


def error(
    status: int,
    message: str = "",
    *,
    type: str | None = None,
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
    mid_stream: bool = False,
) -> Reply:
    """An error answer with the API's body shape and the given headers."""
    return Reply(status=status, error_type=type, message=message, headers=dict(headers or {}), delay=delay, mid_stream=mid_stream)


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def count_input_tokens(body: dict[str, Any]) -> int:
    """The input tokens the fake charges a request: its system, tools and messages at four characters a token."""
    system = body.get("system") or ""
    if isinstance(system, list):
        system = "".join(block.get("text", "") for block in system)
    parts = [system, _strip_cache_control(body.get("tools") or []), _strip_cache_control(body.get("messages") or [])]
    return sum(len(json.dumps(p, ensure_ascii=False, separators=(",", ":"))) for p in parts) // 4


@dataclass
class RateLimit:
    """At most ``amount`` of ``dimension`` (``requests`` or ``input_tokens``) in any ``period`` seconds."""

    dimension: str
    amount: int
    period: float


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received. ``at`` is ``time.monotonic()`` on arrival.

    ``limited`` says the fake answered it 429 for its rate limits (nothing was counted).
    """

    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    input_tokens: int = 0
    limited: bool = False

    @property
    def api_key(self) -> str | None:
        """The credential sent: ``x-api-key``, or the bearer token (how anthropic 2.x sends a key)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


#: A scripted item: a fixed reply, or a function of the request that picks one.
Scripted = Reply | Callable[[RecordedRequest], Reply]


class FakeAnthropic:
    """A scriptable, recording fake of ``POST /v1/messages`` on ``127.0.0.1``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, *, context_window: int | None = None) -> None:
        """Start (with :meth:`start`) a fake; with ``context_window`` it enforces one as the API does.

        Args:
            context_window: Answer 400 ``invalid_request_error`` "prompt is too long" to a request
                whose input counts more tokens than this (see :mod:`tests.fake_tokens`), and
                report usage computed from each request, with prompt caching imitated.
        """
        self.context_window = context_window
        #: The largest input (tokens) of any ``/v1/messages`` request received.
        self.largest_prompt_tokens = 0
        #: Requests to ``/v1/messages/count_tokens``, oldest first.
        self.count_requests: list[RecordedRequest] = []
        #: Seconds ``/v1/messages/count_tokens`` waits before it answers (a slow endpoint).
        self.count_delay = 0.0
        #: TCP connections accepted so far (a client that keeps its connection alive opens one).
        self.connections = 0
        #: Seconds added to every request before it is answered (a network's round trip).
        self.latency = 0.0
        self.cache = PromptCache()
        self._lock = threading.Lock()
        self._script: list[Scripted] = []
        self._fallback: Scripted | None = None
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-anthropic", daemon=True
        )
        self._messages = itertools.count(1)
        self._limits: list[RateLimit] = []

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL to give the client (``ANTHROPIC_BASE_URL``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environ(self, api_key: str = "sk-ant-fake-test-key") -> dict[str, str]:
        """Environment that points the ``anthropic`` client at this fake with a dummy key."""
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": api_key}

    def start(self) -> "FakeAnthropic":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed replies still pending wake up and give up."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ scripting

    def script(self, *replies: Scripted) -> None:
        """Queue replies, one per coming request, in order."""
        with self._lock:
            self._script.extend(replies)

    def always(self, reply: Scripted | None) -> None:
        """Answer with ``reply`` whenever the script is empty (``None``: the loud 400 again)."""
        with self._lock:
            self._fallback = reply

    def limit(self, *, requests: tuple[int, float] | None = None, input_tokens: tuple[int, float] | None = None) -> None:
        """Enforce rate limits as the API does: ``(amount, period seconds)`` of requests and of input tokens."""
        with self._lock:
            self._limits = [RateLimit(dim, amount, period) for dim, spec in (("requests", requests), ("input_tokens", input_tokens)) if spec for amount, period in [spec]]

    def _admit(self, request: RecordedRequest) -> tuple[bool, dict[str, str]]:
        """Whether ``request`` fits every limit (called under the lock, before it is recorded), and the headers to send."""
        headers: dict[str, str] = {}
        admitted = True
        counted = [r for r in self._requests if not r.limited]
        for limit in self._limits:
            window = [r for r in counted if r.at > request.at - limit.period]
            used = sum(1 if limit.dimension == "requests" else r.input_tokens for r in window)
            weight = 1 if limit.dimension == "requests" else request.input_tokens
            fits = used + weight <= limit.amount
            admitted = admitted and fits
            left = limit.amount - used - (weight if fits else 0)
            # The window frees up as its oldest request leaves it.
            frees = (window[0].at + limit.period - request.at) if window else 0.0
            name = limit.dimension.replace("_", "-")
            reset = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + frees)) + f".{int((time.time() + frees) % 1 * 1000):03d}Z"
            headers.update({
                f"anthropic-ratelimit-{name}-limit": str(limit.amount),
                f"anthropic-ratelimit-{name}-remaining": str(max(0, left)),
                f"anthropic-ratelimit-{name}-reset": reset,
            })
            if not fits:
                headers["retry-after"] = str(max(1, int(frees + 0.999)))
        return admitted, headers

    def windows_over_limit(self) -> list[str]:
        """Every window of a limit that held more than the limit (empty when the limits were kept)."""
        with self._lock:
            counted = [r for r in self._requests if not r.limited]
            limits = list(self._limits)
        over = []
        for limit in limits:
            for i, first in enumerate(counted):
                window = [r for r in counted[i:] if r.at < first.at + limit.period]
                used = sum(1 if limit.dimension == "requests" else r.input_tokens for r in window)
                if used > limit.amount:
                    over.append(f"{used} {limit.dimension} in the {limit.period:g} s from request {i + 1} (limit {limit.amount})")
        return over

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        times = [r.at for r in self.requests]
        return [b - a for a, b in zip(times, times[1:])]

    async def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests arrived; fail after ``timeout`` seconds.

        Async, so that a worker running in the same event loop keeps working meanwhile.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.requests
            if len(seen) >= count:
                return seen
            await asyncio.sleep(0.05)
        raise AssertionError(f"fake Anthropic got {len(self.requests)} requests, expected {count} within {timeout:g}s")

    # ------------------------------------------------------------ serving

    def _next(self, request: RecordedRequest) -> Reply:
        with self._lock:
            admitted, headers = self._admit(request)
            if not admitted:
                self._requests.append(dataclasses.replace(request, limited=True))
                return error(429, "fake Anthropic: rate limit exceeded", headers=headers)
            self._requests.append(request)
            number = len(self._requests)
            item = self._script.pop(0) if self._script else self._fallback
        if item is None:
            return error(400, f"fake Anthropic: no scripted reply left for request {number}")
        reply = item(request) if callable(item) else item
        return dataclasses.replace(reply, headers={**headers, **reply.headers}) if headers else reply

    def _message(self, reply: Reply, model: str) -> dict[str, Any]:
        stop = reply.stop_reason or ("tool_use" if any(b["type"] == "tool_use" for b in reply.content) else "end_turn")
        content = [dict(block) for block in reply.content]
        if reply.cut_json_at is not None:
            last_call = max(i for i, block in enumerate(content) if block["type"] == "tool_use")
            partial = json.dumps(content[last_call]["input"])[: reply.cut_json_at]
            # What the SDK's stream accumulator makes of the partial JSON: {"amount": 2 -> amount=2.
            content[last_call]["input"] = jiter.from_json(partial.encode(), partial_mode=True)
            content[last_call][_PARTIAL_JSON] = partial
        return {
            "id": f"msg_fake_{next(self._messages):04d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": reply.usage,
        }


def _sse_events(message: dict[str, Any], reply: Reply) -> Iterator[tuple[str, dict[str, Any]]]:
    """The event stream of ``message`` as the API sends it (the error event instead when scripted)."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    if reply.status != 200:
        yield "error", reply.error_body()
        return
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            raw = block.get(_PARTIAL_JSON, json.dumps(block["input"]))
            start_block = {k: v for k, v in block.items() if k != _PARTIAL_JSON}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {**start_block, "input": {}}}
            middle = len(raw) // 2
            # Two partial JSON chunks, so the client really has to accumulate them.
            for chunk in (raw[:middle], raw[middle:]):
                delta = {"type": "input_json_delta", "partial_json": chunk}
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        elif block["type"] == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
            for delta in ({"type": "thinking_delta", "thinking": block["thinking"]}, {"type": "signature_delta", "signature": block["signature"]}):
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        elif block["type"] != "text":  # redacted_thinking and other whole blocks
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        else:
            empty = {"type": "text", "text": ""}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
            words = block["text"].split(" ")
            for n, word in enumerate(words):
                piece = word if n == len(words) - 1 else word + " "
                delta = {"type": "text_delta", "text": piece}
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
    yield "message_stop", {"type": "message_stop"}


class _Server(http.server.ThreadingHTTPServer):
    """One thread per connection, so a delayed reply does not hold up the others."""

    daemon_threads = True
    fake: FakeAnthropic

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-reply (a killed worker, a timed-out attempt) is expected here.
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers requests from the fake's script, several per connection (HTTP/1.1 keep-alive)."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        fake = self.server.fake
        with fake._lock:
            fake.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        return None  # keep test output clean; the fake records what matters

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        request = RecordedRequest(
            at=time.monotonic(), path=self.path, headers={k.lower(): v for k, v in self.headers.items()}, body=body,
            input_tokens=count_input_tokens(body),
        )
        path = self.path.split("?")[0]
        if fake.latency and fake._stopping.wait(fake.latency):
            self.close_connection = True
            return
        if path == "/v1/messages/count_tokens":
            with fake._lock:
                fake.count_requests.append(request)
            if fake.count_delay and fake._stopping.wait(fake.count_delay):
                self.close_connection = True
                return
            self._json(200, {"input_tokens": count_tokens(body)}, {})
            return
        if path != "/v1/messages":
            self._json(404, error(404, f"fake Anthropic serves only /v1/messages, not {self.path}").error_body(), {})
            return
        prompt_tokens = count_tokens(body)
        with fake._lock:
            fake.largest_prompt_tokens = max(fake.largest_prompt_tokens, prompt_tokens)
        if fake.context_window is not None and prompt_tokens > fake.context_window:
            with fake._lock:
                fake._requests.append(request)
            too_long = error(400, f"prompt is too long: {prompt_tokens} tokens > {fake.context_window} maximum")
            self._json(400, too_long.error_body(), {})
            return
        reply = fake._next(request)
        if fake.context_window is not None and reply.status == 200:
            output = sum(len(json.dumps(block)) for block in reply.content) // 4 + 1
            reply = dataclasses.replace(reply, usage={**fake.cache.usage(body), "output_tokens": output})
        if reply.delay and fake._stopping.wait(reply.delay):
            self.close_connection = True  # stopping: no answer, and no next request on this connection
            return
        if reply.status != 200 and not (reply.mid_stream and request.stream):
            self._json(reply.status, reply.error_body(), reply.headers)
            return
        message = fake._message(reply, str(body.get("model", "claude-fake")))
        if request.stream:
            self._stream(message, reply)
        else:
            plain = [{k: v for k, v in block.items() if k != _PARTIAL_JSON} for block in message["content"]]
            self._json(200, {**message, "content": plain}, reply.headers)

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_fake_{next(_request_ids):06d}")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, message: dict[str, Any], reply: Reply) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")  # HTTP/1.1: the connection stays open after the stream
        self.send_header("request-id", f"req_fake_{next(_request_ids):06d}")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event, data in _sse_events(message, reply):
            chunk = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
