"""Failure semantics on a real Temporal server with the real ``anthropic`` client.

The worker runs in this process and talks over HTTP to :mod:`tests.fake_anthropic`;
only the model is fake. Each test checks what the user sees (the result, the
model's observation) and what Temporal recorded (attempts in the event history).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History, HistoryEvent
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from durable_agent.demo import shop
from durable_agent.models.anthropic import set_credentials_provider
from durable_agent.profiles import AgentsConfig
from durable_agent.retry import TOOL_RETRY_POLICIES, ErrorKind, next_delay
from durable_agent.schemas import AgentResult, DecisionRecord, StatusView
from tests import tools_for_tests
from tests.conftest import Harness, make_config
from tests.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, error, text, tool_use

MODEL = "claude-haiku-4-5"
KEY = "sk-ant-failures-test-key"


@pytest.fixture
def fake(harness: Harness, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    """The fake Messages API, with the in-process worker's client pointed at it (after ``harness`` cleared the env)."""
    for name, value in fake_anthropic.environ(KEY).items():
        monkeypatch.setenv(name, value)
    yield fake_anthropic
    set_credentials_provider(None)


def claude(*tools: str) -> AgentsConfig:
    """A profile on Claude (served by the fake) with ``tools``, acting without approvals."""
    return make_config({"claude": {"model": MODEL, "tools": list(tools), "autonomy": "autonomous"}})


def events(history: History, event_type: int, activity: str | None = None) -> list[HistoryEvent]:
    """Events of ``event_type``; with ``activity``, only those of that activity type."""
    found = [e for e in history.events if e.event_type == event_type]
    if activity is None:
        return found
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    }
    return [e for e in found if _scheduled_id(e) in scheduled or e.event_id in scheduled]


def _scheduled_id(event: HistoryEvent) -> int:
    for attrs in ("activity_task_started_event_attributes", "activity_task_completed_event_attributes",
                  "activity_task_failed_event_attributes", "activity_task_cancel_requested_event_attributes"):
        if event.HasField(attrs):
            return getattr(event, attrs).scheduled_event_id
    return -1


def attempts(history: History, activity: str) -> list[int]:
    """The attempt number each execution of ``activity`` ended on (the server records only the last start)."""
    started = events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED, activity)
    return [e.activity_task_started_event_attributes.attempt for e in started]


def tool_results(request: RecordedRequest) -> list[dict[str, Any]]:
    """The tool_result blocks of the last user message of a request: what the model observed."""
    return [b for b in request.body["messages"][-1]["content"] if b.get("type") == "tool_result"]


@dataclass
class Outcome:
    """How a run ended, and what Temporal and the trace recorded of it."""

    result: AgentResult | None
    failure: str | None
    history: History
    trace: list[DecisionRecord]

    @property
    def ok(self) -> AgentResult:
        """The result of a run that ended normally (fails the test when the run failed)."""
        assert self.result is not None, f"the run failed: {self.failure}"
        return self.result


async def run_claude(harness: Harness, task: str, *tools: str) -> Outcome:
    """Run ``task`` to its end on a worker whose profile is on Claude (the fake) with ``tools``."""
    async with harness.worker(claude(*tools)):
        handle = await harness.start({"task": task})
        result: AgentResult | None = None
        failure: str | None = None
        try:
            result = await handle.result()
        except WorkflowFailureError as exc:
            assert isinstance(exc.cause, ApplicationError)
            failure = exc.cause.message
        trace = await handle.query("trace", result_type=list[DecisionRecord])
        return Outcome(result, failure, await handle.fetch_history(), trace)


class TestModelErrors:
    """A model call that fails is retried as its error kind says, one HTTP request per attempt."""

    async def test_rate_limit_waits_exactly_as_told(self, harness: Harness, fake: FakeAnthropic) -> None:
        limited = error(429, "Number of requests has exceeded your rate limit", headers={"retry-after": "2"})
        fake.script(limited, limited, text("All done."))
        run = await run_claude(harness, "hello")
        assert run.ok.status == "success" and run.ok.answer == "All done." and run.ok.steps == 1
        assert len(fake.requests) == 3
        assert all(gap >= 2.0 for gap in fake.gaps()), fake.gaps()
        assert attempts(run.history, "think") == [3]

    async def test_overloaded_once_then_success(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(error(529, "Overloaded"), text("Fine now."))
        run = await run_claude(harness, "hello")
        assert run.ok.status == "success" and run.ok.answer == "Fine now."
        assert len(fake.requests) == 2
        assert attempts(run.history, "think") == [2]

    async def test_rejected_key_fails_clearly_after_one_more_try(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.always(error(401, "invalid x-api-key"))
        run = await run_claude(harness, "hello")
        assert run.failure is not None
        assert "rejected the API key" in run.failure and "invalid x-api-key" in run.failure
        assert KEY not in run.failure
        assert len(fake.requests) == 2
        assert attempts(run.history, "think") == [2]
        assert len(events(run.history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, "think")) == 1

    async def test_credentials_are_read_again_after_a_rejection(self, harness: Harness, fake: FakeAnthropic) -> None:
        """A rotated key (from a secrets manager, say) is picked up by the one extra attempt."""
        secret = {"key": "sk-ant-revoked"}
        set_credentials_provider(lambda: secret["key"])

        def answer(request: RecordedRequest) -> Reply:
            if request.api_key == "sk-ant-rotated":
                return text("Authenticated.")
            secret["key"] = "sk-ant-rotated"  # the rotation lands while the first attempt fails
            return error(401, "invalid x-api-key")

        fake.always(answer)
        run = await run_claude(harness, "hello")
        assert run.ok.status == "success" and run.ok.answer == "Authenticated."
        assert [r.api_key for r in fake.requests] == ["sk-ant-revoked", "sk-ant-rotated"]

    async def test_invalid_request_is_not_retried(self, harness: Harness, fake: FakeAnthropic) -> None:
        # (A 400 "prompt is too long" is the exception: the run compacts and tries once more; tests/test_long_runs.py.)
        fake.script(error(400, "messages: roles must alternate between user and assistant"))
        run = await run_claude(harness, "hello")
        assert run.failure is not None and "roles must alternate between user and assistant" in run.failure
        assert len(fake.requests) == 1
        assert attempts(run.history, "think") == [1]


class TestToolErrors:
    """A failing tool is retried by its policy; one that stays down becomes an observation, never a failed run."""

    @pytest.mark.slow  # waits out every retry of a tool
    async def test_tool_that_always_times_out_is_reported_unavailable(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("always_slow", {"query": "status"}), text("I answered without it."))
        run = await run_claude(harness, "check the status", "always_slow")
        assert run.ok.status == "success" and run.ok.answer == "I answered without it."
        observed = tool_results(fake.requests[1])
        assert len(observed) == 1 and observed[0]["is_error"] is True
        assert "always_slow is unavailable" in observed[0]["content"] and "timed out" in observed[0]["content"]
        assert run.trace[0].observation["status"] == "unavailable"
        # Three attempts of the same call (same idempotency key), the last one recorded as final.
        calls = tools_for_tests.calls("always_slow")
        assert [c["attempt"] for c in calls] == [1, 2, 3]
        assert len({c["key"] for c in calls}) == 1
        assert attempts(run.history, "run_tool") == [3]
        # Linear backoff: each pause is the tool's timeout (1 s) plus the plan's growing delay.
        plan = TOOL_RETRY_POLICIES["tool_default"]
        planned = [next_delay(plan, ErrorKind.TIMEOUT, n) for n in (1, 2)]
        assert planned == [2.0, 4.0]
        gaps = [b["at"] - a["at"] for a, b in zip(calls, calls[1:])]
        assert all(gap >= 1.0 + delay for gap, delay in zip(gaps, planned)), gaps

    async def test_tool_that_crashes_once_then_works(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("flaky_once", {"query": "orders"}), text("Got it."))
        run = await run_claude(harness, "fetch", "flaky_once")
        assert run.ok.status == "success"
        observed = tool_results(fake.requests[1])
        assert observed[0]["content"] == "ok: orders" and not observed[0].get("is_error")
        calls = tools_for_tests.calls("flaky_once")
        assert [c["attempt"] for c in calls] == [1, 2]
        assert len({c["key"] for c in calls}) == 1
        assert attempts(run.history, "run_tool") == [2]

    async def test_tool_rate_limit_waits_as_the_upstream_said(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("rate_limited_once", {"query": "quotes"}), text("Got them."))
        run = await run_claude(harness, "fetch", "rate_limited_once")
        assert run.ok.status == "success"
        assert tool_results(fake.requests[1])[0]["content"] == "ok: quotes"
        calls = tools_for_tests.calls("rate_limited_once")
        assert [c["attempt"] for c in calls] == [1, 2]
        # The plan alone would wait 1 s; the upstream asked for 1.5 s, and got it.
        assert next_delay(TOOL_RETRY_POLICIES["tool_default"], ErrorKind.RATE_LIMIT, 1) == 1.0
        assert calls[1]["at"] - calls[0]["at"] >= 1.5
        assert attempts(run.history, "run_tool") == [2]

    async def test_non_retryable_tool_error_reaches_the_model_at_once(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("not_found", {"query": "ord-000"}), text("That order does not exist."))
        run = await run_claude(harness, "find ord-000", "not_found")
        assert run.ok.status == "success"
        observed = tool_results(fake.requests[1])
        assert observed[0]["is_error"] is True and "nothing found for 'ord-000'" in observed[0]["content"]
        assert len(tools_for_tests.calls("not_found")) == 1
        assert attempts(run.history, "run_tool") == [1]


async def until(condition: Callable[[], Any], what: str, timeout: float = 20.0, explain: Callable[[], str] = str) -> None:
    """Poll ``condition()`` (sync or async) until it is true.

    Raises:
        AssertionError: after ``timeout`` seconds, naming ``what`` and adding ``explain()``.
    """
    for _ in range(int(timeout / 0.1)):
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:g}s\n{explain()}")


async def approval_pending(handle: WorkflowHandle[Any, AgentResult]) -> bool:
    """Whether the run waits for an approval now."""
    return bool((await handle.query("status", result_type=StatusView)).pending_approvals)


def wait_events() -> list[str]:
    """What the ``wait_for_cancel`` tool recorded: ``started``, then ``cancelled`` if it was."""
    return [c["event"] for c in tools_for_tests.calls("wait_for_cancel")]


class TestCancellation:
    """Cancelling a run stops it, cancels the activity in flight, and reports what was done."""

    async def test_cancel_while_a_tool_runs(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("echo", {"text": "first"}), tool_use("wait_for_cancel", {"seconds": 60}))
        async with harness.worker(claude("echo", "wait_for_cancel")):
            handle = await harness.start({"task": "wait"})
            await until(lambda: "started" in wait_events(), "the tool's start")
            await handle.cancel()
            result = await handle.result()
            # The tool learns of it through its heartbeat, while the worker still runs.
            await until(lambda: "cancelled" in wait_events(), "the tool's cancellation")
            history = await handle.fetch_history()
        assert result.status == "cancelled"
        assert result.steps == 2
        assert result.tools_used == ["echo", "wait_for_cancel"]
        assert result.usage.input_tokens == 200
        assert len(fake.requests) == 2, "no model call after the cancellation"
        assert len(events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED, "run_tool")) == 1

    async def test_cancel_while_the_model_thinks(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("echo", {"text": "first"}), text("too late", delay=30))
        async with harness.worker(claude("echo")):
            handle = await harness.start({"task": "think slowly"})
            await fake.wait_for_requests(2)
            await handle.cancel()
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "cancelled"
        assert result.steps == 1 and result.tools_used == ["echo"]
        assert len(events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED, "think")) == 1


class TestBadRuntimePayloads:
    """A malformed signal or update never harms the run."""

    async def test_malformed_signals_are_ignored_and_updates_rejected(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund order ord-789"})
            await until(lambda: approval_pending(handle), "the approval request")
            await handle.signal("approve", {"approval_id": 5, "bogus": True})
            await handle.signal("reject", "yes please")
            with pytest.raises(WorkflowUpdateFailedError) as rejected:
                await handle.execute_update("review", {"approved": "perhaps", "colour": "red"})
            status = await handle.query("status", result_type=StatusView)
            await handle.signal("approve", {"approval_id": status.pending_approvals[0].approval_id, "reviewer": "alice"})
            result = await handle.result()
            history = await handle.fetch_history()
        cause = rejected.value.cause
        assert isinstance(cause, ApplicationError)
        assert "invalid payload" in cause.message and "approved" in cause.message and "colour" in cause.message
        assert status.phase == "waiting_for_approval" and [p.approval_id[:6] for p in status.pending_approvals] == ["apr-3-"]
        ignored = [w for w in status.warnings if "invalid payload" in w]
        assert len(ignored) == 2
        assert "approve" in ignored[0] and "bogus" in ignored[0] and "reject" in ignored[1]
        assert result.status == "success"
        assert [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        assert events(history, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED) == []
        # A rejected update leaves no trace in history.
        assert events(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED) == []

