"""Decision records on a real server: ids, stored once, the capped query, `durable-agent trace`, anomalies that stop."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest

from durable_agent import trace
from durable_agent.encryption import KeyRing
from durable_agent.store import ContentStore
from durable_agent.cli import trace as trace_cli
from durable_agent.schemas import DecisionRecord, StatusView, Usage
from durable_agent.testing import answer, tool_use
from tests import tools_for_tests
from tests.conftest import Harness, make_config
from tests.test_approvals import current_details
from tests.test_failures import approval_pending, until
from tests.test_trace_records import make_record


def sink_lines(state: Path) -> list[dict[str, Any]]:
    path = state / "trace.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def trace_args(workflow_id: str, address: str, **flags: Any) -> argparse.Namespace:
    args = argparse.Namespace(workflow_id=workflow_id, run=None, json=False, follow=False, interval=0.2, address=address)
    for name, value in flags.items():
        setattr(args, name, value)
    return args


class TestRecordsOnce:
    """Every record has a stable id and is kept once, in the store and in the sink."""

    async def test_ids_store_sink_and_query_agree(self, harness: Harness, state_dir: Path) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund 20 USD on order ord-789"})
            result = await handle.result()
            queried = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "success"
        first_run = handle.result_run_id
        stored = await trace.read_records(harness.store, handle.id)
        expected = [f"{handle.id}/{first_run}/{step}/0" for step in (1, 2, 3, 4)]
        assert [r.record_id for r in stored] == expected
        assert [r.record_id for r in queried] == expected
        assert sorted(line["record_id"] for line in sink_lines(state_dir) if line["session_id"] == handle.id) == sorted(expected)
        assert [r.action.tool for r in stored] == ["lookup_order", "search_kb", "issue_refund", None]

    async def test_the_query_cuts_long_texts_that_the_store_keeps_whole(self, harness: Harness) -> None:
        reasoning, text = "because " * 1000, "x" * 3000
        model, _ = harness.scripted([tool_use("echo", {"text": text}, text=reasoning), answer("done")])
        config = make_config({"helper": {"tools": ["echo"], "model": model}})
        async with harness.worker(config):
            handle = await harness.start({"task": "echo a lot"})
            await handle.result()
            queried = await handle.query("trace", result_type=list[DecisionRecord])
        stored = await trace.read_records(harness.store, handle.id)
        assert stored[0].action.reasoning == reasoning and stored[0].action.args == {"text": text}
        assert queried[0].truncated and len(queried[0].model_dump_json()) < 2_500 < 10_000 < len(stored[0].model_dump_json())
        assert queried[0].record_id == stored[0].record_id


class TestTraceCommand:
    """`durable-agent trace` reads a run's records as a person would."""

    async def test_a_finished_run_as_a_table_and_as_json(self, harness: Harness, server_address: str) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund 20 USD on order ord-789"})
            await handle.result()
        out = io.StringIO()
        assert await trace_cli.main(trace_args(handle.id, server_address), out=out) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["STEP", "ACTION", "TOOL", "STATUS", "DURATION", "TOKENS", "COST", "WARNINGS"]
        assert [line.split()[:4] for line in lines[1:5]] == [
            ["1", "tool", "lookup_order", "ok"], ["2", "tool", "search_kb", "ok"], ["3", "tool", "issue_refund", "ok"], ["4", "answer", "-", "answered"],
        ]
        assert lines[-1] == "4 records, from the content store"
        out = io.StringIO()
        assert await trace_cli.main(trace_args(handle.id, server_address, json=True), out=out) == 0
        assert [json.loads(line)["step"] for line in out.getvalue().splitlines()] == [1, 2, 3, 4]

    async def test_a_running_run_and_following_it_to_the_end(self, harness: Harness, server_address: str) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund order ord-789"})
            await until(lambda: approval_pending(handle), "the refund waits for approval")
            await until(lambda: _stored(harness, handle.id, 2), "the first two steps are recorded")
            out = io.StringIO()
            assert await trace_cli.main(trace_args(handle.id, server_address), out=out) == 0
            assert [line.split()[2] for line in out.getvalue().splitlines()[1:-1]] == ["lookup_order", "search_kb"]

            followed = io.StringIO()
            follow = asyncio.create_task(trace_cli.main(trace_args(handle.id, server_address, follow=True), out=followed))
            await until(lambda: "search_kb" in followed.getvalue(), "the follower shows what is there")
            assert not follow.done()
            pending = (await handle.query("status", result_type=StatusView)).pending_approvals[0]
            await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice"})
            assert await asyncio.wait_for(follow, 60) == 0
        rows = [line.split()[2] for line in followed.getvalue().splitlines()[1:-1]]
        assert rows == ["lookup_order", "search_kb", "issue_refund", "-"]

    async def test_a_run_id_of_no_run_shows_no_other_runs_records(self, harness: Harness, server_address: str, capsys) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund 20 USD on order ord-789"})
            await handle.result()
            out = io.StringIO()
            assert await trace_cli.main(trace_args(handle.id, server_address, run="not-a-run-id"), out=out) == 1
        assert "lookup_order" not in out.getvalue()
        assert handle.id in capsys.readouterr().err

    async def test_an_unknown_run_says_so(self, harness: Harness, server_address: str, capsys) -> None:
        assert await trace_cli.main(trace_args("no-such-run", server_address), out=io.StringIO()) == 1
        assert "no-such-run" in capsys.readouterr().err


async def _stored(harness: Harness, workflow_id: str, count: int) -> bool:
    return len(await trace.read_records(harness.store, workflow_id)) >= count


class TestAnomaliesThatStop:
    """A profile can make an anomaly end the run with status `stopped`."""

    async def test_a_cost_spike_stops_the_run(self, harness: Harness) -> None:
        script = [tool_use("echo", {"text": f"n{i}"}) for i in range(6)] + [answer("never")]
        model, scripted = harness.scripted(script, usage=Usage(input_tokens=100, output_tokens=10))

        def spike(request: Any) -> None:
            if len(scripted.requests) == 6:  # the sixth step costs a hundred times the others
                scripted.usage = Usage(input_tokens=10_000, output_tokens=1_000)

        scripted.on_request = spike
        config = make_config({"helper": {"tools": ["echo"], "model": model, "anomalies": {"on_high_cost": "stop", "step_cost_usd": 5.0}}})
        async with harness.worker(config):
            result = await harness.run({"task": "echo six times"})
        assert result.status == "stopped"
        assert result.answer is not None and "HIGH_COST" in result.answer and "median" in result.answer
        assert result.steps == 6 and len(tools_for_tests.calls("echo")) == 5  # the spiking step's call never ran

    async def test_a_cycle_stops_the_run_and_says_why_in_the_record(self, harness: Harness) -> None:
        a, b = tool_use("echo", {"text": "a"}), tool_use("echo", {"text": "b"})
        model, _ = harness.scripted([a, b, a, b, answer("never")])
        config = make_config({"helper": {"tools": ["echo"], "model": model, "anomalies": {"on_loop": "stop"}}})
        async with harness.worker(config):
            handle = await harness.start({"task": "go round"})
            result = await handle.result()
        assert result.status == "stopped" and "POSSIBLE_LOOP" in (result.answer or "")
        records = await trace.read_records(harness.store, handle.id)
        assert records[-1].observation["status"] == "stopped"
        assert "cycle echo -> echo" in records[-1].observation["message"]
        assert any(w.startswith("POSSIBLE_LOOP") for w in records[-1].warnings)


class TestAnomaliesThatPause:
    """A profile can make an anomaly hold the run for a reviewer, through the approval mechanism."""

    async def test_a_loop_is_paused_resumed_and_then_stopped_by_a_reviewer(self, harness: Harness) -> None:
        same = tool_use("echo", {"text": "again"})
        model, _ = harness.scripted([same, same, same, same, answer("never")])
        config = make_config({"helper": {"tools": ["echo"], "model": model, "anomalies": {"on_loop": "pause"}}})
        async with harness.worker(config):
            handle = await harness.start({"task": "say it again"})
            first = await _paused(handle)
            assert "POSSIBLE_LOOP" in first.reason and "echo called 3 times" in first.reason
            details = await current_details(handle)
            assert first.approval_id in details and "POSSIBLE_LOOP" in details
            assert len(tools_for_tests.calls("echo")) == 2  # the third call waits
            await handle.execute_update("review", {"approval_id": first.approval_id, "approved": True, "reviewer": "alice"})

            second = await _paused(handle, after=first.approval_id)
            assert len(tools_for_tests.calls("echo")) == 3  # resumed: the held call ran
            await handle.execute_update(
                "review", {"approval_id": second.approval_id, "approved": False, "reviewer": "bob", "comment": "stuck in a loop"}
            )
            result = await handle.result()
        assert result.status == "stopped"
        assert "POSSIBLE_LOOP" in (result.answer or "") and "bob" in (result.answer or "")
        assert [(a.approval_id, a.status, a.reviewer) for a in result.approvals] == [
            (first.approval_id, "approved", "alice"), (second.approval_id, "rejected", "bob"),
        ]
        assert len(tools_for_tests.calls("echo")) == 3
        records = await trace.read_records(harness.store, handle.id)
        assert [r.observation["status"] for r in records] == ["ok", "ok", "ok", "stopped"]
        assert records[-1].observation["approval_id"] == second.approval_id


async def _paused(handle: Any, after: str | None = None) -> Any:
    """The run's pending pause (another than ``after``), once it waits."""
    found: list[Any] = []

    async def pending() -> bool:
        status = await handle.query("status", result_type=StatusView)
        found[:] = [p for p in status.pending_approvals if p.approval_id != after]
        return bool(found)

    await until(pending, "the run pauses")
    return found[0]


class TestTraceCommandStore:
    """`durable-agent trace` reads the store the workers use, encrypted or not."""

    async def test_an_encrypted_store_named_by_url(
        self, tmp_path: Path, server_address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        keys = "k1:" + base64.b64encode(bytes(range(32))).decode()
        store = ContentStore(tmp_path / "elsewhere", ring=KeyRing.parse(keys))
        trace.configure(str(tmp_path / "trace.jsonl"))
        await trace.publish(store, make_record(1))
        monkeypatch.setenv("AGENT_STORE_URL", (tmp_path / "elsewhere").as_uri())
        monkeypatch.setenv("AGENT_ENCRYPTION_KEYS", keys)
        out = io.StringIO()
        assert await trace_cli.main(trace_args("run/1", server_address, json=True), out=out) == 0
        assert json.loads(out.getvalue())["record_id"] == "run/1/first-run/1/0"
        monkeypatch.delenv("AGENT_ENCRYPTION_KEYS")
        # Without the keys the sealed record cannot be read: said plainly, nothing printed.
        out = io.StringIO()
        assert await trace_cli.main(trace_args("run/1", server_address, json=True), out=out) == 2
        assert out.getvalue() == "" and "AGENT_ENCRYPTION_KEYS" in capsys.readouterr().err
