"""A client for other services: start agent runs, follow them, and answer their approvals.

::

    from durable_agent.client import AgentClient

    agents = await AgentClient.connect()  # TEMPORAL_ADDRESS etc., as the worker reads them
    run_id = await agents.start_run("Refund order ord-789", agent="support")
    pending = await agents.wait_for_approval(run_id)
    record = await agents.approve(run_id, pending.approval_id, reviewer="alice", comment="VIP customer")
    result = await agents.result(run_id)

For a profile that requires signed decisions, pass the reviewer's key
(``key=signing.load_key_file("alice.key")``): the decision is then signed and
bound to the execution and the arguments the approval waits with.

A run is an ``AgentWorkflow`` execution and ``run_id`` is its workflow id. Decisions
go through the ``review`` update rather than the ``approve``/``reject`` signals, so
the caller learns at once whether its decision was applied and gets the decided
record back; a refused decision raises :class:`ApprovalRefused` with the run's
reason. Results and views are decoded here from plain JSON, so a ``Client`` built
with any JSON data converter works, the pydantic one included.

A service that cannot import this package can do the same with plain
``temporalio`` by type and handler names: see ``examples/plain_temporalio_client.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.exceptions import ApplicationError

from durable_agent import connection, contracts
from durable_agent.decisions import signed_review
from durable_agent.errors import DurableAgentError, failure_message
from durable_agent.signing import SigningKey
from durable_agent.schemas import AgentInput, AgentResult, ApprovalRecord, PendingApproval, ReviewRequest, StatusView

__all__ = ["AgentClient", "ApprovalRefused"]

#: Longest static summary shown for a run in the Temporal UI's workflow list.
SUMMARY_CHARS = 200
#: How long a signed decision stays valid when the caller does not say.
DEFAULT_DECISION_TTL_SECONDS = 600


class ApprovalRefused(DurableAgentError):
    """The run refused a decision: an unknown or already decided approval id, a missing id, arguments
    that differ from the action's, a reviewer not on the allow-list, a missing or bad signature
    (profiles that require one), or a malformed payload.

    Attributes:
        run_id: The run that refused it.
        reason: The run's own explanation.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        self.reason = reason
        super().__init__(f"run {run_id} refused the decision: {reason}")


class AgentClient:
    """Start, follow and steer ``AgentWorkflow`` runs.

    Args:
        client: A connected Temporal client (see :meth:`connect` to make one from the environment).
        task_queue: Where new runs go; defaults to ``AGENT_TASK_QUEUE`` or ``agents``.
    """

    def __init__(self, client: Client, *, task_queue: str | None = None) -> None:
        self.client = client
        self.task_queue = task_queue or connection.task_queue()

    @classmethod
    async def connect(cls, address: str | None = None, *, task_queue: str | None = None, **overrides: Any) -> AgentClient:
        """Connect as the worker does (``TEMPORAL_ADDRESS``, namespace, TLS, API key or profile file).

        Args:
            address: ``host:port`` overriding the environment.
            task_queue: See the class.
            overrides: Further keyword arguments for ``Client.connect``.
        """
        return cls(await connection.connect(address, **overrides), task_queue=task_queue)

    def handle(self, run_id: str) -> WorkflowHandle[Any, Any]:
        """The Temporal handle of a run, for anything this class does not wrap (cancel, history...)."""
        return self.client.get_workflow_handle(run_id)

    async def start_run(self, task: str, *, agent: str | None = None, run_id: str | None = None, **fields: Any) -> str:
        """Start a run and return its id without waiting for it.

        Args:
            task: What the agent should do.
            agent: The profile name; the worker's default profile when ``None``.
            run_id: The workflow id to use; a fresh ``agent-run-...`` id when ``None``.
            fields: Other input fields: ``max_steps``, ``budget_usd``, ``autonomy``
                (may only tighten the profile's), ``model``, ``metadata``.

        Returns:
            The run id (the workflow id).

        Raises:
            pydantic.ValidationError: a field is unknown or of the wrong type, before anything starts.
        """
        given = {name: value for name, value in {"task": task, "agent": agent, **fields}.items() if value is not None}
        request = AgentInput.model_validate(given)
        run_id = run_id or f"agent-run-{uuid.uuid4().hex[:12]}"
        summary = f"{agent + ': ' if agent else ''}{task}"
        await self.client.start_workflow(
            contracts.AGENT_WORKFLOW,
            request.model_dump(mode="json", exclude_unset=True),
            id=run_id,
            task_queue=self.task_queue,
            static_summary=summary if len(summary) <= SUMMARY_CHARS else summary[: SUMMARY_CHARS - 3] + "...",
        )
        return run_id

    async def result(self, run_id: str) -> AgentResult:
        """Wait for the run to end and return its result, ``failed`` runs included.

        Raises:
            temporalio.client.WorkflowFailureError: the run ended without a result
                (bad input, unknown profile, terminated).
        """
        try:
            raw = await self.handle(run_id).result()
        except WorkflowFailureError as exc:
            # A run that failed after it began still reports its steps, cost and error.
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "AgentRunFailed" and cause.details:
                return AgentResult.model_validate(cause.details[0])
            raise
        return AgentResult.model_validate(raw)

    async def status(self, run_id: str) -> StatusView:
        """The ``status`` query: step, phase, cost, usage, pending approvals, warnings, budget left."""
        return StatusView.model_validate(await self.handle(run_id).query(contracts.QUERY_STATUS))

    async def pending_approvals(self, run_id: str) -> list[PendingApproval]:
        """The actions of the run waiting for a decision now, oldest first."""
        return (await self.status(run_id)).pending_approvals

    async def wait_for_approval(self, run_id: str, *, timeout: float = 60.0, poll_interval: float = 0.5) -> PendingApproval:
        """Poll the run until an action waits for a decision; return the oldest one.

        Raises:
            TimeoutError: nothing waited within ``timeout`` seconds.
            RuntimeError: the run ended without asking for an approval.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(run_id)
            if status.phase == "done":
                raise RuntimeError(f"run {run_id} ended ({status.status}) without waiting for an approval")
            if status.pending_approvals:
                return status.pending_approvals[0]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no approval waited in run {run_id} within {timeout:g} s (phase {status.phase})")
            await asyncio.sleep(poll_interval)

    async def approve(
        self,
        run_id: str,
        approval_id: str,
        *,
        reviewer: str,
        comment: str | None = None,
        key: SigningKey | None = None,
        expires_in: int = DEFAULT_DECISION_TTL_SECONDS,
        args_sha256: str | None = None,
    ) -> ApprovalRecord:
        """Approve a held action; it runs after this returns.

        Args:
            run_id: The run (its workflow id).
            approval_id: The approval to decide (ids are unique across executions of a workflow id).
            reviewer: Who decides (checked against the profile's ``reviewers``).
            comment: Kept in the record; the model does not see it on approval.
            key: The signing key, for profiles that require signed decisions: the
                reviewer's own, or a delegate's (such as the inbox's) signing for them.
            expires_in: Seconds the signature stays valid.
            args_sha256: The digest of the arguments the reviewer saw (unsigned decisions): the
                run refuses the decision if the action waits with other arguments. Signed
                decisions always carry it.

        Returns:
            The decided record.

        Raises:
            ApprovalRefused: the run refused the decision (see the class).
        """
        return await self._review(run_id, approval_id, True, reviewer, comment, key, expires_in, args_sha256)

    async def reject(
        self,
        run_id: str,
        approval_id: str,
        *,
        reviewer: str,
        comment: str | None = None,
        key: SigningKey | None = None,
        expires_in: int = DEFAULT_DECISION_TTL_SECONDS,
        args_sha256: str | None = None,
    ) -> ApprovalRecord:
        """Reject a held action: it is not executed, and the model is told who rejected it and ``comment``.

        Arguments, result and errors as for :meth:`approve`.
        """
        return await self._review(run_id, approval_id, False, reviewer, comment, key, expires_in, args_sha256)

    async def _review(
        self,
        run_id: str,
        approval_id: str,
        approved: bool,
        reviewer: str,
        comment: str | None,
        key: SigningKey | None,
        expires_in: int,
        args_sha256: str | None = None,
    ) -> ApprovalRecord:
        handle = self.handle(run_id)
        if key is None:
            request = ReviewRequest(approval_id=approval_id, approved=approved, reviewer=reviewer, comment=comment, args_sha256=args_sha256)
        else:
            # Sign exactly what waits: this execution, this approval, these arguments.
            waiting = await self.pending_approvals(run_id)
            target = next((p for p in waiting if p.approval_id == approval_id), None)
            if target is None:
                listed = ", ".join(p.approval_id for p in waiting) or "none"
                raise ApprovalRefused(run_id, f"approval {approval_id!r} is not pending; pending: {listed}")
            # A sub-agent's approval (listed by its parent) is signed for, and sent to, the sub-agent that waits.
            waiting_in = target.workflow_id or run_id
            request = signed_review(
                key,
                target,
                namespace=self.client.namespace,
                workflow_id=waiting_in,
                approved=approved,
                reviewer=reviewer,
                comment=comment,
                expires_at=int(datetime.now(timezone.utc).timestamp()) + expires_in,
            )
            handle = self.client.get_workflow_handle(waiting_in, run_id=target.run_id)  # that execution, no other
        try:
            raw = await handle.execute_update(contracts.UPDATE_REVIEW, request.model_dump(mode="json", exclude_none=True))
        except WorkflowUpdateFailedError as exc:
            raise ApprovalRefused(run_id, failure_message(exc)) from exc
        except RPCError as exc:
            # The execution the approval waited in has closed (or never was).
            raise ApprovalRefused(run_id, exc.message) from exc
        return ApprovalRecord.model_validate(raw)
