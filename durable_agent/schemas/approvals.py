"""Approvals: a held action as reviewers see it, the decisions they send, and what became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from durable_agent.inputs import MAX_COMMENT_CHARS, MAX_NAME_CHARS
from durable_agent.schemas.common import StrictModel


class ApprovalRecord(BaseModel):
    """The outcome of one approval request."""

    approval_id: str
    tool: str
    status: Literal["approved", "rejected", "timed_out"]
    reviewer: str | None = None
    comment: str | None = None
    decided_at: datetime | None = None


class PendingApproval(BaseModel):
    """An action held for review, as the ``status`` query and the inbox show it."""

    approval_id: str = Field(description="Unique across executions of the workflow id: a decision names it.")
    run_id: str = Field(default="", description="The execution the approval waits in; signed decisions name it.")
    workflow_id: str = Field(default="", description="The run that waits: this one, or one of its sub-agents.")
    tool: str
    args: dict[str, Any]
    args_sha256: str = Field(default="", description="SHA-256 of the canonical JSON of args (signing.args_digest).")
    amount: float | None = Field(default=None, description="The money the call moves, from the tool's amount_arg.")
    currency: str | None = None
    risk: str
    reason: str
    deadline: datetime
    requested_at: datetime
    context: list[dict[str, Any]] = Field(default_factory=list, description="The last steps, for the reviewer.")
    require_signature: bool = Field(default=False, description="Only signed decisions count (durable-agent approve, the inbox).")


class Decision(StrictModel):
    """Payload of the ``approve`` and ``reject`` signals (profiles that do not require signatures)."""

    approval_id: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Required: the approval decided.")
    reviewer: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    args_sha256: str | None = Field(default=None, max_length=64, description="When given, must match the action that waits.")


class DecisionSignature(StrictModel):
    """An Ed25519 signature of a decision (see :func:`durable_agent.signing.decision_message`)."""

    signer: str = Field(max_length=MAX_NAME_CHARS, description="The key's name under [reviewer_keys]: the reviewer, or a delegate signing for them.")
    expires_at: int = Field(description="Unix time in seconds; the decision is refused after it.")
    value: str = Field(max_length=200, description="The base64 signature.")


class ReviewRequest(StrictModel):
    """Payload of the ``review`` update."""

    approval_id: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Required: the approval decided.")
    approved: bool
    reviewer: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    args_sha256: str | None = Field(default=None, max_length=64, description="When given, must match the action that waits.")
    run_id: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="When given, must be the execution the approval waits in.")
    signature: DecisionSignature | None = Field(default=None, description="Required by profiles with require_signature.")


class ReviewerKeyring(BaseModel):
    """Who may decide for an agent now, read from the worker's configuration at decision time.

    Public keys only: it is recorded in the run's history.
    """

    agent: str
    reviewers: list[str] = Field(default_factory=list, description="The allow-list.")
    delegates: list[str] = Field(default_factory=list, description="Keys that may sign for a reviewer on the allow-list.")
    keys: dict[str, str] = Field(default_factory=dict, description="Name -> ed25519:BASE64, for the names above.")


class KeyringRequest(BaseModel):
    """Input of the ``reviewer_keyring`` activity."""

    agent: str


class ReviewerNotice(BaseModel):
    """Input of the ``notify_reviewer`` activity; also the body of the webhook POST (plus ``event``)."""

    workflow_id: str
    namespace: str = "default"
    agent: str
    approval: PendingApproval
    approve_command: str = Field(default="", description="The exact `temporal` CLI command that approves it.")
    webhook_url: str | None = Field(
        default=None, description="Ignored: notices of older workers carried it. The activity reads the URL from its configuration."
    )
    require_signature: bool = Field(default=False, description="Decisions must be signed (durable-agent approve, the inbox).")
