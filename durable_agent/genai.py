"""Spans and metrics in the OpenTelemetry GenAI semantic conventions.

LLM observability tools (Langfuse, Arize Phoenix, Datadog, Grafana...) read these
names, so a run shows up there without glue:

- ``chat {model}`` around each model call (in the ``think`` activity), with
  ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.response.id``,
  ``gen_ai.response.finish_reasons`` and the ``gen_ai.usage.*`` tokens (cache too);
- ``execute_tool {name}`` around each tool call (in ``run_tool``), with
  ``gen_ai.tool.name`` and ``gen_ai.tool.call.id``;
- ``invoke_agent {agent}`` around the run (in the workflow), with
  ``gen_ai.agent.name`` and ``gen_ai.conversation.id`` (the workflow id);
- the client metrics ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration``.

Message content (prompts, replies, tool arguments and results) is put on the
spans only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is true,
and never while payload encryption is on (``AGENT_ENCRYPTION_KEYS``): encrypted
content must not leak in clear through telemetry. Nor does a tool's error text
then (it may quote its arguments): the span's status says the outcome only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from durable_agent import redaction
from durable_agent.schemas import Usage

INSTRUMENTATION = "durable_agent"
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: Longest text of one captured content attribute; telemetry back ends refuse huge attributes.
CONTENT_CHARS = 16_000
#: Bucket boundaries the conventions advise for the two client metrics.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def tracer() -> trace.Tracer:
    """This package's tracer from the process's provider, made once per provider.

    ``trace.get_tracer`` makes a new tracer (and its instrumentation scope) on every
    call: once per span, it was a third of what a model call's span cost.
    """
    return _tracer_of(trace.get_tracer_provider())


@functools.lru_cache(maxsize=4)
def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    return provider.get_tracer(INSTRUMENTATION)


def capture_content() -> bool:
    """Whether message content may go on spans: opted in, and payloads are not encrypted."""
    wanted = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return wanted and not redaction.encryption_on()


def provider_name(model: str) -> str:
    """``gen_ai.provider.name`` of a model: ``anthropic`` for Claude, else the model's own name (``offline``...)."""
    from durable_agent.models import is_anthropic

    return "anthropic" if is_anthropic(model) else model


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= CONTENT_CHARS else text[:CONTENT_CHARS] + "...[cut]"


def _parts(content: Any) -> list[dict[str, Any]]:
    """Anthropic content blocks as the conventions' message parts."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "content": block.get("text", "")})
        elif kind == "thinking":
            parts.append({"type": "reasoning", "content": block.get("thinking", "")})
        elif kind == "tool_use":
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"), "arguments": block.get("input")})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"), "response": block.get("content")})
    return parts


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": m.get("role"), "parts": _parts(m.get("content"))} for m in messages]


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.get_meter(INSTRUMENTATION)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )


#: The GenAI instruments, made on first use (after the worker has set the meter provider).
_genai_instruments = functools.cache(_Instruments)


class ChatCall:
    """What a ``chat`` span learns of its model call, once the reply is in (see :func:`chat_span`)."""

    def __init__(self, span: trace.Span, attributes: dict[str, Any]) -> None:
        self.span = span
        self.attributes = attributes
        self.response_model: str | None = None

    def set_response(self, *, model: str, response_id: str | None, stop_reason: str | None, usage: Usage, content: Any) -> None:
        """Put the reply's model, id, finish reason and tokens (and, if captured, content) on the span."""
        self.response_model = model
        span = self.span
        span.set_attribute("gen_ai.response.model", model)
        if response_id:
            span.set_attribute("gen_ai.response.id", response_id)
        if stop_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [stop_reason])
        # The conventions count cached prompt tokens as input; Anthropic reports them apart.
        input_total = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
        span.set_attribute("gen_ai.usage.input_tokens", input_total)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        span.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_creation_input_tokens)
        span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cache_read_input_tokens)
        if capture_content():
            output = [{"role": "assistant", "parts": _parts(content), "finish_reason": stop_reason or ""}]
            span.set_attribute("gen_ai.output.messages", _clip(output))
        inst = _genai_instruments()
        attrs = {**self.attributes, "gen_ai.response.model": model}
        inst.token_usage.record(input_total, {**attrs, "gen_ai.token.type": "input"})
        inst.token_usage.record(usage.output_tokens, {**attrs, "gen_ai.token.type": "output"})


@contextlib.contextmanager
def chat_span(model: str, *, system: str, messages: list[dict[str, Any]], max_tokens: int) -> Iterator[ChatCall]:
    """The ``chat {model}`` span and duration metric around one model call (activity code)."""
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name(model),
        "gen_ai.request.model": model,
    }
    started = time.monotonic()
    error_type: str | None = None
    with tracer().start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes={**attributes, "gen_ai.request.max_tokens": max_tokens}
    ) as span:
        if capture_content():
            span.set_attribute("gen_ai.system_instructions", _clip([{"type": "text", "content": system}]))
            span.set_attribute("gen_ai.input.messages", _clip(_messages(messages)))
        call = ChatCall(span, attributes)
        try:
            yield call
        except BaseException as exc:
            kind = getattr(exc, "kind", None)  # a ModelError's kind: rate_limit, timeout...
            error_type = str(getattr(kind, "value", kind)) if kind is not None else type(exc).__name__
            span.set_attribute("error.type", error_type)
            raise
        finally:
            recorded = dict(attributes)
            if call.response_model:
                recorded["gen_ai.response.model"] = call.response_model
            if error_type:
                recorded["error.type"] = error_type
            _genai_instruments().duration.record(time.monotonic() - started, recorded)


@contextlib.contextmanager
def tool_span(name: str, call_id: str, *, args: dict[str, Any], description: str = "") -> Iterator[trace.Span]:
    """The ``execute_tool {name}`` span around one tool call (activity code)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function",
    }
    if description:
        attributes["gen_ai.tool.description"] = description[:500]
    if capture_content():
        attributes["gen_ai.tool.call.arguments"] = _clip(args)
    with tracer().start_as_current_span(f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attributes) as span:
        yield span


def tool_outcome(span: trace.Span, status: str, result: Any = None, error: str | None = None) -> None:
    """Put a tool call's outcome on its span: the status, the error (unless encrypted), and (if captured) the result."""
    span.set_attribute("durable_agent.tool.status", status)
    if status != "ok":
        span.set_attribute("error.type", status)
        span.set_status(Status(StatusCode.ERROR, (error if redaction.content_in_logs() else None) or status))
    elif result is not None and capture_content():
        span.set_attribute("gen_ai.tool.call.result", _clip(result))


@contextlib.contextmanager
def agent_span(agent: str, conversation_id: str, model: str) -> Iterator[trace.Span]:
    """The ``invoke_agent {agent}`` span around a run (workflow code; the tracer provider is replay-safe).

    A continue-as-new ends it normally (the next run opens its own); any other
    exception is recorded, and Temporal's replay-safe span then ends it only if
    the exception fails the run, never for a workflow task that will be retried.
    """
    from temporalio.workflow import ContinueAsNewError

    span = tracer().start_span(
        f"invoke_agent {agent}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": conversation_id,
            "gen_ai.provider.name": provider_name(model),
            "gen_ai.request.model": model,
        },
    )
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield span
    except ContinueAsNewError:
        span.end()
        raise
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.end()
        raise
    span.end()


@contextlib.contextmanager
def start_span(agent: str | None, workflow_id: str) -> Iterator[trace.Span]:
    """The starter's ``start_agent_run`` span around starting a run (client code).

    Temporal's tracing plugin puts its context in the workflow's headers, so the
    run's ``invoke_agent`` span and all below it are descendants of this one:
    one trace from the command a person typed to the last tool call.
    """
    attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": workflow_id}
    if agent:
        attributes["gen_ai.agent.name"] = agent
    with tracer().start_as_current_span("start_agent_run", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        yield span
