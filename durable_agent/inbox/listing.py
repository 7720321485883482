"""The approvals waiting in a namespace, found through the ``AgentAwaitingApproval`` search attribute.

The workflow sets the attribute while an approval waits, and keeps what waits in
its memo: one visibility call lists every waiting approval of the namespace. Only a
run without that memo (begun before it existed) is asked for its ``status``, a query
that replays the run when its worker no longer caches it. Without the attribute registered
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

    async def _status(self, workflow_id: str, run_id: str | None) -> StatusView | None:
        self.queries += 1
        try:
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            raw = await asyncio.wait_for(handle.query(contracts.QUERY_STATUS), timeout=10)
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
        items = [item for run_items in found for item in run_items]
        return Listing(items=sorted(items, key=lambda item: (item.approval.deadline, item.key)))

    async def _waiting(self, run: WorkflowExecution) -> list[InboxItem]:
        """What ``run`` has waiting: from its memo, or (a run begun before it kept one) its ``status`` query."""
        try:
            memo = await run.memo()
        except Exception as exc:  # noqa: BLE001 - a memo this inbox cannot decode: ask the run
            log.debug("cannot read the memo of %s: %s", run.id, exc)
            memo = {}
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
        """What ``run`` has waiting, as its ``status`` query answers (a query; a replay when it is not cached)."""
        status = await self._status(run.id, run.run_id)
        if status is None:
            return []
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
