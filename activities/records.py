"""The ``record_decisions`` activity: a step's decision records, kept once each.

The workflow starts it after each step without waiting (it waits for all of
them only before the run ends or continues as new), so recording adds no
latency to the loop. A retry, on this worker or another, finds the records
already created under their ids and adds nothing (see :mod:`durable_agent.trace`).
"""

from __future__ import annotations

from temporalio import activity

from durable_agent import contracts, trace
from durable_agent.schemas import RecordDecisionsInput
from durable_agent.store import ContentStore


class RecordActivities:
    """Activities bound to one worker's content store."""

    def __init__(self, store: ContentStore) -> None:
        self.store = store

    @activity.defn(name=contracts.ACTIVITY_RECORD_DECISIONS)
    async def record_decisions(self, request: RecordDecisionsInput) -> int:
        """Store each record under its id (if absent) and add it to the trace sink; how many were new."""

        created = 0
        for record in request.records:
            created += await trace.publish(self.store, record)
        if created < len(request.records):
            activity.logger.info(
                "%d of %d decision records were already recorded (a retry)", len(request.records) - created, len(request.records)
            )
        return created

    def all(self) -> list[object]:
        """Every activity of this object, for ``Worker(activities=...)``."""
        return [self.record_decisions]
