"""Hostile input, generated (Hypothesis), against a real Temporal server.

Start inputs, signal and update payloads (none to three of them: arbitrary JSON,
deep nesting, huge strings, bytes that are not UTF-8, lone surrogates, odd
encodings) and tool results (tuple keys, cycles, bytes, NaN, objects). The
property, for each: the run either failed at once, as a workflow failure naming
the problem, or it is healthy: it answers, a proper approval succeeds, and it
ends. No workflow task is attempted more than once, and a tool runs once per call.

The cases that found the defects of issue 14 are kept as explicit examples.
Bounded for CI: ``FUZZ_EXAMPLES`` generated examples per property (default 20),
each test on one worker.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from durable_agent.cli.worker import create_worker
from durable_agent.models import register_provider
from durable_agent.models.base import ModelRequest, ModelResponse
from durable_agent.schemas import AgentResult, StatusView, Usage
from tests import tools_for_tests
from tests.conftest import SUPPORT_PROFILE, Harness, make_config

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20")),
    deadline=None,
    database=None,  # nothing written into the checkout; a failure prints its reproduction
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: A healthy run answers within this; a wedged one never does.
PATIENCE = 45.0
MODEL = "fuzzmodel"
#: Failure types that mean "refused at once, by name": bad input, unknown profile.
REFUSALS = {"InvalidInput", "UnknownAgent", "MissingCredentials"}


# ------------------------------------------------------------------ the model and the worker


@dataclass
class CallThenAnswer:
    """Calls one tool, then answers: ``returns_given`` when the task says ``returns_given:KEY``, else cancel_order."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        usage = Usage(input_tokens=10, output_tokens=2)
        last = request.messages[-1]["content"] if request.messages else []
        if isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last):
            return ModelResponse(content=[{"type": "text", "text": "done"}], usage=usage, stop_reason="end_turn", model=request.model)
        task = "".join(b.get("text", "") for b in last if isinstance(b, dict)) if isinstance(last, list) else str(last)
        name, args = ("cancel_order", {"order_id": "ord-1001"})
        if task.startswith("returns_given:"):
            name, args = "returns_given", {"key": task.removeprefix("returns_given:")}
        call = {"type": "tool_use", "id": f"toolu_fuzz_{len(request.messages)}", "name": name, "input": args}
        return ModelResponse(content=[call], usage=usage, stop_reason="tool_use", model=request.model)


@pytest.fixture
async def fuzz(harness: Harness) -> AsyncIterator[Harness]:
    """One worker for every example of a test: the support demo and a tool tester, both on the fuzz model."""
    register_provider(MODEL, CallThenAnswer())
    harness.models.append(MODEL)  # unregistered when the harness closes
    config = make_config(
        {
            "support": {**SUPPORT_PROFILE, "model": MODEL},
            "tester": {"system_prompt": "You test tools.", "tools": ["returns_given"], "autonomy": "autonomous", "model": MODEL},
        }
    )
    # Cached runs, as in production: with no cache (max_cached_workflows=0, as the other tests use to catch
    # non-determinism) a query racing a task can make the worker drop that task, which then times out and
    # runs again: an attempt the property below would count against the input.
    worker = create_worker(harness.client, config, task_queue=harness.task_queue, store=harness.store, max_cached_workflows=100)
    async with worker:
        yield harness


# ------------------------------------------------------------------ checks


async def start(harness: Harness, *args: Any) -> WorkflowHandle[Any, Any]:
    return await harness.client.start_workflow(
        "AgentWorkflow", args=list(args), id=f"fuzz-{uuid.uuid4().hex[:12]}", task_queue=harness.task_queue, result_type=AgentResult
    )


async def outcome(handle: WorkflowHandle[Any, Any]) -> AgentResult | ApplicationError:
    """How the run ends, approving properly whatever waits for approval; fails if it does not end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    result = asyncio.ensure_future(handle.result())
    try:
        while not result.done():
            assert loop.time() < deadline, "the run neither failed nor ended: wedged"
            try:
                status = await asyncio.wait_for(handle.query("status", result_type=StatusView), 5)
            except Exception:  # noqa: BLE001 - not started yet, or closed: the result says which
                status = None
            if status is not None and status.pending_approvals:
                decision = {"approval_id": status.pending_approvals[0].approval_id, "approved": True, "reviewer": "alice"}
                try:
                    await asyncio.wait_for(handle.execute_update("review", decision), 10)
                except WorkflowUpdateFailedError:
                    pass  # decided meanwhile
            await asyncio.wait({result}, timeout=0.3)
        return result.result()
    except WorkflowFailureError as exc:
        assert isinstance(exc.cause, ApplicationError), exc.cause
        return exc.cause
    finally:
        if not result.done():
            result.cancel()
            await handle.terminate("fuzz cleanup: the run was wedged")


async def assert_no_task_retried(handle: WorkflowHandle[Any, Any]) -> None:
    """No workflow task failed or ran twice, and no tool call was attempted twice."""
    history = await handle.fetch_history()
    failed = [e.workflow_task_failed_event_attributes.failure.message for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert failed == [], failed
    attempts = [e.workflow_task_scheduled_event_attributes.attempt for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED]
    assert set(attempts) <= {1}, [EventType.Name(e.event_type) for e in history.events]
    activity = [e.activity_task_started_event_attributes.attempt for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert set(activity) <= {1}, activity


def assert_refused_by_name(failure: ApplicationError) -> None:
    assert failure.type in REFUSALS and failure.non_retryable, (failure.type, failure.message)
    if failure.type == "InvalidInput":
        assert failure.message.startswith("invalid AgentWorkflow input: ") and len(failure.message) > 40, failure.message


# ------------------------------------------------------------------ generated payloads


def raw(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


def nested(depth: int, leaf: str = "1") -> bytes:
    return (b'{"a":' * depth) + leaf.encode() + (b"}" * depth)


HUGE = st.integers(min_value=10_000, max_value=300_000).map(lambda n: "h" * n)
ODD_TEXT = st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "é" * 3, ""])
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | ODD_TEXT | HUGE
JSON_VALUE = st.recursive(
    JSON_LEAF, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8) | ODD_TEXT, kids, max_size=3), max_leaves=8
)


def encode(value: Any, ascii_only: bool) -> RawValue:
    """JSON text of ``value``: NaN and Infinity as Python writes them, lone surrogates escaped or raw (not UTF-8)."""
    return raw(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


ODD_PAYLOADS = st.sampled_from(
    [
        raw(b'{"approval_id": "\xff\xfe"}'),
        raw(b"not json"),
        raw(b""),
        raw(b"\x00\x01", b"binary/plain"),
        raw(b"x", b"made/up"),
        raw(b"null", b"binary/null"),
        raw(nested(200)),
        raw(nested(5000)),
    ]
)
DECISION = st.fixed_dictionaries(
    {},
    optional={
        "approval_id": st.sampled_from(["apr-1", "apr-2", "nope"]) | JSON_LEAF,
        "approved": st.booleans() | JSON_LEAF,
        "reviewer": st.sampled_from(["bob", "r" * 100_000]) | JSON_LEAF,
        "comment": st.text(max_size=20) | HUGE,
        "args_sha256": st.text(max_size=10),
    },
)
PAYLOAD = st.one_of(
    st.tuples(DECISION | JSON_VALUE, st.booleans()).map(lambda t: encode(*t)),
    st.binary(max_size=40).map(raw),
    ODD_PAYLOADS,
)
PAYLOADS = st.lists(PAYLOAD, min_size=0, max_size=3)

# ------------------------------------------------------------------ decisions


class TestDecisionsFuzz:
    """Whatever a signal or update carries, the run stays healthy and a proper approval then succeeds."""

    @FUZZ
    @given(handler=st.sampled_from(["approve", "reject", "review"]), payloads=PAYLOADS)
    @example(handler="approve", payloads=[encode({"approval_id": "apr-1", "reviewer": "bob"}, True), encode({"x": 1}, True)])
    @example(handler="review", payloads=[encode({"approval_id": "apr-1", "approved": True}, True), encode({"x": 1}, True)])
    @example(handler="approve", payloads=[encode({"approval_id": "apr-1", "reviewer": "r" * 100_000}, True)])
    @example(handler="review", payloads=[raw(b'{"approved": true, "reviewer": "\xff"}')])
    @pytest.mark.slow  # many generated examples
    async def test_any_decision_payloads(self, fuzz: Harness, handler: str, payloads: list[RawValue]) -> None:
        handle = await start(fuzz, {"task": "Cancel order ord-1001", "agent": "support"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE
        while not (await handle.query("status", result_type=StatusView)).pending_approvals:
            assert loop.time() < deadline, "no approval came"
            await asyncio.sleep(0.1)
        if handler == "review":
            try:
                record = await asyncio.wait_for(handle.execute_update("review", args=payloads), PATIENCE)
                assert record["status"] in ("approved", "rejected"), record
            except WorkflowUpdateFailedError as exc:
                assert isinstance(exc.cause, ApplicationError) and exc.cause.non_retryable, exc.cause
                assert exc.cause.message, exc.cause
        else:
            await handle.signal(handler, args=payloads)
        ended = await outcome(handle)
        assert isinstance(ended, AgentResult), ended
        assert ended.status == "success"
        assert all(len(w) < 1_000 for w in ended.warnings)
        assert all(len(a.reviewer or "") <= 200 for a in ended.approvals)
        await assert_no_task_retried(handle)


# ------------------------------------------------------------------ start input


START_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "task": JSON_VALUE | HUGE | st.just("x" * 1_000_000),
        "agent": st.sampled_from(["support", "nope"]) | JSON_LEAF,
        "max_steps": st.integers() | st.floats() | JSON_LEAF,
        "budget_usd": st.floats() | st.sampled_from(["Infinity", "NaN", "-1", "1e400"]) | JSON_LEAF,
        "autonomy": st.sampled_from(["read_only", "supervised", "autonomous", "root"]) | JSON_LEAF,
        "model": st.sampled_from([MODEL, "m" * 300]) | JSON_LEAF,
        "metadata": JSON_VALUE | st.integers(min_value=1, max_value=300).map(lambda n: json.loads(nested(n))),
        "surprise": JSON_VALUE,
    },
)
START_INPUT = st.one_of(
    st.tuples(START_FIELDS, st.booleans()).map(lambda t: [encode({"task": "Cancel order ord-1001", "agent": "support", **t[0]}, t[1])]),
    st.lists(PAYLOAD, min_size=0, max_size=3),
)


class TestStartInputFuzz:
    """Whatever a run is started with, it fails at once naming the problem, or it runs to its end."""

    @FUZZ
    @given(args=START_INPUT)
    @example(args=[raw(b'{"task": "Cancel order \xff\xfe"}')])
    @example(args=[raw(b'{"task": "Cancel order \\ud800"}')])
    @example(args=[raw(b'{"task": "x", "metadata": ' + nested(200) + b"}")])
    @example(args=[encode({"task": "Look up order ord-789 " + "x" * 1_000_000}, True)])
    @example(args=[encode({"task": "x", "budget_usd": "Infinity"}, True)])
    @example(args=[encode({"task": "x"}, True), encode({"step": 5}, True)])
    async def test_any_start_input(self, fuzz: Harness, args: list[RawValue]) -> None:
        handle = await start(fuzz, *args)
        ended = await outcome(handle)
        if isinstance(ended, ApplicationError):
            assert_refused_by_name(ended)
        else:
            assert ended.status in ("success", "max_steps_exceeded", "budget_exceeded"), ended
        await assert_no_task_retried(handle)


# ------------------------------------------------------------------ tool results


class Colour(enum.Enum):
    RED = "red"


class Opaque:
    def __str__(self) -> str:
        return "an opaque object"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def circular(value: Any) -> list[Any]:
    items = [value]
    items.append(items)
    return items


PY_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.just(5000).map(lambda digits: 10**digits)  # longer than Python prints as decimal text
    | st.floats()
    | st.text(max_size=12)
    | ODD_TEXT
    | st.binary(max_size=12)
    | st.sampled_from([decimal.Decimal("1.5"), datetime.date(2026, 11, 26), uuid.UUID(int=7), Colour.RED, Opaque(), Unprintable()])
)
PY_KEY = st.text(max_size=6) | st.integers() | st.none() | st.booleans() | st.tuples(st.integers(), st.text(max_size=3)) | st.just(Colour.RED)
PY_VALUE = st.recursive(
    PY_LEAF,
    lambda kids: st.lists(kids, max_size=3)
    | st.tuples(kids, kids)
    | st.frozensets(st.integers() | st.text(max_size=4), max_size=3)
    | st.dictionaries(PY_KEY, kids, max_size=3),
    max_leaves=10,
)
TOOL_RESULT = PY_VALUE | PY_VALUE.map(circular) | st.integers(min_value=1, max_value=200).map(lambda n: json.loads(nested(n)))


class TestToolResultsFuzz:
    """Whatever a tool returns, it runs once, the run records its result, and the run ends."""

    @FUZZ
    @given(value=TOOL_RESULT)
    @example(value={("order", "ord-1"): "found", "ok": True})
    @example(value=circular(1))
    @pytest.mark.slow  # many generated examples
    async def test_any_tool_result(self, fuzz: Harness, value: Any) -> None:
        key = uuid.uuid4().hex
        tools_for_tests.GIVEN_RESULTS[key] = value
        try:
            handle = await start(fuzz, {"task": f"returns_given:{key}", "agent": "tester"})
            ended = await outcome(handle)
        finally:
            del tools_for_tests.GIVEN_RESULTS[key]
        assert isinstance(ended, AgentResult) and ended.status == "success", ended
        assert [c["result_key"] for c in tools_for_tests.calls("returns_given") if c["result_key"] == key] == [key]
        trace = await handle.query("trace")
        assert trace[0]["observation"]["status"] == "ok", trace[0]["observation"]
        await assert_no_task_retried(handle)
