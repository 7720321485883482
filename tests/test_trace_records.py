"""Decision records kept once: the store under each record_id, the JSON-lines sink as its view."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

from durable_agent import carry, trace
from durable_agent.schemas import ActionRecord, CostRecord, DecisionRecord
from durable_agent.store import ContentStore


def make_record(step: int, call: int = 0, *, workflow_id: str = "run/1", reasoning: str = "why", args: dict | None = None) -> DecisionRecord:
    return DecisionRecord(
        record_id=trace.record_id(workflow_id, "first-run", step, call),
        timestamp=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=step),
        agent_id="support",
        session_id=workflow_id,
        step=step,
        action=ActionRecord(type="tool_call", tool="lookup_order", args=args or {"order_id": "ord-789"}, reasoning=reasoning),
        observation={"status": "ok", "duration_ms": 12},
        cost=CostRecord(input_tokens=10, output_tokens=2, estimated_cost=0.001),
    )


def sink_ids(path: Path) -> list[str]:
    return [json.loads(line)["record_id"] for line in path.read_text().splitlines()]


def _publish_all(store_root: str, sink_path: str, steps: int) -> None:
    trace.configure(sink_path)
    store = ContentStore(store_root)

    async def publish_all() -> None:
        for step in range(1, steps + 1):
            await trace.publish(store, make_record(step))

    asyncio.run(publish_all())


class TestPublish:
    """Each record once in the store and once in the sink."""

    async def test_a_retry_adds_nothing(self, tmp_path: Path) -> None:
        store, sink = ContentStore(tmp_path / "content"), tmp_path / "trace.jsonl"
        trace.configure(str(sink))
        assert await trace.publish(store, make_record(1)) is True
        assert await trace.publish(store, make_record(1)) is False
        assert sink_ids(sink) == ["run/1/first-run/1/0"]
        assert await trace.read_records(store, "run/1") == [make_record(1)]

    def test_processes_racing_on_one_sink_write_each_id_once(self, tmp_path: Path) -> None:
        sink = tmp_path / "trace.jsonl"
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_publish_all, args=(str(tmp_path / "content"), str(sink), 30)) for _ in range(4)]
        for process in workers:
            process.start()
        for process in workers:
            process.join(60)
        assert [p.exitcode for p in workers] == [0] * 4
        ids = sink_ids(sink)
        assert sorted(ids) == sorted(trace.record_id("run/1", "first-run", step, 0) for step in range(1, 31))

    def test_a_writer_killed_between_marker_and_line_is_made_good(self, tmp_path: Path) -> None:
        sink_path = tmp_path / "trace.jsonl"
        sink = trace.TraceSink(sink_path)
        sink.append(make_record(1))
        # A writer said where record 2's line would start, then died before writing it...
        marker = sink._marker(make_record(2).record_id or "")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(sink_path.stat().st_size))
        sink.append(make_record(3))  # ...and another writer's line took that place.
        assert sink.append(make_record(2)) is True
        assert sink.append(make_record(2)) is False
        assert sink_ids(sink_path) == ["run/1/first-run/1/0", "run/1/first-run/3/0", "run/1/first-run/2/0"]

    async def test_records_read_back_in_step_order_per_chain(self, tmp_path: Path) -> None:
        store = ContentStore(tmp_path / "content")
        trace.configure(str(tmp_path / "trace.jsonl"))
        for step in (10, 2, 1):
            await trace.publish(store, make_record(step))
        await trace.publish(store, make_record(1, workflow_id="other"))
        await trace.publish(store, make_record(1, workflow_id="run/1 (é)"))
        assert [r.step for r in await trace.read_records(store, "run/1")] == [1, 2, 10]
        assert await trace.runs_of(store, "run/1") == ["first-run"]
        assert [r.session_id for r in await trace.read_records(store, "run/1 (é)")] == ["run/1 (é)"]
        assert await trace.read_records(store, "nothing") == []


class TestQueryCap:
    """The trace query stays small; the store keeps the whole text."""

    def test_long_reasoning_and_arguments_are_cut(self) -> None:
        record = make_record(1, reasoning="r" * 5000, args={"text": "a" * 5000})
        slim = trace.for_query(record)
        assert slim.truncated is True
        assert len(slim.action.reasoning or "") < 600 and "more characters in the store" in (slim.action.reasoning or "")
        assert len(json.dumps(slim.action.args)) < 700
        assert trace.for_query(make_record(2)) == make_record(2)

    def test_a_turns_later_calls_point_to_its_reasoning(self) -> None:
        slim = trace.for_query(make_record(1, 1, reasoning="long thoughts"), same_reasoning_as="run/1/first-run/1/0")
        assert slim.action.reasoning == "(as in run/1/first-run/1/0)"

    def test_the_newest_records_that_fit(self) -> None:
        records = [make_record(step, reasoning="x" * 400) for step in range(1, 101)]
        kept = carry.latest_within(records, max_bytes=20_000)
        assert kept and kept[-1].step == 100 and len(kept) < 100
        assert len(json.dumps([r.model_dump(mode="json") for r in kept], separators=(",", ":"))) <= 20_000


class TestBatches:
    """A step's records go to the recording activity in groups under Temporal's payload limit."""

    def test_grouped_under_the_limit(self) -> None:
        records = [make_record(1, call, reasoning="r" * 8_000) for call in range(5)]
        groups = trace.batches(records, max_bytes=20_000)
        assert [len(g) for g in groups] == [2, 2, 1]
        assert [r for g in groups for r in g] == records

    def test_a_record_over_the_limit_alone_is_cut(self) -> None:
        giant = make_record(2, args={"text": "g" * 50_000})
        [[cut]] = trace.batches([giant], max_bytes=20_000)
        assert cut.truncated and cut.record_id == giant.record_id
        assert "50,011 bytes of arguments" in (cut.action.args or {})["_cut"]
        assert len(cut.model_dump_json()) <= 20_000
