"""The record book: a run's decision records, its warnings, and the slim trace the ``trace`` query shows.

One decision record per step (per tool call of a turn), each with a stable
``record_id``. The whole records of a step are handed to the next step's
``think`` activity (or, at the run's end, before it continues as new or waits
for a person, to a ``record_decisions`` activity), which keeps each once in the
content store and the trace sink (see :mod:`durable_agent.trace`), in order; the ``trace`` query keeps a
slim copy (long texts cut) under a byte cap. Metrics and log lines are emitted
once, never on replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agent import carry, contracts, telemetry, trace
    from durable_agent.carry import CARRIED_TRACE_RECORDS, CarriedState
    from durable_agent.schemas import ActionRecord, CostRecord, DecisionRecord, RecordDecisionsInput

from durable_agent.workflows.host import Host
from durable_agent.workflows.settings import RunSettings

#: Decision records kept in workflow state for the ``trace`` query (the store has all, whole).
TRACE_KEPT = 500
#: Recording a step's records: retried for up to ten minutes while the store is unreachable.
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
RECORD_TIMEOUT = timedelta(minutes=10)
#: One attempt: a few file or object writes. Short, so a killed worker's attempt is retried soon.
RECORD_ATTEMPT_TIMEOUT = timedelta(seconds=20)
#: Run-level warnings of one kind listed in the status and the result; more are only counted.
WARNINGS_PER_KIND = 10
#: Patch: runs begun before records went through ``record_decisions`` write them to the sink themselves.
PATCH_RECORDS_STORED = "decision-records-stored"
#: Patch: a step's records are written by the next step's ``think`` activity (one activity and one
#: workflow task a step fewer), and by one ``record_decisions`` before the run ends, continues as new or
#: waits for a person. Runs begun before wrote each step's records in a ``record_decisions`` of their own.
PATCH_RECORDS_WITH_THINK = "records-with-think"
#: Most bytes of JSON of records a ``think`` input carries; more go by ``record_decisions`` at once.
RECORDS_WITH_THINK_MAX_BYTES = 256_000


def warning_kind(text: str) -> str:
    """``POSSIBLE_LOOP`` of ``"step 7: POSSIBLE_LOOP: ..."``; the whole text when it has no kind."""
    body = re.sub(r"^step \d+: ", "", text)
    head, sep, _ = body.partition(":")
    return head if sep and head.replace("_", "").isalnum() and head.isupper() else body


class Warnings:
    """The run's warnings: listed up to :data:`WARNINGS_PER_KIND` per kind, counted beyond.

    A loop repeated for thousands of steps, or a flood of bad signals, must not grow
    the state that continue-as-new carries and the result returns.
    """

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.unlisted: dict[str, int] = {}

    def add(self, text: str) -> None:
        kind = warning_kind(text)
        if sum(1 for listed in self.listed if warning_kind(listed) == kind) < WARNINGS_PER_KIND:
            if text not in self.listed:
                self.listed.append(text)
        else:
            self.unlisted[kind] = self.unlisted.get(kind, 0) + 1

    def view(self) -> list[str]:
        """The listed warnings, then one line per kind saying how many more there were."""
        more = [f"{kind}: {count} more not listed (each step's decision record has its own)" for kind, count in sorted(self.unlisted.items())]
        return [*self.listed, *more]


class RecordBook:
    """Decision records, warnings and the ``trace`` query's copy of the records.

    Args:
        host: The workflow (clock, ids, activities).
        settings: The run's profile (records name the agent; metrics the model).
    """

    def __init__(self, host: Host, settings: RunSettings) -> None:
        self._host = host
        self._settings = settings
        self._warnings = Warnings()
        #: Slim copies for the ``trace`` query, the latest TRACE_KEPT.
        self._trace: list[DecisionRecord] = []
        #: The current step's records, whole, until they are handed to ``record_decisions``.
        self._step_records: list[DecisionRecord] = []
        #: How many of ``_step_records`` were handed on already (before a wait, mid-step).
        self._step_handed = 0
        #: Records of earlier steps not yet written: the next ``think`` (or ``record_decisions``) takes them.
        self._unwritten: list[DecisionRecord] = []
        self._unwritten_bytes = 0
        #: ``record_decisions`` activities started and not yet awaited.
        self._writes: list[workflow.ActivityHandle[Any]] = []
        #: The span the current records describe (the step's, or a compaction's).
        self._span: Any = None

    # ------------------------------------------------------------------ warnings

    def warn(self, text: str) -> None:
        """Add a run-level warning (in the ``status`` query and the result)."""
        self._warnings.add(text)

    def warnings(self) -> list[str]:
        """The run's warnings as the status query and the result show them."""
        return self._warnings.view()

    # ------------------------------------------------------------------- records

    @contextlib.contextmanager
    def describing(self, span: Any) -> Iterator[None]:
        """Records made in the block describe ``span`` (a step's or a compaction's)."""
        outer, self._span = self._span, span
        try:
            yield
        finally:
            self._span = outer

    def record(
        self, step: int, action: ActionRecord, observation: Mapping[str, Any], cost: CostRecord, warnings: list[str], *, started: datetime
    ) -> DecisionRecord:
        """Record what the run decided at ``step`` and what came of it (logged, measured, kept for the step's end)."""
        agent = self._settings.profile
        now = self._host.now()
        observed = dict(observation)
        observed.setdefault("duration_ms", int((now - started).total_seconds() * 1000))
        ids = self._host.ids()
        link = self._settings.input.parent if self._settings.input is not None else None
        if self._step_records and self._step_records[0].step != step:
            self.flush()  # a step that ended the loop without passing its end (it cannot, but be sure)
        record = DecisionRecord(
            record_id=trace.record_id(ids.workflow_id, ids.first_execution_run_id, step, len(self._step_records)),
            timestamp=now,
            agent_id=agent.name,
            session_id=ids.workflow_id,
            step=step,
            action=action,
            observation=observed,
            cost=cost,
            warnings=warnings,
            policy_digest=self._settings.policy_digest,
            profile_digest=self._settings.profile_digest,
            parent_record_id=link.record_id if link is not None else None,
        )
        first = self._step_records[0] if self._step_records else None
        self._step_records.append(record)
        same_reasoning = first is not None and first.action.reasoning == action.reasoning
        self._trace.append(trace.for_query(record, first.record_id if first is not None and same_reasoning else None))
        if len(self._trace) > TRACE_KEPT:
            del self._trace[: len(self._trace) - TRACE_KEPT]
        if self._span is not None:
            telemetry.describe_step(self._span, record)
        # Replay-safe: the meter drops what a replay records, the workflow logger logs nothing then.
        telemetry.record_step_metrics(record, (now - started).total_seconds() * 1000, agent.model)
        self._host.logger.info(
            "step %d: %s -> %s", step, action.tool or "answer", observed.get("status"),
            extra={"step": step, "tool": action.tool, "record_id": record.record_id, "agent": agent.name},
        )
        return record

    def latest(self, count: int) -> list[DecisionRecord]:
        """The last ``count`` records as the ``trace`` query keeps them (long texts cut)."""
        return self._trace[-count:]

    def query(self) -> list[DecisionRecord]:
        """The ``trace`` query's answer: the newest records under its byte cap."""
        return carry.latest_within(self._trace, trace.QUERY_MAX_BYTES)

    # ----------------------------------------------------------------- the store

    def flush(self) -> None:
        """The step is over: hand its records on to be written (by the next think, or ``record_decisions``)."""
        if not self._step_records:
            return
        records, self._step_records = self._step_records[self._step_handed :], []
        self._step_handed = 0
        self._hand_on(records)

    def for_think(self) -> list[DecisionRecord]:
        """The records the next ``think`` activity writes before its model call; the book forgets them.

        Give them back with :meth:`not_written` when the call fails for good.
        """
        records, self._unwritten, self._unwritten_bytes = self._unwritten, [], 0
        return records

    def not_written(self, records: list[DecisionRecord]) -> None:
        """``records`` taken by a ``think`` that failed: written again before the run ends (once per id)."""
        self._unwritten[:0] = records
        self._unwritten_bytes += sum(len(record.model_dump_json()) for record in records)

    def before_waiting(self) -> None:
        """The run is about to wait (for a person): start writing what it has recorded so far, without waiting."""
        if not self._unwritten and len(self._step_records) == self._step_handed:
            return
        if not self._with_think():
            return
        self._unwritten.extend(self._step_records[self._step_handed :])
        self._step_handed = len(self._step_records)  # the step's later records keep their numbers
        self._send_unwritten()

    def _with_think(self) -> bool:
        return self._host.patched(PATCH_RECORDS_STORED) and self._host.patched(PATCH_RECORDS_WITH_THINK)

    def _send_unwritten(self) -> None:
        records, self._unwritten, self._unwritten_bytes = self._unwritten, [], 0
        self._start_writes(records)

    def _hand_on(self, records: list[DecisionRecord]) -> None:
        if not records:
            return
        if not self._host.patched(PATCH_RECORDS_STORED):
            # A run begun before records were stored writes its lines from here, as it did then.
            def emit() -> None:
                for record in records:
                    trace.emit(record)

            self._host.outside_sandbox(emit)
            return
        if self._host.patched(PATCH_RECORDS_WITH_THINK):
            self._unwritten.extend(records)
            self._unwritten_bytes += sum(len(record.model_dump_json()) for record in records)
            if self._unwritten_bytes > RECORDS_WITH_THINK_MAX_BYTES:
                self._send_unwritten()  # too much to ride along with a model call's input
            return
        self._start_writes(records)

    def _start_writes(self, records: list[DecisionRecord]) -> None:
        """Start ``record_decisions`` for ``records`` (in batches under the payload limit), without waiting."""
        if not records:
            return
        self._writes = [handle for handle in self._writes if not handle.done()]
        for batch in trace.batches(records):
            self._writes.append(
                self._host.start_activity(
                    contracts.ACTIVITY_RECORD_DECISIONS,
                    RecordDecisionsInput(records=batch),
                    schedule_to_close_timeout=RECORD_TIMEOUT,
                    start_to_close_timeout=RECORD_ATTEMPT_TIMEOUT,
                    retry_policy=RECORD_RETRY,
                    summary=f"record step {batch[0].step}",
                )
            )

    async def written(self) -> None:
        """Wait until every step handed over is recorded (before the run ends or continues as new).

        A store that stays unreachable for RECORD_TIMEOUT costs the run its records, not its
        result: that is said in its warnings.
        """
        self.flush()
        self._send_unwritten()
        writes, self._writes = self._writes, []
        for handle in writes:
            try:
                await handle
            except ActivityError as exc:
                self.warn(f"RECORDS_NOT_STORED: {exc.cause or exc}")
            except asyncio.CancelledError:
                return  # cancelled while closing: the activities go on, the run ends

    # ----------------------------------------------------------- continue-as-new

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the warnings, and the latest records for the ``trace`` query."""
        return {
            "warnings": self._warnings.listed,
            "warnings_unlisted": self._warnings.unlisted,
            "trace": self._trace[-CARRIED_TRACE_RECORDS:],
        }

    def restore(self, carried: CarriedState) -> None:
        self._warnings.listed = carried.warnings
        self._warnings.unlisted = dict(carried.warnings_unlisted)
        self._trace = carried.trace
