"""The approvals waiting in a namespace, found through the ``AgentAwaitingApproval`` search attribute.

The workflow sets the attribute while an approval waits, and keeps what waits in
its memo: one visibility call lists every waiting approval of the namespace. Only a
run without that memo (begun before it existed) is asked for its ``status``, a query
that replays the run when its worker no longer caches it, and that waits for a worker
when none serves the run: such a run is asked in the background and listed once it
answers, so it never holds up the list for every other run. A memo this inbox cannot
open (encrypted with keys it lacks) is not asked about: the answer would be sealed
with the same keys. Without the attribute registered
the list cannot be made: the inbox says so, with the command that registers it,
and a link to one approval still works, since that asks the run itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from durable_agent import contracts
from durable_agent.inbox.pages import InboxItem
from durable_agent.schemas import PendingApproval, StatusView

log = logging.getLogger("durable_agent.inbox")

#: How often the page's live view looks for new or decided approvals.
POLL_SECONDS = 1.0
#: Most runs listed at once.
MAX_RUNS = 200
#: How long a run's ``status`` query may wait for a worker to answer it.
QUERY_TIMEOUT = 10.0
#: How long a look waits for the runs it had to ask, before it lists the rest without them.
ASKED_WAIT = 0.5
#: How long a run that did not answer is left unasked.
UNANSWERED_PAUSE = 60.0


@dataclass(frozen=True)
class Listing:
    """One look at the namespace: what waits, or why the list could not be made."""

    items: list[InboxItem] = field(default_factory=list)
    #: The search attribute is not registered in the namespace.
    index_missing: bool = False
    #: Another reason the list could not be made (the server's words), else ``None``.
    problem: str | None = None


class Approvals:
    """The approvals waiting in a namespace, looked up at most once per ``POLL_SECONDS`` however many pages watch."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._listing = Listing()
        self._at = 0.0
        self._lock = asyncio.Lock()
        #: Status queries sent so far (each may replay a run): what the memo saves.
        self.queries = 0
        #: The status query in flight or last answered, by run id, and when it was sent.
        self._asking: dict[str, tuple[float, asyncio.Task[StatusView | None]]] = {}
        #: Runs whose memo this inbox cannot open, by run id: warned about once.
        self._sealed: set[str] = set()

    async def _status(self, workflow_id: str, run_id: str | None) -> StatusView | None:
        self.queries += 1
        try:
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            raw = await asyncio.wait_for(handle.query(contracts.QUERY_STATUS), timeout=QUERY_TIMEOUT)
            return StatusView.model_validate(raw)
        except Exception as exc:  # noqa: BLE001 - a run that closed or cannot answer is not listed
            log.debug("cannot query %s: %s", workflow_id, exc)
            return None

    async def fetch(self) -> Listing:
        """Look now: list the marked runs, ask each what waits; oldest deadline first."""
        name = contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL
        try:
            runs = [run async for run in self.client.list_workflows(f"{name} = true AND ExecutionStatus = 'Running'", limit=MAX_RUNS)]
        except RPCError as exc:
            if name in exc.message:  # "invalid query: invalid search attribute: AgentAwaitingApproval"
                return Listing(index_missing=True)
            log.warning("cannot list approvals: %s", exc.message)
            return Listing(problem=exc.message)
        found = await asyncio.gather(*(self._waiting(run) for run in runs))
        listed = {run.run_id for run in runs}
        for gone in [run_id for run_id in self._asking if run_id not in listed]:
            self._asking.pop(gone)[1].cancel()
        self._sealed &= listed  # a long-lived inbox keeps only what it still lists
        items = [item for run_items in found for item in run_items]
        return Listing(items=sorted(items, key=lambda item: (item.approval.deadline, item.key)))

    async def _waiting(self, run: WorkflowExecution) -> list[InboxItem]:
        """What ``run`` has waiting: from its memo, or (a run begun before it kept one) its ``status`` query."""
        try:
            memo = await run.memo()
        except Exception as exc:  # noqa: BLE001 - sealed with keys this inbox lacks: its query answer would be too
            if run.run_id not in self._sealed:
                self._sealed.add(run.run_id)
                log.warning("run %s waits for approval, but this inbox cannot open its memo (%s): give the inbox the run's keys", run.id, exc)
            return []
        indexed = memo.get(contracts.MEMO_PENDING_APPROVALS)
        if isinstance(indexed, dict):
            try:
                agent = indexed.get("agent")
                return [
                    InboxItem(workflow_id=run.id, agent=agent, approval=PendingApproval.model_validate(approval))
                    for approval in indexed.get("approvals", [])
                ]
            except ValidationError as exc:
                log.debug("the memo of %s is not what this inbox reads: %s", run.id, exc)
        return await self._asked(run)

    async def _asked(self, run: WorkflowExecution) -> list[InboxItem]:
        """What ``run`` has waiting, as its ``status`` query answers (a query; a replay when it is not cached).

        The query is sent in the background and waited for briefly: a run nobody serves is
        left out of this look and the next ones until it answers, never making them wait.
        An answer is used once; a run that gave none is not asked again for ``UNANSWERED_PAUSE``.
        """
        now = time.monotonic()
        sent = self._asking.get(run.run_id)
        if sent is None or (sent[1].done() and sent[1].result() is None and now - sent[0] >= UNANSWERED_PAUSE):
            sent = (now, asyncio.ensure_future(self._status(run.id, run.run_id)))
            self._asking[run.run_id] = sent
        task = sent[1]
        if not task.done():
            await asyncio.wait([task], timeout=ASKED_WAIT)
        if not task.done():
            return []
        status = task.result()
        if status is None:
            return []
        # Used once: the next look asks again, as it would read a memo again.
        self._asking.pop(run.run_id, None)
        return [InboxItem(workflow_id=run.id, agent=status.agent, approval=approval) for approval in status.pending_approvals]

    async def current(self) -> Listing:
        """The last look if it is fresh, else a new one."""
        async with self._lock:
            if time.monotonic() - self._at >= POLL_SECONDS:
                self._listing = await self.fetch()
                self._at = time.monotonic()
            return self._listing

    def invalidate(self) -> None:
        """Forget the last look (a decision was just sent)."""
        self._at = 0.0

    async def find(self, workflow_id: str, approval_id: str) -> InboxItem | None:
        """The approval as the run says now (never a cached view: a decision is signed from it)."""
        status = await self._status(workflow_id, None)
        if status is None:
            return None
        for approval in status.pending_approvals:
            if approval.approval_id == approval_id:
                return InboxItem(workflow_id=workflow_id, agent=status.agent, approval=approval)
        return None
