"""The agent loop on a real Temporal server: runs, limits, bad input, queries."""

from __future__ import annotations

import json

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from durable_agent.demo import shop
from durable_agent.schemas import DecisionRecord, StatusView
from durable_agent.testing import answer, tool_use
from tests.conftest import Harness, make_config


async def _failure_message(handle) -> str:
    with pytest.raises(WorkflowFailureError) as info:
        await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


class TestOfflineDemo:
    """The offline model drives the support demo through a real multi-step run."""

    async def test_small_refund_runs_to_success(self, harness: Harness) -> None:
        async with harness.worker():
            result = await harness.run({"task": "Refund 20 USD on order ord-789", "agent": "support"})
        assert result.status == "success"
        assert result.tools_used == ["lookup_order", "search_kb", "issue_refund"]
        assert result.steps == 4
        assert "offline model" in (result.answer or "")
        assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
        refunds = shop.refunds_for("ord-789")
        assert [r["amount"] for r in refunds] == [20.0]

    async def test_trace_has_one_record_per_step_in_query_and_sink(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund 20 USD on order ord-789"})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        assert [r.step for r in records] == [1, 2, 3, 4]
        assert [r.action.type for r in records] == ["tool_call"] * 3 + ["final_answer"]
        assert [r.action.tool for r in records[:3]] == result.tools_used
        assert records[0].observation["status"] == "ok"
        assert all(r.session_id == handle.id and r.agent_id == "support" for r in records)
        lines = [json.loads(line) for line in (harness.state / "trace.jsonl").read_text().splitlines()]
        mine = [line for line in lines if line["session_id"] == handle.id]
        # Workers replay every task (max_cached_workflows=0), yet no record is written twice.
        assert [line["step"] for line in mine] == [1, 2, 3, 4]


class TestScriptedRuns:
    """Runs driven by a scripted model: the loop's own behaviour."""

    async def test_multi_step_run_counts_usage_and_cost(self, harness: Harness) -> None:
        model, scripted = harness.scripted(
            [tool_use("echo", {"text": "hi", "times": 2}), tool_use("echo", {"text": "yo"}), answer("done: hi hi, yo")]
        )
        config = make_config(
            {"helper": {"tools": ["echo"], "model": model}},
            pricing={"models": {model: {"input": 3.0, "output": 15.0}}},
        )
        async with harness.worker(config):
            result = await harness.run({"task": "say hi"})
        assert result.status == "success"
        assert result.answer == "done: hi hi, yo"
        assert result.steps == 3
        assert result.tools_used == ["echo", "echo"]
        assert result.usage.input_tokens == 3000 and result.usage.output_tokens == 300
        assert result.total_cost == pytest.approx(3 * (1000 * 3.0 + 100 * 15.0) / 1e6)
        # The model saw the first tool's real output.
        assert scripted.requests[1].messages[-1]["content"][0]["content"] == "hi hi"

    async def test_two_activities_and_two_workflow_tasks_a_step_and_every_record_once(self, harness: Harness) -> None:
        """A step is a think and a tool call: its records ride with the next think, the last ones go at the end."""
        model, _ = harness.scripted([tool_use("echo", {"text": f"hop {n}"}) for n in range(9)] + [answer("done")])
        async with harness.worker(make_config({"helper": {"tools": ["echo"], "model": model}})):
            handle = await harness.start({"task": "hop nine times"})
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "success" and result.steps == 10
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        assert {name: scheduled.count(name) for name in set(scheduled)} == {
            "resolve_agent": 1, "think": 10, "run_tool": 9, "record_decisions": 1
        }
        tasks = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
        assert len(tasks) <= 2 * 10 + 2
        lines = [json.loads(line) for line in (harness.state / "trace.jsonl").read_text().splitlines()]
        assert [line["step"] for line in lines if line["session_id"] == handle.id] == list(range(1, 11))

    async def test_records_a_think_could_not_write_are_written_later_and_no_call_is_made_twice(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from durable_agent import trace

        publish, failures = trace.publish, []

        async def store_down_once(store, record):  # the first write fails, as a store hiccup would
            if not failures:
                failures.append(record.record_id)
                raise OSError("store unreachable")
            return await publish(store, record)

        monkeypatch.setattr(trace, "publish", store_down_once)
        model, scripted = harness.scripted([tool_use("echo", {"text": "a"}), tool_use("echo", {"text": "b"}), answer("done")])
        async with harness.worker(make_config({"helper": {"tools": ["echo"], "model": model}})):
            handle = await harness.start({"task": "echo twice"})
            result = await handle.result()
        assert result.status == "success" and len(scripted.requests) == 3 and failures
        lines = [json.loads(line) for line in (harness.state / "trace.jsonl").read_text().splitlines()]
        assert [line["step"] for line in lines if line["session_id"] == handle.id] == [1, 2, 3]

    async def test_max_steps_exceeded(self, harness: Harness) -> None:
        model, _ = harness.scripted([tool_use("echo", {"text": str(i)}) for i in range(5)])
        config = make_config({"helper": {"tools": ["echo"], "model": model}})
        async with harness.worker(config):
            result = await harness.run({"task": "loop", "max_steps": 3})
        assert result.status == "max_steps_exceeded"
        assert result.steps == 3
        assert result.tools_used == ["echo"] * 3

    async def test_bad_tool_arguments_go_back_to_the_model(self, harness: Harness) -> None:
        model, scripted = harness.scripted(
            [tool_use("echo", {"text": "hi", "times": "many"}), tool_use("echo", {"wrong": 1}), answer("gave up")]
        )
        config = make_config({"helper": {"tools": ["echo"], "model": model}})
        async with harness.worker(config):
            handle = await harness.start({"task": "say hi"})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "success"
        assert [r.observation["status"] for r in records[:2]] == ["invalid_arguments", "invalid_arguments"]
        first = scripted.requests[1].messages[-1]["content"][0]
        assert first["is_error"] is True and "times" in first["content"]
        second = scripted.requests[2].messages[-1]["content"][0]
        assert "text" in second["content"] and "wrong" in second["content"]

    async def test_unknown_tool_goes_back_to_the_model(self, harness: Harness) -> None:
        model, scripted = harness.scripted([tool_use("launch_rockets", {}), answer("ok")])
        config = make_config({"helper": {"tools": ["echo"], "model": model}})
        async with harness.worker(config):
            result = await harness.run({"task": "x"})
        assert result.status == "success"
        block = scripted.requests[1].messages[-1]["content"][0]
        assert block["is_error"] is True
        assert "launch_rockets" in block["content"] and "echo" in block["content"]
        assert result.tools_used == []


class TestBadInput:
    """A malformed input fails the run at once, naming the field; no workflow task retries forever."""

    @pytest.mark.parametrize(
        ("request_body", "expected"),
        [
            ({"agent": "support"}, "task: Field required"),
            ({"task": 42}, "task: Input should be a valid string"),
            ({"task": "x", "max_steps": "lots"}, "max_steps"),
            ({"task": "x", "colour": "blue"}, "colour: unknown field"),
            ({"task": "x", "autonomy": "reckless"}, "autonomy"),
            ("just a string", "expected a JSON object"),
        ],
    )
    async def test_invalid_input_names_the_field(self, harness: Harness, request_body, expected: str) -> None:
        async with harness.worker():
            handle = await harness.client.start_workflow(
                "AgentWorkflow", request_body, id=f"bad-{harness.task_queue}", task_queue=harness.task_queue
            )
            message = await _failure_message(handle)
        assert expected in message
        assert "invalid AgentWorkflow input" in message

    async def test_unknown_profile_fails_fast(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "x", "agent": "nobody"})
            message = await _failure_message(handle)
            history = await handle.fetch_history()
        assert "unknown agent profile 'nobody'" in message and "support" in message
        failed_tasks = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
        assert failed_tasks == []


class TestQueriesAndHistory:
    """What people see while a run is going, and what it costs in history."""

    async def test_status_query_while_waiting_and_after(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund order ord-789"})
            for _ in range(100):
                status = await handle.query("status", result_type=StatusView)
                if status.pending_approvals:
                    break
                import asyncio

                await asyncio.sleep(0.1)
            assert status.phase == "waiting_for_approval"
            assert status.step == 3
            assert status.tools_used == ["lookup_order", "search_kb"]
            pending = status.pending_approvals[0]
            assert pending.tool == "issue_refund" and pending.args["amount"] == 4999.0
            await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice"})
            result = await handle.result()
            final = await handle.query("status", result_type=StatusView)
        assert result.status == "success"
        assert final.phase == "done" and final.status == "success"
        assert final.budget_remaining is None

    @pytest.mark.slow  # a run of many steps
    async def test_history_bytes_per_step_stay_flat(self, harness: Harness) -> None:
        """Tool output of 8 KB a step must not be copied into history again at every step."""
        steps = 30
        model, _ = harness.scripted([tool_use("big_output", {"size": 8000}) for _ in range(steps)] + [answer("done")])
        config = make_config({"helper": {"tools": ["big_output"], "model": model}})
        async with harness.worker(config):
            handle = await harness.start({"task": "grow", "max_steps": steps + 1})
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "success"
        think_inputs = [
            e.ByteSize()
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == "think"
        ]
        assert len(think_inputs) == steps + 1
        # Passing the conversation would make the last think input ~30 x 8 KB; it stays the size of the first.
        assert max(think_inputs) < 2 * think_inputs[1], think_inputs
        total = sum(e.ByteSize() for e in history.events)
        assert total < steps * 5_000, f"history is {total} bytes for {steps} steps"


class TestContinueAsNew:
    """Long runs continue as new, carrying their state, and finish as one run."""

    async def test_state_survives_continue_as_new(self, harness: Harness) -> None:
        steps = 12
        model, scripted = harness.scripted([tool_use("echo", {"text": f"n{i}"}) for i in range(steps - 1)] + [answer("all done")])
        config = make_config(
            {"helper": {"tools": ["echo"], "model": model, "continue_as_new_every": 5}},
            pricing={"models": {model: {"input": 1.0, "output": 1.0}}},
        )
        async with harness.worker(config):
            handle = await harness.start({"task": "count", "max_steps": 50})
            result = await handle.result()  # follows the continuations
            records = await handle.query("trace", result_type=list[DecisionRecord])
            runs = [w async for w in harness.client.list_workflows(f"WorkflowId = '{handle.id}'")]
        assert result.status == "success" and result.answer == "all done"
        assert result.steps == steps
        assert result.tools_used == ["echo"] * (steps - 1)
        assert result.usage.input_tokens == steps * 1000
        assert result.total_cost == pytest.approx(steps * 1100 / 1e6)
        assert len(runs) == 3  # steps 1-5, 6-10, 11-12
        # The conversation carried over: the last call saw every earlier tool result.
        results = [b["content"] for b in scripted.tool_results()]
        assert results == [f"n{i}" for i in range(steps - 1)]
        assert records[-1].step == steps and records[-1].action.type == "final_answer"


class TestWarningsStayBounded:
    """A loop that goes on for many steps, or a flood of bad signals, does not grow the run's state."""

    @pytest.mark.slow  # a loop of many steps
    async def test_repeated_anomalies_are_counted_not_listed(self, harness: Harness) -> None:
        steps = 40
        model, _ = harness.scripted([tool_use("echo", {"text": "same"}) for _ in range(steps)] + [answer("stopped looping")])
        config = make_config({"helper": {"tools": ["echo"], "model": model}})
        async with harness.worker(config):
            handle = await harness.start({"task": "loop", "max_steps": steps + 1})
            for _ in range(25):  # bad signals: each refused, none listed past the cap
                await handle.signal("approve", {"approval_id": "apr-nope"})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "success"
        loops = [w for w in result.warnings if "POSSIBLE_LOOP" in w]
        # Steps 3..40 each found the loop: 10 listed, the other 28 counted in one line.
        assert len(loops) == 11
        assert loops[-1] == "POSSIBLE_LOOP: 28 more not listed (each step's decision record has its own)"
        refused = [w for w in result.warnings if "DECISION_REFUSED" in w]
        # 25 refusals, listed once per distinct message, never more than the cap.
        assert 1 <= len(refused) <= 11 and len(set(refused)) == len(refused)
        # Every step's own record still carries its warning.
        assert sum(1 for r in records if any("POSSIBLE_LOOP" in w for w in r.warnings)) == steps - 2
