"""The record book (decision records, warnings, the trace query) and observations, without a server."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest

from durable_agent import contracts, trace
from durable_agent.observations import Observation, RateLimitNote
from durable_agent.schemas import ActionRecord, CostRecord
from durable_agent.workflows.records import PATCH_RECORDS_WITH_THINK, RECORDS_WITH_THINK_MAX_BYTES, WARNINGS_PER_KIND, RecordBook
from tests.component_kit import settings
from tests.workflow_host import START, FakeHost, activity_failure

CALL = ActionRecord(type="tool_call", tool="lookup_order", args={"order_id": "ord-789"}, reasoning="Look it up first.")


def book(host: FakeHost | None = None) -> tuple[RecordBook, FakeHost]:
    host = host or FakeHost({contracts.ACTIVITY_RECORD_DECISIONS: None})
    return RecordBook(host, settings()), host


class TestRecords:
    """One record per call of a step, with a stable id, handed to the store at the step's end."""

    async def test_ids_durations_and_the_store(self) -> None:
        """Runs begun before records rode with the next think: each step's records in a record_decisions of their own."""
        records, host = book(FakeHost({contracts.ACTIVITY_RECORD_DECISIONS: None}, unpatched=[PATCH_RECORDS_WITH_THINK]))
        host.clock = START + timedelta(seconds=2)
        first = records.record(4, CALL, {"status": "ok", "duration_ms": 12}, CostRecord(estimated_cost=0.001), [], started=START)
        second = records.record(4, CALL.model_copy(update={"tool": "search_kb"}), {"status": "ok"}, CostRecord(), ["W"], started=START)
        assert [r.record_id for r in (first, second)] == ["wf-1/first-run/4/0", "wf-1/first-run/4/1"]
        assert (first.observation["duration_ms"], second.observation["duration_ms"]) == (12, 2000)
        # The query's copy of a turn's later call points to the first's reasoning instead of repeating it.
        assert [r.action.reasoning for r in records.query()] == ["Look it up first.", "(as in wf-1/first-run/4/0)"]
        records.flush()
        [(name, batch, options)] = host.calls
        assert (name, [r.record_id for r in batch.records], options["summary"]) == (contracts.ACTIVITY_RECORD_DECISIONS, [first.record_id, second.record_id], "record step 4")
        await records.written()
        assert records.warnings() == []

    async def test_a_store_that_stays_unreachable_costs_the_records_not_the_run(self) -> None:
        def unreachable(_: object) -> None:
            raise activity_failure("store down", contracts.ACTIVITY_RECORD_DECISIONS)

        records, _ = book(FakeHost({contracts.ACTIVITY_RECORD_DECISIONS: unreachable}))
        records.record(1, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        await records.written()
        assert records.warnings() == ["RECORDS_NOT_STORED: store down"]

    def test_runs_begun_before_the_store_write_their_lines_themselves(self, monkeypatch: pytest.MonkeyPatch) -> None:
        out = io.StringIO()
        monkeypatch.setattr(trace, "_sink", trace.TraceSink(stream=out))
        host = FakeHost(unpatched=["decision-records-stored"])
        records, _ = book(host)
        records.record(1, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        records.flush()
        host.replaying = True
        records.record(2, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        records.flush()  # a replay writes nothing again
        assert [json.loads(line)["step"] for line in out.getvalue().splitlines()] == [1]
        assert host.calls == []

    async def test_the_query_keeps_the_newest_under_its_byte_cap(self) -> None:
        records, _ = book()
        for step in range(1, 801):
            records.record(step, CALL.model_copy(update={"reasoning": "x" * 400}), {"status": "ok"}, CostRecord(), [], started=START)
        kept = records.query()
        assert kept[-1].step == 800 and len(kept) <= 500
        assert len(json.dumps([r.model_dump(mode="json") for r in kept], separators=(",", ":"))) <= trace.QUERY_MAX_BYTES
        assert [r.step for r in records.latest(3)] == [798, 799, 800]


class TestRecordsWithThink:
    """A step's records ride with the next think; what is left goes by one record_decisions, never lost."""

    async def test_the_next_think_takes_them_and_the_end_writes_the_rest(self) -> None:
        records, host = book()
        one = records.record(1, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        records.flush()
        assert host.calls == []  # no activity of their own
        assert [r.record_id for r in records.for_think()] == [one.record_id]
        assert records.for_think() == []  # handed over once
        two = records.record(2, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        await records.written()
        [(name, batch, _)] = host.calls
        assert (name, [r.record_id for r in batch.records]) == (contracts.ACTIVITY_RECORD_DECISIONS, [two.record_id])

    async def test_records_of_a_think_that_failed_are_written_at_the_end_in_order(self) -> None:
        records, host = book()
        one = records.record(1, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        records.flush()
        taken = records.for_think()
        two = records.record(2, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        records.flush()
        records.not_written(taken)
        await records.written()
        [(_, batch, _)] = host.calls
        assert [r.record_id for r in batch.records] == [one.record_id, two.record_id]

    async def test_before_a_wait_what_is_recorded_is_written_and_numbers_go_on(self) -> None:
        records, host = book()
        first = records.record(3, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        records.before_waiting()
        [(_, batch, _)] = host.calls
        assert [r.record_id for r in batch.records] == [first.record_id]
        second = records.record(3, CALL, {"status": "ok"}, CostRecord(), [], started=START)
        assert second.record_id == "wf-1/first-run/3/1"
        records.flush()
        assert [r.record_id for r in records.for_think()] == [second.record_id]  # only what was not sent
        records.before_waiting()  # nothing new: nothing started
        assert len(host.calls) == 1

    async def test_records_too_large_to_ride_along_go_at_once(self) -> None:
        records, host = book()
        big = CALL.model_copy(update={"reasoning": "x" * (RECORDS_WITH_THINK_MAX_BYTES + 1)})
        records.record(1, big, {"status": "ok"}, CostRecord(), [], started=START)
        records.flush()
        assert [name for name, _, _ in host.calls] == [contracts.ACTIVITY_RECORD_DECISIONS]
        assert records.for_think() == []


class TestWarnings:
    """A flood of one kind of warning is listed up to a cap, then counted."""

    def test_listed_then_counted_per_kind(self) -> None:
        records, _ = book()
        for step in range(1, WARNINGS_PER_KIND + 6):
            records.warn(f"step {step}: POSSIBLE_LOOP: again")
        records.warn("DECISION_REFUSED: approve signal ignored: no approval is pending")
        records.warn("DECISION_REFUSED: approve signal ignored: no approval is pending")  # the same text once
        view = records.warnings()
        assert len(view) == WARNINGS_PER_KIND + 2
        assert view[-1] == "POSSIBLE_LOOP: 5 more not listed (each step's decision record has its own)"
        assert records.carry()["warnings_unlisted"] == {"POSSIBLE_LOOP": 5}


class TestObservations:
    """A tool call's observation keeps the keys that apply, always in the same order, and no internal ones."""

    def test_a_tool_that_ran(self) -> None:
        observation = Observation(
            status="ok", duration_ms=40, result_preview="{...}", approval_id="apr-1-abc", rate_limit=RateLimitNote("2025-06-01T12:00:00+00:00", 1500),
            result_ref="sha256:r", request_ids=["req_1"], result_warnings=["RESULT_CONVERTED: ..."], run_cancelled=True,
        )
        assert list(observation.as_record().items()) == [
            ("status", "ok"), ("result_preview", "{...}"), ("duration_ms", 40), ("approval_id", "apr-1-abc"),
            ("rate_limit_slot", "2025-06-01T12:00:00+00:00"), ("rate_limit_wait_ms", 1500), ("result_ref", "sha256:r"), ("request_ids", ["req_1"]),
        ]

    def test_the_workflow_answered(self) -> None:
        observation = Observation.answered_by_workflow("rejected", "REJECTED by bob.", "apr-2-abc")
        assert observation.as_record() == {"status": "rejected", "message": "REJECTED by bob.", "duration_ms": 0, "approval_id": "apr-2-abc"}
