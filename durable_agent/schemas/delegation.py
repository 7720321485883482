"""Sub-agents: how a child run knows its parent, what it reports to it, and how the parent lists it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from durable_agent.inputs import MAX_NAME_CHARS
from durable_agent.schemas.approvals import PendingApproval
from durable_agent.schemas.common import StrictModel, Usage

#: How long a workflow id may be (Temporal's default limit is 1,000 characters).
MAX_WORKFLOW_ID_CHARS = 1_000


class ParentLink(StrictModel):
    """The ``parent`` field of a sub-agent's input: the run that delegated to it (set by that run)."""

    workflow_id: str = Field(min_length=1, max_length=MAX_WORKFLOW_ID_CHARS, description="The parent's workflow id.")
    record_id: str | None = Field(default=None, max_length=MAX_WORKFLOW_ID_CHARS + 100, description="The parent's record of the call.")
    depth: int = Field(default=1, ge=1, le=100, description="1 for a child of a top-level run, 2 for a grandchild...")
    max_depth: int = Field(default=3, ge=1, le=100, description="How deep delegation may go below the top-level run.")
    agent: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="The parent's profile.")


class ChildReport(BaseModel):
    """What a sub-agent tells its parent while it runs (the ``child_report`` signal): its totals so far.

    Totals, not deltas: a report lost or repeated changes nothing, the latest (by ``seq``) counts.
    ``total_cost`` and ``usage`` include the child's own children.
    """

    workflow_id: str
    seq: int = 0
    steps: int = 0
    total_cost: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    pending_approvals: list[PendingApproval] = Field(default_factory=list)


class ChildRun(BaseModel):
    """One sub-agent run of a parent, as the parent's result and ``status`` list it."""

    workflow_id: str
    agent: str
    status: str = Field(default="running", description="running, or how the child ended (a run status, or failed).")
    total_cost: float = 0.0
    steps: int = 0
    usage: Usage = Field(default_factory=Usage)
    parent_record_id: str | None = None
