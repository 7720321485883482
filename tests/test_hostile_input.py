"""Hostile but fair input on a real Temporal server: nothing wedges a run or repeats a side effect.

Each case here once left a workflow task retrying for good, made a tool run again,
or let a meaningless value through (issue 14). The property every test checks: the
run either failed at once with a message naming the problem, or it is still
healthy (a proper approval later succeeds); and no workflow task ever failed
(a failed task shows as a ``WorkflowTaskFailed`` event in the history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pydantic
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from durable_agent import budget
from durable_agent.cli.worker import create_worker
from durable_agent.encryption import KeyRing, with_encryption
from durable_agent.schemas import AgentResult, StatusView
from durable_agent.store import ContentStore
from durable_agent.testing import answer, tool_use
from tests import tools_for_tests
from tests.conftest import ROOT, SUPPORT_PROFILE, Harness, make_config, subprocess_env, temporal_cli

CANCEL_1001 = {"task": "Cancel order ord-1001", "agent": "support"}
#: How long a healthy run may take to answer here; a wedged one never does.
PATIENCE = 30.0


# ---------------------------------------------------------------- helpers


def raw_json(data: bytes) -> RawValue:
    """A payload sent as JSON exactly as given, even when it is not valid JSON or UTF-8."""
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


async def failed_tasks(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The messages of the run's failed workflow tasks (none, when nothing wedged it)."""
    history = await handle.fetch_history()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def wait_pending(handle: WorkflowHandle[Any, Any]) -> StatusView:
    """The status once an approval waits; fails (rather than hangs) when the run is wedged."""

    async def poll() -> StatusView:
        while True:
            status = await handle.query("status", result_type=StatusView)
            if status.pending_approvals:
                return status
            assert status.phase != "done", status.answer
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(poll(), PATIENCE)


async def approve_properly(handle: WorkflowHandle[Any, Any]) -> AgentResult:
    """Approve the pending action with a well-formed ``review`` update; the run's result."""
    status = await wait_pending(handle)
    approval_id = status.pending_approvals[0].approval_id
    await asyncio.wait_for(
        handle.execute_update("review", {"approval_id": approval_id, "approved": True, "reviewer": "alice"}), PATIENCE
    )
    return await asyncio.wait_for(handle.result(), PATIENCE)


async def failure_of(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    """The run's failure, which must come at once (a wedged run never fails)."""
    try:
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), PATIENCE)
    finally:
        await _terminate_if_running(handle)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


async def _terminate_if_running(handle: WorkflowHandle[Any, Any]) -> None:
    description = await handle.describe()
    if description.status is not None and description.status.name == "RUNNING":
        await handle.terminate("test cleanup: the run was wedged")


async def start_raw(harness: Harness, *args: Any) -> WorkflowHandle[Any, Any]:
    return await harness.client.start_workflow(
        "AgentWorkflow", args=list(args), id=f"run-{uuid.uuid4().hex[:12]}", task_queue=harness.task_queue, result_type=AgentResult
    )


def cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([temporal_cli(), *args, "--address", address], capture_output=True, text=True, timeout=60, check=False)


def tools_profile(*tools: str, **overrides: Any) -> dict[str, Any]:
    return {"system_prompt": "You test tools.", "tools": list(tools), "autonomy": "autonomous", **overrides}


# ------------------------------------------------------------------ signals and updates


class TestMalformedDecisions:
    """A signal or update of any shape is refused by name; the run goes on and can still be approved."""

    async def test_two_payload_signal_from_the_cli(self, harness: Harness, server_address: str) -> None:
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            status = await wait_pending(handle)
            approval_id = status.pending_approvals[0].approval_id
            sent = await asyncio.to_thread(
                cli, server_address, "workflow", "signal", "--workflow-id", handle.id, "--name", "approve",
                "--input", json.dumps({"approval_id": approval_id, "reviewer": "bob"}), "--input", json.dumps({"x": 1}),
            )
            assert sent.returncode == 0, sent.stderr
            status = await wait_pending(handle)  # the run still answers queries
            assert any("approve takes one JSON object, got 2 payloads" in w for w in status.warnings), status.warnings
            result = await approve_properly(handle)
        assert result.status == "success"
        assert [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]
        assert await failed_tasks(handle) == []

    async def test_two_and_zero_payload_signals_from_the_client(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            status = await wait_pending(handle)
            approval_id = status.pending_approvals[0].approval_id
            await handle.signal("reject", args=[{"approval_id": approval_id}, {"approval_id": approval_id}])
            await handle.signal("approve", args=[raw_json(b'{"approval_id": "\xff\xfe"}')])
            await handle.signal("approve", args=[[1, 2, 3]])
            status = await wait_pending(handle)
            refused = [w for w in status.warnings if w.startswith("DECISION_REFUSED")]
            assert any("reject takes one JSON object, got 2 payloads" in w for w in refused), refused
            assert any("could not be decoded: it is not UTF-8 text" in w for w in refused), refused
            assert any("approve takes one JSON object, got an array" in w for w in refused), refused
            result = await approve_properly(handle)
        assert result.status == "success"
        assert await failed_tasks(handle) == []

    async def test_two_payload_review_update_is_refused_for_good(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            status = await wait_pending(handle)
            approval_id = status.pending_approvals[0].approval_id
            decision = {"approval_id": approval_id, "approved": True, "reviewer": "bob"}
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await asyncio.wait_for(handle.execute_update("review", args=[decision, {"x": 1}]), PATIENCE)
            cause = info.value.cause
            assert isinstance(cause, ApplicationError) and cause.non_retryable, cause
            assert "review takes one JSON object, got 2 payloads" in cause.message
            for payload, expected in (
                (raw_json(b'{"approved": true, "reviewer": "\xff"}'), "could not be decoded: it is not UTF-8 text"),
                (raw_json(b"not json"), "could not be decoded: it is not JSON"),
                ("yes", "review takes one JSON object, got a string"),
            ):
                with pytest.raises(WorkflowUpdateFailedError) as info:
                    await asyncio.wait_for(handle.execute_update("review", payload), PATIENCE)
                cause = info.value.cause
                assert isinstance(cause, ApplicationError) and cause.non_retryable
                assert expected in cause.message
            result = await approve_properly(handle)
        assert result.status == "success"
        assert await failed_tasks(handle) == []

    async def test_a_100_kb_reviewer_name_is_refused_by_its_limit(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            status = await wait_pending(handle)
            approval_id = status.pending_approvals[0].approval_id
            huge = "r" * 100_000
            await handle.signal("approve", {"approval_id": approval_id, "reviewer": huge})
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update("review", {"approval_id": approval_id, "approved": True, "comment": "c" * 5_000})
            cause = info.value.cause
            assert isinstance(cause, ApplicationError) and cause.non_retryable
            assert "comment: 5,000 characters, over the limit of 2,000 (MAX_COMMENT_CHARS)" in cause.message
            status = await wait_pending(handle)
            refused = [w for w in status.warnings if "reviewer: 100,000 characters, over the limit of 200 (MAX_NAME_CHARS)" in w]
            assert refused and all(len(w) < 500 for w in status.warnings), status.warnings
            result = await approve_properly(handle)
        assert [a.reviewer for a in result.approvals] == ["alice"]
        assert await failed_tasks(handle) == []

    async def test_queries_ignore_extra_arguments(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            await wait_pending(handle)
            status = await handle.query("status", args=[{"x": 1}, 2], result_type=StatusView)
            assert status.pending_approvals
            result = await approve_properly(handle)
        assert result.status == "success"


class TestEncryptedGarbage:
    """With payload encryption on, garbage claiming to be encrypted is refused by name, not a wedge."""

    async def test_garbage_signal_and_start_input(self, harness: Harness) -> None:
        ring = KeyRing([("k1", os.urandom(32))])
        encrypted = Client(**{**harness.client.config(), "data_converter": with_encryption(pydantic_data_converter, ring)})
        garbage = RawValue(Payload(metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"k1"}, data=b"not a ciphertext"))
        worker = create_worker(encrypted, make_config(), task_queue=harness.task_queue, store=harness.store, max_cached_workflows=0)
        async with worker:
            handle = await encrypted.start_workflow(
                "AgentWorkflow", CANCEL_1001, id=f"run-{uuid.uuid4().hex[:12]}", task_queue=harness.task_queue, result_type=AgentResult
            )
            status = await wait_pending(handle)
            # Sent without the codec, so it arrives as it is: a payload the worker's codec cannot decrypt.
            await harness.client.get_workflow_handle(handle.id).signal("approve", garbage)
            status = await wait_pending(handle)
            assert any("could not be decoded by the payload codec" in w and "does not verify" in w for w in status.warnings), status.warnings
            result = await approve_properly(handle)
            started = await start_raw(harness, garbage)
            # The failure is encrypted too (its message as well): read it through the codec.
            failure = await failure_of(encrypted.get_workflow_handle(started.id, result_type=AgentResult))
        assert result.status == "success"
        assert await failed_tasks(handle) == []
        assert "could not be decoded by the payload codec" in failure.message, failure.message
        assert await failed_tasks(started) == []


class TestSharedEntities:
    """The budget ledger and the rate limiter take any payloads too: refused by name, never wedged."""

    async def test_ledger_refuses_malformed_updates_and_goes_on(self, harness: Harness) -> None:
        # Today: a ledger of a day gone by closes at once (and refuses updates as a closed ledger).
        day = budget.day_of(datetime.now(timezone.utc))
        start = {"agent": "support", "day": day, "limit_usd": 5.0}
        reserve = {"agent": "support", "day": day, "limit_usd": 5.0, "reservation_id": "r-1", "amount_usd": 1.0}
        async with harness.worker():
            ledger = await harness.client.start_workflow("BudgetLedger", start, id=f"ledger-{uuid.uuid4().hex[:8]}", task_queue=harness.task_queue)
            for payloads, expected in (
                ([reserve, {"x": 1}], "reserve takes one JSON object, got 2 payloads"),
                ([raw_json(b'{"agent": "\xff"}')], "could not be decoded: it is not UTF-8 text"),
                ([{**reserve, "amount_usd": "Infinity"}], "amount_usd: must be a finite number"),
            ):
                with pytest.raises(WorkflowUpdateFailedError) as info:
                    await asyncio.wait_for(ledger.execute_update("reserve", args=payloads), PATIENCE)
                cause = info.value.cause
                assert isinstance(cause, ApplicationError) and cause.non_retryable and expected in cause.message, cause
            granted = await asyncio.wait_for(ledger.execute_update("reserve", reserve), PATIENCE)
            state = await ledger.query("state", args=[{"extra": True}])
            await ledger.terminate("test done")
        assert granted["granted"] is True and state["limit_usd"] == 5.0
        assert await failed_tasks(ledger) == []

    @pytest.mark.parametrize("workflow", ["BudgetLedger", "RateLimiter"])
    async def test_an_entity_started_with_junk_fails_at_once(self, harness: Harness, workflow: str) -> None:
        async with harness.worker():
            handle = await harness.client.start_workflow(
                workflow, args=[raw_json(b'{"agent": 5, "tool": [1]}'), {"x": 1}], id=f"entity-{uuid.uuid4().hex[:8]}", task_queue=harness.task_queue
            )
            failure = await failure_of(handle)
        assert failure.non_retryable and f"{workflow} takes one JSON object, got 2 payloads" in failure.message, failure.message
        assert await failed_tasks(handle) == []


# ------------------------------------------------------------------ start input


class TestStartInput:
    """A start input the run cannot use fails the run at once, naming the problem; no task retries."""

    @pytest.mark.parametrize(
        ("payload", "expected"),
        [
            (b'{"task": "Cancel order \xff\xfe"}', "could not be decoded: it is not UTF-8 text"),
            (b'{"task": "Cancel order \\ud800"}', "task: contains a lone surrogate"),
            (
                b'{"task": "x", "metadata": ' + b'{"a": ' * 200 + b"1" + b"}" * 200 + b"}",
                "metadata: nested 200 levels deep, over the limit of 32 (MAX_METADATA_DEPTH)",
            ),
            (b'{"task": "x", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", "could not be decoded: its JSON nests too deeply"),
            (b"[1, 2", "could not be decoded: it is not JSON"),
            (b'"just a string"', "expected a JSON object, got a string"),
            (b'{"task": "x", "budget_usd": "Infinity"}', 'budget_usd: must be a JSON number, not the string "Infinity"'),
            (b'{"task": "x", "budget_usd": NaN}', "budget_usd: must be a finite number"),
            (b'{"task": "x", "max_steps": 1e400}', "max_steps"),
            # Issue 23: the field meant, and numbers in quotes refused (they were read as numbers).
            (b'{"task": "x", "budget": 1}', "budget: unknown field; did you mean 'budget_usd'?"),
            (b'{"task": "x", "budget_usd": "1.00"}', 'budget_usd: must be a JSON number, not the string "1.00"'),
            (b'{"task": "x", "max_steps": "5", "budget_usd": true}', 'budget_usd: must be a JSON number, not true; max_steps: must be a JSON number, not the string "5"'),
        ],
        ids=[
            "not-utf8", "lone-surrogate", "metadata-200-deep", "5000-deep", "not-json", "a-string", "infinite-budget", "nan-budget",
            "huge-number", "typo", "number-as-text", "numbers-as-text-and-bool",
        ],
    )
    async def test_undecodable_or_meaningless_input_fails_at_once(self, harness: Harness, payload: bytes, expected: str) -> None:
        async with harness.worker():
            handle = await start_raw(harness, raw_json(payload))
            failure = await failure_of(handle)
        assert "invalid AgentWorkflow input" in failure.message and expected in failure.message, failure.message
        assert failure.non_retryable
        assert await failed_tasks(handle) == []

    async def test_a_task_over_its_limit_is_refused_by_name(self, harness: Harness) -> None:
        """A 1 MB task runs (tests/test_large_task.py); one character more than the limit is refused at once."""
        async with harness.worker():
            handle = await harness.start({"task": "Look up order ord-789 " + "x" * 1_000_001, "agent": "support"})
            failure = await failure_of(handle)
        assert "task: 1,000,023 characters, over the limit of 1,000,000 (MAX_TASK_CHARS)" in failure.message
        assert await failed_tasks(handle) == []

    async def test_large_metadata_is_refused_by_its_limit(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "x", "metadata": {"blob": "m" * 100_000}})
            failure = await failure_of(handle)
        assert "metadata: 100,011 bytes of JSON, over the limit of 65,536 (MAX_METADATA_BYTES)" in failure.message

    async def test_a_second_argument_cannot_pose_as_a_continuation(self, harness: Harness) -> None:
        """Only a continue-as-new may hand a run its state; a start that tries is refused."""
        async with harness.worker():
            handle = await start_raw(harness, {"task": "x"}, {"step": 5})
            failure = await failure_of(handle)
        assert "takes one JSON object" in failure.message
        assert await failed_tasks(handle) == []


# ------------------------------------------------------------------ continue-as-new


class TestCarriedState:
    """What a run carries into its continuation stays under Temporal's payload limit."""

    async def test_huge_tool_arguments_survive_continue_as_new(self, harness: Harness) -> None:
        big = "y" * 1_200_000
        model, _ = harness.scripted([tool_use("echo", {"text": big}), tool_use("echo", {"text": big + "z"}), answer("done")])
        config = make_config({"tester": tools_profile("echo", model=model, continue_as_new_every=2)})
        async with harness.worker(config):
            handle = await harness.start({"task": "Echo a lot", "agent": "tester"})
            result = await asyncio.wait_for(handle.result(), PATIENCE * 2)
            trace = await handle.query("trace")
        assert (result.status, result.steps, result.answer) == ("success", 3, "done")
        assert await failed_tasks(handle) == []
        # The records carried over keep their place; the trace keeps them slim (no cut was needed to carry
        # them), the arguments whole in the store and the trace sink.
        assert [r["step"] for r in trace] == [1, 2, 3]
        assert "1,200,011 bytes of arguments" in trace[0]["action"]["args"]["_cut"]
        sink = [json.loads(line) for line in (harness.state / "trace.jsonl").read_text().splitlines()]
        assert [len(r["action"]["args"]["text"]) for r in sink if r["action"]["type"] == "tool_call"] == [1_200_000, 1_200_001]


    async def test_large_arguments_are_cut_from_an_approval_notice(self, harness: Harness) -> None:
        """The reviewer's notice carries the last steps: their large arguments are cut, so it stays under the payload limit."""
        big = "q" * 300_000
        script = [tool_use("search_kb", {"query": big}), tool_use("search_kb", {"query": big + "r"}), tool_use("cancel_order", {"order_id": "ord-1001"}), answer("done")]
        model, _ = harness.scripted(script)
        async with harness.worker():
            handle = await harness.start({**CANCEL_1001, "model": model})
            status = await wait_pending(handle)
            context = status.pending_approvals[0].context
            assert [c["step"] for c in context] == [1, 2] and all("_cut" in c["action"]["args"] for c in context), context
            result = await approve_properly(handle)
        assert result.status == "success"
        assert await failed_tasks(handle) == []


# ------------------------------------------------------------------ tool results


class TestToolResults:
    """A tool whose result JSON cannot hold runs once; its result is converted and the change is said."""

    @pytest.mark.parametrize(("tool", "args", "marker"), [("tuple_keys", {"order_id": "ord-1"}, "tuple keys"), ("circular", {}, "circular reference")])
    async def test_unserializable_result_runs_the_tool_once(self, harness: Harness, tool: str, args: dict[str, Any], marker: str) -> None:
        model, scripted = harness.scripted([tool_use(tool, args), answer("done")])
        config = make_config({"tester": tools_profile(tool, model=model)})
        async with harness.worker(config):
            handle = await harness.start({"task": "Use the tool", "agent": "tester"})
            result = await asyncio.wait_for(handle.result(), PATIENCE)
            trace = await handle.query("trace")
        assert len(tools_for_tests.calls(tool)) == 1
        assert result.status == "success"
        observation = trace[0]["observation"]
        assert observation["status"] == "ok", observation
        assert any(marker in w for w in trace[0]["warnings"]), trace[0]["warnings"]
        assert any(marker in w for w in result.warnings), result.warnings
        seen = scripted.last_tool_result()
        assert seen is not None and not seen.get("is_error")
        assert await failed_tasks(handle) == []


    async def test_a_result_that_cannot_be_stored_does_not_run_the_tool_again(self, harness: Harness) -> None:
        """The store fails after the tool did its work: the model gets the preview, the tool is not run again."""

        class ResultsStoreDown(ContentStore):
            async def put(self, value: Any) -> str:
                if isinstance(value, dict) and "output" in value:
                    raise OSError(28, "No space left on device")
                return await super().put(value)

        harness.store = ResultsStoreDown(harness.state / "content")
        model, scripted = harness.scripted([tool_use("echo", {"text": "refund issued"}), answer("done")])
        async with harness.worker(make_config({"tester": tools_profile("echo", model=model)})):
            handle = await harness.start({"task": "Echo once", "agent": "tester"})
            result = await asyncio.wait_for(handle.result(), PATIENCE)
        assert len(tools_for_tests.calls("echo")) == 1
        assert result.status == "success"
        assert any(w.startswith("step 1: RESULT_NOT_STORED") for w in result.warnings), result.warnings
        seen = scripted.last_tool_result()
        assert seen is not None and "refund issued" in seen["content"] and "could not be stored" in seen["content"], seen
        assert await failed_tasks(handle) == []


# ------------------------------------------------------------------ numbers


class TestNumbers:
    """Infinity and NaN are refused by name wherever a number is configured."""

    @pytest.mark.parametrize("field", ["max_amount", "timeout_seconds"])
    def test_profile_numbers_must_be_finite(self, field: str) -> None:
        with pytest.raises(pydantic.ValidationError) as info:
            make_config({"support": {**SUPPORT_PROFILE, "approval": {**SUPPORT_PROFILE["approval"], field: float("inf")}}})
        assert "finite number" in str(info.value) and field in str(info.value)


    @pytest.mark.parametrize("amount", [float("inf"), float("nan"), "Infinity", "NaN"])
    def test_tool_arguments_must_be_finite(self, amount: object) -> None:
        from durable_agent.errors import InvalidToolArguments
        from durable_agent.tools import registry

        refund = registry.get("issue_refund")
        assert refund is not None
        with pytest.raises(InvalidToolArguments, match="amount: Input should be a finite number"):
            refund.validate({"order_id": "ord-789", "amount": amount, "currency": "USD"})


# ------------------------------------------------------------------ starter


def _listen_on_free_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.slow
class TestStarterPortTaken:
    """When the port is taken by something that is not Temporal, the starter says so and what to do."""

    def test_port_taken_by_another_program(self, tmp_path: Path) -> None:
        blocker = subprocess.Popen(
            [sys.executable, "-c", "import socket,time\ns=socket.socket();s.bind(('127.0.0.1',0));s.listen();print(s.getsockname()[1],flush=True);time.sleep(120)"],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert blocker.stdout is not None
            port = int(blocker.stdout.readline())
            env = subprocess_env(tmp_path, f"127.0.0.1:{port}")
            done = subprocess.run(
                [sys.executable, str(ROOT / "starter.py"), "Look up order ord-789", "--no-prompt"],
                env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
            )
        finally:
            blocker.kill()
            blocker.wait()
        assert done.returncode != 0
        message = done.stderr
        assert f"127.0.0.1:{port}" in message and "in use" in message, message
        assert "is not a Temporal server" in message, message
        assert f"pid {blocker.pid}" in message, message
        assert "TEMPORAL_ADDRESS" in message and "--port" in message, message

    def test_embedded_server_that_cannot_start_says_why(self, tmp_path: Path) -> None:
        """The UI port taken: the dev server exits, and the starter prints the server's own reason."""
        with contextlib.closing(_listen_on_free_port()) as probe:
            port = probe.getsockname()[1]
        if port + 1000 > 65535:
            pytest.skip("no room for the UI port above this free port")
        with contextlib.closing(socket.socket()) as ui_blocker:
            ui_blocker.bind(("127.0.0.1", port + 1000))
            ui_blocker.listen()
            env = subprocess_env(tmp_path, "127.0.0.1:7233")
            done = subprocess.run(
                [sys.executable, str(ROOT / "starter.py"), "Look up order ord-789", "--no-prompt", "--port", str(port)],
                env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
            )
        assert done.returncode != 0
        assert f"could not start on 127.0.0.1:{port}" in done.stderr, done.stderr
        assert "address already in use" in done.stderr.lower(), done.stderr
        assert "TEMPORAL_ADDRESS" in done.stderr and "--port" in done.stderr
