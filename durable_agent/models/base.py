"""What every model provider takes and returns (Anthropic Messages API shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from durable_agent.retry import ErrorKind
from durable_agent.schemas import Usage


@dataclass
class ModelRequest:
    model: str
    system: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    max_tokens: int
    #: Called while a long response streams in, so the activity can heartbeat.
    on_progress: Callable[[], None] = field(default=lambda: None)
    #: A stable, non-identifying id of the run, sent as ``metadata.user_id``.
    user_id: str | None = None
    #: Seconds the whole answer may take (a long allowance takes long to write).
    timeout_seconds: float | None = None
    #: ``step`` (a turn of the agent) or ``summary`` (compaction: plain text, no tools).
    purpose: str = "step"
    #: Indexes of messages ending a stable prefix (compaction boundaries): cache breakpoints.
    cache_points: list[int] = field(default_factory=list)
    #: Extended thinking's budget in tokens; ``None``: off.
    thinking_budget_tokens: int | None = None
    #: Let the API clear old tool results server-side (its context management).
    context_management: bool = False
    #: The model may make several tool calls in one turn (else at most one).
    parallel_tool_calls: bool = False


@dataclass
class ModelResponse:
    content: list[dict[str, Any]]
    usage: Usage
    stop_reason: str | None
    model: str
    #: The API's id of the request that produced this response (``request-id`` header).
    request_id: str | None = None
    #: The provider's ``anthropic-ratelimit-*`` response headers (what its rate limits have left).
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    #: The provider's id of this response (``gen_ai.response.id``), when it gives one.
    response_id: str | None = None


class ModelError(Exception):
    """A model call failed, classified for retrying.

    Args:
        kind: What kind of failure, which decides the retry (see :mod:`durable_agent.retry`).
        message: For people; never contains a credential.
        retry_after: Seconds the server asked us to wait, when it said.
        status_code: The HTTP status, when there was one.
        request_id: The API's request id, when the request reached it.
        should_retry: The API's ``x-should-retry`` header: ``True``/``False`` overrides the kind's plan.
        rate_limit_headers: The response's ``anthropic-ratelimit-*`` headers, when there were any.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        should_retry: bool | None = None,
        rate_limit_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.status_code = status_code
        #: The API's id of the failed request, for support tickets and logs.
        self.request_id = request_id
        #: The API's own ``x-should-retry`` verdict, when it sent one.
        self.should_retry = should_retry
        self.rate_limit_headers = rate_limit_headers or {}


class ModelProvider(Protocol):
    """A model backend. It may also offer ``async count_tokens(request) -> int | None``
    (the prompt's exact size); without it the agent estimates (:mod:`durable_agent.context`)."""

    async def complete(self, request: ModelRequest) -> ModelResponse: ...
