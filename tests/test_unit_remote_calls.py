"""Remote tool calls and the tools resolved again at continue-as-new, without a server (tests/workflow_host.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError, TimeoutType
from temporalio.workflow import ActivityCancellationType

from durable_agent import contracts
from durable_agent.remote_tools import RemoteToolConfig, tool_info
from durable_agent.observations import Observation
from durable_agent.schemas import ToolCall, ToolCallOutput
from durable_agent.workflows.conversation import Conversation
from durable_agent.workflows.host import PATCH_CANCEL_OUTLASTS_FAILURE
from durable_agent.workflows.remote_calls import RemoteCalls, remote_options
from tests.component_kit import TOOLS, profile, settings
from tests.workflow_host import FakeHost, activity_failure

SCHEMA = {"type": "object", "properties": {"to": {"type": "string"}}}


def remote(**keys: Any) -> RemoteToolConfig:
    return RemoteToolConfig.model_validate(
        {"task_queue": "payments", "activity": "Transfer", "description": "Move money.", "input_schema": SCHEMA, **keys}
    )


def failed_with(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed", scheduled_event_id=1, started_event_id=2, identity="w", activity_type="Transfer", activity_id="k",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    error.__cause__ = cause
    return error


def raising(exc: BaseException) -> Any:
    def answer(_: Any) -> Any:
        raise exc

    return answer


CALL = ToolCall(id="toolu_1", name="transfer", args={"to": "acc-9"})


async def observation_of(
    host: FakeHost, cancellation: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL, **keys: Any
) -> Observation:
    """One remote call, as the run observes it."""
    conversation = Conversation(host, settings())
    return await RemoteCalls(host, conversation).call(
        CALL, tool_info("transfer", remote(**keys)), "wf-1/first-run/1/0/toolu_1", approval_id=None, slot=None,
        cancellation=cancellation,
    )


async def observe(host: FakeHost, **keys: Any) -> tuple[str, str]:
    """The status of one remote call and what the model was told of it."""
    observation = await observation_of(host, **keys)
    return observation.status, observation.message or observation.result_preview or ""


class TestOptions:
    """What the remote activity is scheduled with."""

    def test_defaults_bound_the_wait_for_a_worker_and_set_no_heartbeat_timeout(self) -> None:
        info = tool_info("transfer", remote(timeout=20))
        assert info.remote is not None
        options = remote_options(CALL, info, info.remote, "key", ActivityCancellationType.TRY_CANCEL)
        assert options["task_queue"] == "payments" and options["activity_id"] == "key"
        assert options["start_to_close_timeout"] == timedelta(seconds=20)
        assert options["schedule_to_start_timeout"] == timedelta(seconds=20)
        assert "heartbeat_timeout" not in options
        # Not idempotent, changes the world: a timed-out attempt is not run again.
        assert options["retry_policy"].non_retryable_error_types

    def test_a_configured_heartbeat_and_schedule_to_start_are_used(self) -> None:
        info = tool_info("transfer", remote(heartbeat=5, schedule_to_start=3, idempotent=True))
        assert info.remote is not None
        options = remote_options(CALL, info, info.remote, "key", ActivityCancellationType.TRY_CANCEL)
        assert options["heartbeat_timeout"] == timedelta(seconds=5)
        assert options["schedule_to_start_timeout"] == timedelta(seconds=3)
        assert not options["retry_policy"].non_retryable_error_types


class TestOutcomes:
    """Each way a remote call ends, as the model is told it."""

    async def test_the_result_is_stored_by_a_local_activity(self) -> None:
        stored = ToolCallOutput(status="ok", ref="sha256:r", preview='{"ok": true}', chars=12)
        host = FakeHost({"Transfer": {"ok": True}, contracts.ACTIVITY_STORE_REMOTE_RESULT: stored})
        assert await observe(host) == ("ok", '{"ok": true}')
        assert host.names() == ["Transfer", contracts.ACTIVITY_STORE_REMOTE_RESULT]
        assert host.calls[1][1].value == {"ok": True}

    async def test_a_result_the_store_cannot_take_still_reaches_the_model(self) -> None:
        host = FakeHost({"Transfer": {"ok": True}, contracts.ACTIVITY_STORE_REMOTE_RESULT: raising(activity_failure("store down"))})
        assert await observe(host) == ("ok", '{"ok": true}')

    async def test_no_worker_picking_it_up_is_unavailable(self) -> None:
        timed_out = TimeoutError("timed out", type=TimeoutType.SCHEDULE_TO_START, last_heartbeat_details=[])
        status, text = await observe(FakeHost({"Transfer": raising(failed_with(timed_out))}), schedule_to_start=2)
        assert status == "unavailable" and "no worker of task queue 'payments' picked the call up within 2 s" in text

    async def test_a_world_changing_call_that_timed_out_has_an_unknown_outcome(self) -> None:
        timed_out = TimeoutError("timed out", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
        status, _ = await observe(FakeHost({"Transfer": raising(failed_with(timed_out))}))
        assert status == "outcome_unknown"

    async def test_a_read_only_call_that_timed_out_is_unavailable(self) -> None:
        timed_out = TimeoutError("timed out", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
        status, _ = await observe(FakeHost({"Transfer": raising(failed_with(timed_out))}), read_only=True)
        assert status == "unavailable"

    async def test_a_non_retryable_error_is_the_tools_answer(self) -> None:
        refused = ApplicationError("account acc-9 is closed", non_retryable=True)
        status, text = await observe(FakeHost({"Transfer": raising(failed_with(refused))}))
        assert status == "error" and "account acc-9 is closed" in text


class TestCancelledWhileItRan:
    """A world-changing call the run waited for through its cancel: recorded, then the run ends cancelled."""

    WAITED = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED

    async def test_a_result_ends_the_run(self) -> None:
        stored = ToolCallOutput(status="ok", ref="sha256:r", preview="{}", chars=2)
        host = FakeHost({"Transfer": {"ok": True}, contracts.ACTIVITY_STORE_REMOTE_RESULT: stored})
        host.cancelled = True
        observation = await observation_of(host, self.WAITED)
        assert (observation.status, observation.run_cancelled) == ("ok", True)
        assert host.patches == [], "a result always ended the run: nothing to patch"

    async def test_a_failure_ends_the_run_too(self) -> None:
        host = FakeHost({"Transfer": raising(failed_with(ApplicationError("link dropped")))})
        host.cancelled = True
        observation = await observation_of(host, self.WAITED)
        assert (observation.status, observation.run_cancelled) == ("unavailable", True)
        assert host.patches == [PATCH_CANCEL_OUTLASTS_FAILURE]

    async def test_a_run_begun_before_the_rule_asks_the_model_again(self) -> None:
        host = FakeHost({"Transfer": raising(failed_with(ApplicationError("link dropped")))}, unpatched=[PATCH_CANCEL_OUTLASTS_FAILURE])
        host.cancelled = True
        assert not (await observation_of(host, self.WAITED)).run_cancelled

    async def test_a_failure_without_a_cancel_asks_no_patch(self) -> None:
        host = FakeHost({"Transfer": raising(failed_with(ApplicationError("link dropped")))})
        observation = await observation_of(host, self.WAITED)
        assert not observation.run_cancelled and host.patches == []


class TestToolsResolvedAgain:
    """A continuation takes a fresh tool catalogue, and keeps the rest of its profile."""

    async def test_the_tools_and_prompt_are_replaced_and_new_warnings_said(self) -> None:
        run = settings()
        fresh = profile(tools=TOOLS[:1], prompt_ref="sha256:new", prompt_tokens=99, model="other", warnings=["MCP_SERVER_UNAVAILABLE: x"])
        host = FakeHost({contracts.ACTIVITY_RESOLVE_AGENT: fresh})
        warnings = await run.refresh_tools(host)
        assert warnings == ["MCP_SERVER_UNAVAILABLE: x"]
        assert [t.name for t in run.profile.tools] == ["lookup_order"] and run.profile.prompt_ref == "sha256:new"
        assert run.profile.model == "claude-haiku-4-5"  # the model stays as the chain began
        assert host.calls[0][1].agent == "unit-support"

    async def test_a_failure_keeps_the_carried_tools(self) -> None:
        run = settings()
        host = FakeHost({contracts.ACTIVITY_RESOLVE_AGENT: raising(activity_failure("unknown agent profile"))})
        warnings = await run.refresh_tools(host)
        assert len(warnings) == 1 and warnings[0].startswith("TOOLS_NOT_REFRESHED") and "unknown agent profile" in warnings[0]
        assert [t.name for t in run.profile.tools] == [t.name for t in TOOLS]
