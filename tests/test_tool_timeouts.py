"""A tool that changes the world and times out is not run again: the model is told its outcome is unknown.

A timed-out attempt may have done its work (a payment made, its confirmation
slow). Running it again could do it twice, so only read-only tools and tools
declared ``idempotent=True`` are retried after a timeout, whether the tool's own
``timeout=`` ran out or Temporal's start-to-close timeout of the activity did. On a
real Temporal server with the real ``anthropic`` client against the fake API.
"""

from __future__ import annotations


from temporalio.api.enums.v1 import EventType, RetryState

from durable_agent.demo import shop
from tests import tools_for_tests
from tests.conftest import Harness
from tests.fake_anthropic import FakeAnthropic, text, tool_use
from tests.test_failures import attempts, events, run_claude, tool_results


def events_of(tool: str) -> list[str]:
    return [c["event"] for c in tools_for_tests.calls(tool)]


class TestToolTimeouts:
    """A timeout repeats no side effect, and the model and the record say the outcome is unknown."""

    async def test_a_payment_that_times_out_is_made_once_and_reported_unknown(self, harness: Harness, fake_api: FakeAnthropic) -> None:
        fake_api.script(tool_use("pay_slowly", {"account": "acc-1", "amount": 10.0}), text("I could not confirm the payment."))
        run = await run_claude(harness, "Pay 10 to acc-1", "pay_slowly")
        assert run.ok.status == "success"
        assert events_of("pay_slowly") == ["paid"]
        assert attempts(run.history, "run_tool") == [1]
        observed = tool_results(fake_api.requests[1])
        assert observed[0]["is_error"] is True
        assert observed[0]["content"].startswith("OUTCOME UNKNOWN: pay_slowly timed out after 2s")
        assert "unavailable" not in observed[0]["content"]
        assert run.trace[0].observation["status"] == "outcome_unknown"
        assert run.ok.tools_used == ["pay_slowly"]

    async def test_an_idempotent_tool_is_retried_and_pays_once(self, harness: Harness, fake_api: FakeAnthropic) -> None:
        fake_api.script(tool_use("pay_once_per_key", {"account": "acc-2", "amount": 5.0}), text("Paid."))
        run = await run_claude(harness, "Pay 5 to acc-2", "pay_once_per_key")
        assert run.ok.status == "success"
        # The retry found the payment the timed-out attempt made, under the same key.
        assert events_of("pay_once_per_key") == ["paid", "found"]
        assert len({c["key"] for c in tools_for_tests.calls("pay_once_per_key")}) == 1
        assert attempts(run.history, "run_tool") == [2]
        assert run.trace[0].observation["status"] == "ok"
        assert '"replayed": true' in tool_results(fake_api.requests[1])[0]["content"]

    async def test_a_tool_hung_past_its_activity_timeout_is_not_retried_by_temporal(self, harness: Harness, fake_api: FakeAnthropic) -> None:
        # A synchronous tool cannot be interrupted: it holds its activity past timeout + 30 s.
        fake_api.script(tool_use("transfer_then_hang", {"account": "acc-3", "seconds": 34.0}), text("The transfer's outcome is unknown."))
        run = await run_claude(harness, "Transfer to acc-3", "transfer_then_hang")
        assert run.ok.status == "success"
        assert events_of("transfer_then_hang") == ["transferred"]
        assert attempts(run.history, "run_tool") == [1]
        [timed_out] = events(run.history, EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT)  # the tool's, the only one
        # Temporal's own decision: a start-to-close timeout of this tool is not retried.
        assert timed_out.activity_task_timed_out_event_attributes.retry_state == RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
        [scheduled] = events(run.history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, "run_tool")
        policy = scheduled.activity_task_scheduled_event_attributes.retry_policy
        assert list(policy.non_retryable_error_types) == ["TemporalTimeout:StartToClose"]  # the server's name for it
        assert scheduled.activity_task_scheduled_event_attributes.heartbeat_timeout.seconds > 0  # a dead worker is still retried
        observed = tool_results(fake_api.requests[1])
        assert observed[0]["is_error"] is True and observed[0]["content"].startswith("OUTCOME UNKNOWN: transfer_then_hang")
        assert run.trace[0].observation["status"] == "outcome_unknown"


class TestDeclarations:
    """The demo shop's world-changing tools honour their idempotency keys, so they may run again."""

    def test_refund_and_cancel_are_declared_idempotent(self) -> None:
        for fn in (shop.issue_refund, shop.cancel_order):
            info = fn.__durable_agent_tool__  # type: ignore[attr-defined]
            assert info.idempotent and not info.read_only and info.repeatable
