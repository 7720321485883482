"""Who may decide a held action, and is this decision bound to it? Pure functions.

The workflow asks these before it applies a reviewer's decision:

- :func:`decision_target` for every decision: it must name a pending approval
  (ids are unique across executions of a workflow id), may carry the digest of
  the arguments it was made for, and is used once.
- :func:`check_binding` and :func:`check_signer` for profiles that require
  signatures: the decision names the execution and the arguments the reviewer
  saw, has not expired, comes from a reviewer on the allow-list, and carries an
  Ed25519 signature by that reviewer's key or by a delegate's (the inbox) over
  all of it. The allow-list and keys are the ones the worker reads at decision
  time (:class:`~durable_agent.schemas.ReviewerKeyring`), never the run's copy.

Nothing here reads the clock, the environment or the network: the caller passes
``now`` and the keyring, so the workflow may call these freely.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import ValidationError

from durable_agent import inputs, signing
from durable_agent.errors import validation_problems
from durable_agent.schemas import (
    ApprovalPolicy,
    ApprovalRecord,
    Decision,
    DecisionSignature,
    PendingApproval,
    ReviewerKeyring,
    ReviewRequest,
)

__all__ = [
    "DecisionRefused",
    "approval_id",
    "check_binding",
    "check_signer",
    "decision_target",
    "delegate_may_decide",
    "outcome",
    "parse_decision",
    "reviewer_allowed",
    "signed_review",
    "unauthenticated_allow_list",
]


#: A decision payload model: the signals' :class:`Decision` or the update's :class:`ReviewRequest`.
_DecisionT = TypeVar("_DecisionT", Decision, ReviewRequest)


class DecisionRefused(ValueError):
    """A reviewer's decision that cannot be applied; the message says why, for the reviewer and the run's warnings."""


def parse_decision(model: type[_DecisionT], payloads: tuple[Any, ...], handler: str) -> _DecisionT:
    """The decision in a handler's ``payloads`` (one JSON object; none means ``{}``).

    Raises:
        DecisionRefused: naming what is wrong with the payload (see :func:`durable_agent.inputs.single_payload`).
    """
    try:
        return model.model_validate(inputs.single_payload(payloads, handler))
    except inputs.PayloadRefused as exc:
        raise DecisionRefused(f"invalid payload: {exc}") from None
    except ValidationError as exc:
        raise DecisionRefused(f"invalid payload: {validation_problems(exc)}") from None


def approval_id(step: int, index: int, first_execution_run_id: str) -> str:
    """``apr-<step>[-<n>]-<tag>``: ``tag`` comes from the first run id of the workflow chain.

    Steps number the actions within a chain of continued runs; the tag tells chains
    apart, so an id printed for one execution of a workflow id never names an
    action of a later execution under the same id. (Run ids are time-ordered
    UUIDs: their first characters repeat, so the tag is a digest of the whole id.)
    """
    tag = hashlib.sha256(first_execution_run_id.encode()).hexdigest()[:8]
    return f"apr-{step}" + (f"-{index + 1}" if index else "") + f"-{tag}"


def outcome(record: ApprovalRecord) -> str:
    """``approved by alice``, ``rejected by bob``, ``timed out``: what became of an approval."""
    if record.status == "timed_out":
        return "timed out"
    return f"{record.status} by {record.reviewer or 'a reviewer with no name'}"


def reviewer_allowed(policy: ApprovalPolicy, reviewer: str | None) -> bool:
    """An empty allow-list lets anyone decide; otherwise the reviewer must be listed by name."""
    if not policy.reviewers:
        return True
    return reviewer is not None and reviewer in policy.reviewers


def delegate_may_decide(policy: ApprovalPolicy, reviewer: str, delegate: str, keys: Collection[str]) -> bool:
    """Whether a decision that ``delegate`` (the inbox) signs for ``reviewer`` can count under ``policy``.

    The inbox shows a reviewer only the approvals this allows. Signed profiles: the
    reviewer is on the allow-list and the delegate is named under ``delegates`` with
    a key in ``keys``. Unsigned profiles: the allow-list alone (empty: anyone).
    """
    if policy.require_signature:
        return reviewer in policy.reviewers and delegate in policy.delegates and delegate in keys
    return reviewer_allowed(policy, reviewer)


def unauthenticated_allow_list(file: str, agent: str, policy: ApprovalPolicy) -> str | None:
    """The warning for an allow-list that checks only a typed name (``reviewers`` without ``require_signature``)."""
    if not policy.reviewers or policy.require_signature:
        return None
    names = ", ".join(repr(name) for name in policy.reviewers)
    return (
        f"{file}: agents.{agent}.approval.reviewers ({names}) is not authenticated: without require_signature a "
        f"decision only types a name, so anyone who may signal or update workflows in the namespace can decide as "
        f"{policy.reviewers[0]!r}. To fix it, set require_signature = true under [agents.{agent}.approval] and give "
        "each reviewer a public key under [reviewer_keys] (`durable-agent keys new NAME --dir DIR` prints the line), "
        "or name the inbox's key under delegates"
    )


def decision_target(
    pending: Mapping[str, PendingApproval],
    decided: Mapping[str, ApprovalRecord],
    approval_id: str | None,
    reviewer: str | None,
    policy: ApprovalPolicy | None,
    *,
    args_sha256: str | None = None,
    require_id: bool = True,
) -> PendingApproval:
    """The pending approval a reviewer's decision applies to.

    Args:
        pending: The approvals waiting now, by id, oldest first.
        decided: The approvals already approved, rejected or timed out in this run, by id.
        approval_id: The id the decision names, if any.
        reviewer: Who decides.
        policy: The run's approval policy, whose allow-list is checked; ``None`` to leave
            the reviewer to :func:`check_signer` (signed decisions use the current keyring).
        args_sha256: The digest of the arguments the decision was made for, if it says.
        require_id: ``False`` only for runs begun before decisions had to name their
            approval: there, the id may be left out while exactly one waits.

    Returns:
        The approval to decide.

    Raises:
        DecisionRefused: no id (the pending ids are listed); an unknown id; an id
            already decided (with its outcome); arguments that differ from the
            action's; a reviewer not on the allow-list.
    """
    waiting = ", ".join(pending) or "none"
    if approval_id is None:
        if not pending:
            raise DecisionRefused("no approval is pending")
        if require_id or len(pending) > 1:
            raise DecisionRefused(f"approval_id is required: name the approval you decide (pending: {waiting})")
        approval_id = next(iter(pending))
    target = pending.get(approval_id)
    if target is None:
        if approval_id in decided:
            done = outcome(decided[approval_id])
            raise DecisionRefused(f"approval {approval_id!r} was already decided: {done}; pending: {waiting}")
        raise DecisionRefused(f"approval {approval_id!r} is not pending; pending: {waiting}")
    if args_sha256 is not None and target.args_sha256 and args_sha256.lower() != target.args_sha256:
        raise DecisionRefused(
            f"args_sha256 does not match the arguments of {approval_id} ({target.tool} {target.args_sha256[:12]}...): "
            "the decision was made for another action"
        )
    if policy is not None and not reviewer_allowed(policy, reviewer):
        who = repr(reviewer) if reviewer else "a reviewer with no name"
        raise DecisionRefused(f"{who} may not decide: allowed reviewers are {', '.join(policy.reviewers)}")
    return target


def check_binding(request: ReviewRequest, target: PendingApproval, *, now: datetime) -> None:
    """What a signed decision must say, checked before any key is read.

    Raises:
        DecisionRefused: unsigned; no reviewer; not naming the execution or the
            arguments digest, or naming others; expired.
    """
    signature = request.signature
    if signature is None:
        raise DecisionRefused(
            "this agent requires signed decisions: decide with `durable-agent approve ... --key FILE` or in the reviewer inbox"
        )
    if not request.reviewer:
        raise DecisionRefused("a signed decision names its reviewer")
    if request.run_id != target.run_id:
        raise DecisionRefused(
            f"the decision is for run {request.run_id or '(none named)'}, but {target.approval_id} waits in run {target.run_id}"
        )
    if request.args_sha256 is None or request.args_sha256.lower() != target.args_sha256:
        raise DecisionRefused(
            f"args_sha256 {'is missing' if request.args_sha256 is None else 'does not match'}: "
            f"{target.approval_id} is {target.tool} with arguments {target.args_sha256[:12]}..."
        )
    moment = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    if signature.expires_at < int(moment.timestamp()):
        expired = datetime.fromtimestamp(signature.expires_at, timezone.utc).isoformat()
        raise DecisionRefused(f"the decision expired at {expired}")


def check_signer(
    request: ReviewRequest, target: PendingApproval, keyring: ReviewerKeyring, *, namespace: str, workflow_id: str
) -> None:
    """Whether the reviewer may decide and the signature is theirs (or a delegate's) over this exact decision.

    Call :func:`check_binding` first. ``keyring`` is the worker's configuration as
    read at decision time: a reviewer or key removed since the run began no longer counts.

    Raises:
        DecisionRefused: the reviewer is not on the allow-list; the signer is neither
            the reviewer nor a delegate; the signer has no key; the signature does not
            verify (another key, another run, approval, verdict, comment or expiry).
    """
    signature = request.signature
    assert signature is not None and request.reviewer is not None  # check_binding said so
    reviewer, signer = request.reviewer, signature.signer
    if reviewer not in keyring.reviewers:
        allowed = ", ".join(keyring.reviewers) or "nobody"
        raise DecisionRefused(f"{reviewer!r} may not decide: allowed reviewers are {allowed}")
    if signer != reviewer and signer not in keyring.delegates:
        raise DecisionRefused(
            f"the key of {signer!r} may not sign for {reviewer!r}: only their own key or a delegate's may"
        )
    public_key = keyring.keys.get(signer)
    if public_key is None:
        raise DecisionRefused(f"{signer!r} has no key under [reviewer_keys] (revoked, or never added)")
    message = _signed_message(
        target, namespace=namespace, workflow_id=workflow_id, approved=request.approved, reviewer=reviewer, signer=signer,
        comment=request.comment, expires_at=signature.expires_at,
    )
    if not signing.verify(public_key, signature.value, message):
        raise DecisionRefused(
            f"the signature does not verify with the key of {signer!r} "
            "(another key, or made for another run, approval, verdict or comment)"
        )


def _signed_message(
    target: PendingApproval,
    *,
    namespace: str,
    workflow_id: str,
    approved: bool,
    reviewer: str,
    signer: str,
    comment: str | None,
    expires_at: int,
) -> bytes:
    """The bytes a decision of ``target`` is signed over: the one place both signing and checking build them."""
    return signing.decision_message(
        namespace=namespace,
        workflow_id=workflow_id,
        run_id=target.run_id,
        approval_id=target.approval_id,
        args_sha256=target.args_sha256,
        verdict="approve" if approved else "reject",
        reviewer=reviewer,
        signer=signer,
        comment=comment,
        expires_at=expires_at,
    )


def signed_review(
    key: signing.SigningKey,
    target: PendingApproval,
    *,
    namespace: str,
    workflow_id: str,
    approved: bool,
    reviewer: str,
    comment: str | None,
    expires_at: int,
) -> ReviewRequest:
    """The ``review`` update payload deciding ``target``, signed by ``key`` (the reviewer's, or a delegate's for them)."""
    message = _signed_message(
        target, namespace=namespace, workflow_id=workflow_id, approved=approved, reviewer=reviewer, signer=key.name,
        comment=comment, expires_at=expires_at,
    )
    return ReviewRequest(
        approval_id=target.approval_id,
        approved=approved,
        reviewer=reviewer,
        comment=comment,
        args_sha256=target.args_sha256,
        run_id=target.run_id,
        signature=DecisionSignature(signer=key.name, expires_at=expires_at, value=key.sign(message)),
    )
