"""The ``anthropic`` provider over real HTTP to the fake Messages API, and the retry arithmetic.

No Temporal here: :class:`AnthropicModel` is called directly, with the real
``anthropic`` client, streamed and not, against :mod:`tests.fake_anthropic`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Iterator

import pytest

from durable_agent.models.anthropic import AnthropicModel, retry_after_from_headers, set_credentials_provider
from durable_agent.models.base import ModelError, ModelRequest
from durable_agent.retry import MODEL_RETRY, TOOL_RETRY_POLICIES, ErrorKind, KindPolicy, model_retry_delay, next_delay, temporal_policy
from tests.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, Scripted, error, text, tool_use

KEY = "sk-ant-provider-test-key"

def _schema(arg: str) -> dict[str, Any]:
    return {"type": "object", "properties": {arg: {"type": "string"}}}


TOOLS = [
    {"name": "lookup_order", "description": "Look up an order.", "input_schema": _schema("order_id")},
    {"name": "search_kb", "description": "Search.", "input_schema": _schema("query")},
]


def _request(messages: list[dict[str, Any]] | None = None) -> ModelRequest:
    return ModelRequest(
        model="claude-haiku-4-5",
        system="You are a support agent.",
        tools=TOOLS,
        messages=messages or [{"role": "user", "content": [{"type": "text", "text": "Where is ord-789?"}]}],
        max_tokens=512,
    )


@pytest.fixture
def fake(fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> FakeAnthropic:
    """The fake, with this process's ``anthropic`` client pointed at it."""
    for name, value in fake_anthropic.environ(KEY).items():
        monkeypatch.setenv(name, value)
    return fake_anthropic


@pytest.fixture(autouse=True)
def _default_credentials() -> Iterator[None]:
    yield
    set_credentials_provider(None)


@pytest.fixture(params=[True, False], ids=["stream", "plain"])
def model(request: pytest.FixtureRequest) -> AnthropicModel:
    return AnthropicModel(stream=request.param)


async def _failure(model: AnthropicModel) -> ModelError:
    with pytest.raises(ModelError) as info:
        await model.complete(_request())
    return info.value


class TestResponses:
    """Answers are parsed the same way streamed or not."""

    async def test_text_answer_and_usage_with_cache_tokens(self, fake: FakeAnthropic, model: AnthropicModel) -> None:
        usage = {"input_tokens": 120, "output_tokens": 33, "cache_creation_input_tokens": 900, "cache_read_input_tokens": 4000}
        fake.script(text("Order ord-789 was delivered on Monday.", usage=usage))
        response = await model.complete(_request())
        assert response.content == [{"type": "text", "text": "Order ord-789 was delivered on Monday."}]
        assert response.stop_reason == "end_turn"
        assert response.model == "claude-haiku-4-5"
        assert response.usage.model_dump() == usage
        assert len(fake.requests) == 1
        assert fake.requests[0].stream is model.stream

    async def test_tool_use_with_streamed_json_arguments(self, fake: FakeAnthropic, model: AnthropicModel) -> None:
        args = {"order_id": "ord-789", "note": "a longer argument, split over two input_json_delta chunks"}
        fake.script(tool_use("lookup_order", args, say="Let me look.", id="toolu_01"))
        response = await model.complete(_request())
        assert response.stop_reason == "tool_use"
        assert response.content[0] == {"type": "text", "text": "Let me look."}
        call = response.content[1]
        assert (call["type"], call["id"], call["name"], call["input"]) == ("tool_use", "toolu_01", "lookup_order", args)

    async def test_streaming_reports_progress(self, fake: FakeAnthropic) -> None:
        """Each streamed event is a chance to heartbeat, so a long answer never looks like a dead worker."""
        beats: list[float] = []
        request = _request()
        request.on_progress = lambda: beats.append(time.monotonic())
        fake.script(text("one two three four five"))
        await AnthropicModel(stream=True).complete(request)
        assert len(beats) >= 5


class TestRequest:
    """What goes over the wire: the key, cache breakpoints, one tool call per step."""

    async def test_compaction_boundaries_get_breakpoints(self, fake: FakeAnthropic) -> None:
        """The last two compaction boundaries and the last message: three of the four breakpoints with the system's."""
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text", "text": f"m{i}"}]} for i in range(9)]
        request = _request(messages)
        request.cache_points = [1, 3, 5]
        fake.script(text("ok"))
        await AnthropicModel().complete(request)
        marked = [i for i, m in enumerate(fake.requests[0].body["messages"]) if "cache_control" in m["content"][-1]]
        assert marked == [3, 5, 8]

    async def test_server_side_context_management_when_the_profile_asks(self, fake: FakeAnthropic) -> None:
        request = _request()
        request.context_management = True
        fake.script(text("ok"))
        await AnthropicModel().complete(request)
        sent = fake.requests[0]
        assert sent.body["context_management"] == {"edits": [{"type": "clear_tool_uses_20250919"}]}
        assert "context-management" in sent.headers.get("anthropic-beta", "")

    async def test_tokens_counted_by_the_api_as_the_call_would_send_them(self, fake: FakeAnthropic) -> None:
        from tests.fake_tokens import count_tokens

        counted = await AnthropicModel().count_tokens(_request())
        assert len(fake.count_requests) == 1 and fake.requests == []
        assert counted == count_tokens(fake.count_requests[0].body)

    async def test_key_cache_breakpoints_and_tool_choice(self, fake: FakeAnthropic, model: AnthropicModel) -> None:
        messages = [
            {"role": "user", "content": [{"type": "text", "text": "Refund ord-789"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup_order", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "{}"}]},
        ]
        fake.script(text("ok"))
        await model.complete(_request(messages))
        sent = fake.requests[0]
        assert sent.api_key == KEY
        assert sent.path == "/v1/messages"
        body = sent.body
        assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 512
        ephemeral = {"type": "ephemeral"}
        assert body["system"] == [{"type": "text", "text": "You are a support agent.", "cache_control": ephemeral}]
        # The system prompt's breakpoint caches the tools before it too.
        assert all("cache_control" not in t for t in body["tools"])
        assert body["messages"][-1]["content"][-1]["cache_control"] == ephemeral
        assert all("cache_control" not in b for m in body["messages"][:-1] for b in m["content"])
        assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}

    async def test_run_id_in_metadata_and_request_id_kept(self, fake: FakeAnthropic, model: AnthropicModel) -> None:
        fake.script(text("ok"), error(429, headers={"x-should-retry": "false"}))
        request = _request()
        request.user_id = "run-0123abcd"
        response = await model.complete(request)
        assert fake.requests[0].body["metadata"] == {"user_id": "run-0123abcd"}
        assert response.request_id and response.request_id.startswith("req_fake_")
        failure = await _failure(model)
        assert failure.request_id and failure.request_id.startswith("req_fake_")
        assert failure.should_retry is False

    async def test_credentials_provider_is_asked_before_every_request(self, fake: FakeAnthropic) -> None:
        keys = iter(["sk-ant-first", "sk-ant-second"])
        set_credentials_provider(lambda: next(keys))
        fake.script(text("a"), text("b"))
        model = AnthropicModel()
        await model.complete(_request())
        await model.complete(_request())
        assert [r.api_key for r in fake.requests] == ["sk-ant-first", "sk-ant-second"]

    async def test_one_connection_for_many_calls(self, fake: FakeAnthropic, model: AnthropicModel) -> None:
        """Over a real network each new connection is a TCP and TLS handshake: the worker keeps one open."""
        fake.always(text("ok"))
        for _ in range(10):
            await AnthropicModel(stream=model.stream).complete(_request())
        await AnthropicModel().count_tokens(_request())
        assert len(fake.requests) == 10 and len(fake.count_requests) == 1
        assert fake.connections == 1

    async def test_a_new_key_goes_over_the_same_connection(self, fake: FakeAnthropic) -> None:
        keys = iter(["sk-ant-first", "sk-ant-first", "sk-ant-rotated", "sk-ant-rotated"])
        set_credentials_provider(lambda: next(keys))
        fake.always(text("ok"))
        for _ in range(4):
            await AnthropicModel().complete(_request())
        assert [r.api_key for r in fake.requests] == ["sk-ant-first", "sk-ant-first", "sk-ant-rotated", "sk-ant-rotated"]
        assert fake.connections == 1

    async def test_no_key_fails_as_auth_without_a_request(self, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        failure = await _failure(AnthropicModel())
        assert failure.kind is ErrorKind.AUTH and "ANTHROPIC_API_KEY" in failure.message
        assert fake.requests == []


def _reset_in(seconds: int) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _ratelimit_reset(request: RecordedRequest) -> Reply:
    # Computed when the request arrives: a reset 30 s from then.
    headers = {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": _reset_in(30)}
    return error(429, headers=headers)


CLASSIFICATION = [
    # (reply, status, kind, retry_after (None: absent; a number: about that many seconds), words in the message)
    pytest.param(
        error(429, "slow down", headers={"retry-after": "2"}), 429, ErrorKind.RATE_LIMIT, 2.0, "rate limited (429): slow down",
        id="429-retry-after",
    ),
    pytest.param(
        error(429, headers={"retry-after-ms": "1500", "retry-after": "9"}), 429, ErrorKind.RATE_LIMIT, 1.5, "429",
        id="429-retry-after-ms",
    ),
    pytest.param(_ratelimit_reset, 429, ErrorKind.RATE_LIMIT, 30.0, "429", id="429-ratelimit-reset"),
    pytest.param(error(429), 429, ErrorKind.RATE_LIMIT, None, "429", id="429-no-headers"),
    pytest.param(error(529, "Overloaded"), 529, ErrorKind.OVERLOADED, None, "overloaded (529): Overloaded", id="529"),
    pytest.param(error(500, "Internal server error"), 500, ErrorKind.SERVER, None, "server error (500)", id="500"),
    pytest.param(error(503), 503, ErrorKind.SERVER, None, "503", id="503"),
    pytest.param(error(408), 408, ErrorKind.TIMEOUT, None, "408", id="408"),
    pytest.param(
        error(401, "invalid x-api-key"), 401, ErrorKind.AUTH, None, "rejected the API key (401): invalid x-api-key", id="401"
    ),
    pytest.param(error(403, "not allowed"), 403, ErrorKind.AUTH, None, "rejected the API key (403)", id="403"),
    pytest.param(
        error(400, "prompt is too long: 210000 tokens > 200000 maximum"), 400, ErrorKind.CONTEXT_OVERFLOW, None,
        "over the model's context window (400): prompt is too long: 210000 tokens > 200000 maximum", id="400-prompt-too-long",
    ),
    pytest.param(error(400, "messages: field required"), 400, ErrorKind.INVALID_REQUEST, None, "refused the request (400)", id="400"),
    pytest.param(error(404, "model: claude-nope"), 404, ErrorKind.INVALID_REQUEST, None, "model: claude-nope", id="404"),
    pytest.param(error(413), 413, ErrorKind.INVALID_REQUEST, None, "413", id="413"),
]


class TestErrorClassification:
    """Each failure becomes one error kind with the server's requested wait, after exactly one HTTP request."""

    @pytest.mark.parametrize(("reply", "status", "kind", "retry_after", "words"), CLASSIFICATION)
    async def test_status_to_kind(
        self,
        fake: FakeAnthropic,
        model: AnthropicModel,
        reply: Scripted,
        status: int,
        kind: ErrorKind,
        retry_after: float | None,
        words: str,
    ) -> None:
        fake.script(reply)
        failure = await _failure(model)
        assert failure.kind is kind
        assert failure.status_code == status
        assert words in failure.message
        assert KEY not in failure.message
        if retry_after is None:
            assert failure.retry_after is None
        else:
            assert failure.retry_after == pytest.approx(retry_after, abs=2.0)
        # The SDK's own retries are off: one attempt, one request.
        await asyncio.sleep(0.2)  # time for a retry the SDK must not make
        assert len(fake.requests) == 1

    async def test_error_event_mid_stream_keeps_its_kind(self, fake: FakeAnthropic) -> None:
        """The API can fail after answering 200; the body's error type decides, not the status."""
        fake.script(error(529, "Overloaded", mid_stream=True), error(429, "slow down", mid_stream=True))
        overloaded = await _failure(AnthropicModel(stream=True))
        rate_limited = await _failure(AnthropicModel(stream=True))
        assert overloaded.kind is ErrorKind.OVERLOADED and "Overloaded" in overloaded.message
        assert rate_limited.kind is ErrorKind.RATE_LIMIT
        assert len(fake.requests) == 2

    async def test_read_timeout_is_a_timeout(self, fake: FakeAnthropic, model: AnthropicModel) -> None:
        fake.script(text("too late", delay=3.0))
        model.timeout = 0.5
        failure = await _failure(model)
        assert failure.kind is ErrorKind.TIMEOUT
        assert len(fake.requests) == 1

    async def test_nothing_listening_is_a_connection_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        failure = await _failure(AnthropicModel())
        assert failure.kind is ErrorKind.CONNECTION


class TestRetryAfterHeaders:
    """The server's wait, from whichever header it sent."""

    NOW = 1_700_000_000.0

    def _at(self, seconds: float) -> str:
        return datetime.fromtimestamp(self.NOW + seconds, timezone.utc).isoformat()

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({}, None),
            ({"retry-after": "7"}, 7.0),
            ({"Retry-After": "0.5"}, 0.5),
            ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),
            ({"retry-after": "soon"}, None),
            ({"retry-after": "-3"}, 0.0),
        ],
    )
    def test_retry_after(self, headers: dict[str, str], expected: float | None) -> None:
        assert retry_after_from_headers(headers, now=self.NOW) == expected

    def test_http_date(self) -> None:
        when = format_datetime(datetime.fromtimestamp(self.NOW + 42, timezone.utc), usegmt=True)
        assert retry_after_from_headers({"retry-after": when}, now=self.NOW) == pytest.approx(42)

    def test_exhausted_limit_wins_and_latest_reset_of_those(self) -> None:
        headers = {
            "anthropic-ratelimit-requests-remaining": "10",
            "anthropic-ratelimit-requests-reset": self._at(5),
            "anthropic-ratelimit-input-tokens-remaining": "0",
            "anthropic-ratelimit-input-tokens-reset": self._at(20),
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": self._at(12),
        }
        assert retry_after_from_headers(headers, now=self.NOW) == pytest.approx(20)

    def test_no_limit_exhausted_takes_the_earliest_reset(self) -> None:
        headers = {"anthropic-ratelimit-requests-reset": self._at(9), "anthropic-ratelimit-tokens-reset": self._at(3)}
        assert retry_after_from_headers(headers, now=self.NOW) == pytest.approx(3)


class TestNextDelay:
    """The pause before each retry, by error kind, and when to give up."""

    PLAN = {
        ErrorKind.TOOL_CRASH: KindPolicy(max_attempts=4, backoff="constant", initial=1.5),
        ErrorKind.TIMEOUT: KindPolicy(max_attempts=5, backoff="linear", initial=2.0, maximum=7.0),
        ErrorKind.RATE_LIMIT: KindPolicy(max_attempts=6, backoff="exponential", initial=1.0, maximum=10.0),
        ErrorKind.INVALID_REQUEST: KindPolicy(max_attempts=1),
    }

    def _delays(self, kind: ErrorKind) -> list[float | None]:
        return [next_delay(self.PLAN, kind, attempt) for attempt in range(1, 8)]

    def test_constant(self) -> None:
        assert self._delays(ErrorKind.TOOL_CRASH) == [1.5, 1.5, 1.5, None, None, None, None]

    def test_linear_grows_by_a_fixed_step_up_to_the_cap(self) -> None:
        assert self._delays(ErrorKind.TIMEOUT) == [2.0, 4.0, 6.0, 7.0, None, None, None]

    def test_exponential_doubles_up_to_the_cap(self) -> None:
        assert self._delays(ErrorKind.RATE_LIMIT) == [1.0, 2.0, 4.0, 8.0, 10.0, None, None]

    def test_retry_after_is_honoured_exactly_even_above_the_cap(self) -> None:
        assert next_delay(self.PLAN, ErrorKind.RATE_LIMIT, 1, retry_after=2.0) == 2.0
        assert next_delay(self.PLAN, ErrorKind.RATE_LIMIT, 2, retry_after=45.0) == 45.0
        assert next_delay(self.PLAN, ErrorKind.RATE_LIMIT, 3, retry_after=0.0) == 0.0

    def test_gives_up_after_max_attempts_even_with_retry_after(self) -> None:
        assert next_delay(self.PLAN, ErrorKind.RATE_LIMIT, 6, retry_after=1.0) is None

    def test_not_retried(self) -> None:
        assert next_delay(self.PLAN, ErrorKind.INVALID_REQUEST, 1) is None

    def test_unlisted_kind_follows_the_crash_policy(self) -> None:
        assert next_delay(self.PLAN, ErrorKind.CONNECTION, 1) == 1.5

    def test_model_plan(self) -> None:
        """The shipped model plan: auth gets exactly one more try, a bad request none, timeouts grow linearly."""
        assert [next_delay(MODEL_RETRY, ErrorKind.AUTH, n) for n in (1, 2)] == [0.0, None]
        assert next_delay(MODEL_RETRY, ErrorKind.INVALID_REQUEST, 1) is None
        assert [next_delay(MODEL_RETRY, ErrorKind.TIMEOUT, n) for n in (1, 2, 3)] == [5.0, 10.0, None]
        assert [next_delay(MODEL_RETRY, ErrorKind.RATE_LIMIT, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]

    def test_tool_default_plan(self) -> None:
        """The seed's tool defaults: a crash retried twice at a constant pace, a timeout three attempts growing linearly."""
        plan = TOOL_RETRY_POLICIES["tool_default"]
        assert [next_delay(plan, ErrorKind.TOOL_CRASH, n) for n in (1, 2, 3)] == [1.0, 1.0, None]
        assert [next_delay(plan, ErrorKind.TIMEOUT, n) for n in (1, 2, 3)] == [2.0, 4.0, None]

    def test_model_retries_get_jitter_and_never_come_early(self) -> None:
        """Runs limited together spread out: up to a quarter more than the plan or the server's wait, never less."""
        plain = model_retry_delay(ErrorKind.RATE_LIMIT, 1)
        assert plain == 2.0
        assert model_retry_delay(ErrorKind.RATE_LIMIT, 1, unit_random=0.999) == pytest.approx(2.0 * 1.25, rel=1e-3)
        assert model_retry_delay(ErrorKind.RATE_LIMIT, 1, retry_after=10.0, unit_random=0.5) == pytest.approx(11.25)
        spread = {model_retry_delay(ErrorKind.OVERLOADED, 2, unit_random=u / 10) for u in range(10)}
        assert len(spread) == 10 and min(spread) == 4.0

    def test_x_should_retry_overrides_the_plan(self) -> None:
        assert model_retry_delay(ErrorKind.SERVER, 1, should_retry=False) is None
        assert model_retry_delay(ErrorKind.INVALID_REQUEST, 1) is None
        assert model_retry_delay(ErrorKind.INVALID_REQUEST, 1, should_retry=True) == 1.0
        assert model_retry_delay(ErrorKind.INVALID_REQUEST, 3, should_retry=True) is None  # bounded
        assert model_retry_delay(ErrorKind.CONTEXT_OVERFLOW, 1, should_retry=True) is None  # resending cannot help

    def test_temporal_policy_caps_attempts_at_the_plans_largest(self) -> None:
        assert temporal_policy(self.PLAN).maximum_attempts == 6
        assert temporal_policy(TOOL_RETRY_POLICIES["no_retry"]).maximum_attempts == 1
