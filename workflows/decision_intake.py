"""Decision intake: reviewers' decisions coming in through the ``approve``/``reject`` signals and the ``review`` update.

Each decision is parsed (any payload of any shape: a bad one is refused here,
never by the SDK), bound to the action it names (:meth:`ApprovalDesk.target`)
and, for profiles that require signatures, checked against the reviewer keyring
read at decision time. A signal cannot answer its sender, so a refused signal
is logged and listed in the run's warnings; a refused update fails with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts, decisions
    from durable_agent.errors import failure_message
    from durable_agent.schemas import ApprovalRecord, Decision, KeyringRequest, PendingApproval, ReviewerKeyring, ReviewRequest

from durable_agent.workflows.approval_desk import ApprovalDesk
from durable_agent.workflows.host import Host
from durable_agent.workflows.settings import RunSettings

#: Patch: a decision must name its approval. Decisions replayed from before it keep the old leniency.
PATCH_BOUND_DECISIONS = "bound-decisions"
#: Reading the keyring at decision time: quick, and a few tries while a worker is busy.
KEYRING_TIMEOUT = timedelta(seconds=15)
KEYRING_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))


def _refusal(exc: decisions.DecisionRefused) -> ApplicationError:
    """What fails an update whose decision is refused: non-retryable, since the same decision cannot do better.

    Any other exception in the handler would fail the workflow task instead of only the update.
    """
    return ApplicationError(str(exc), type="DecisionRefused", non_retryable=True)


class DecisionIntake:
    """Takes reviewers' decisions to the approval desk, or refuses them saying why.

    Args:
        host: The workflow (clock, ids, the keyring activity, the log).
        settings: The run's profile (whose keyring a signed decision is checked against).
        desk: The approval desk the decisions are for.
        warn: Where refused decisions are listed (the record book's warnings).
    """

    def __init__(self, host: Host, settings: RunSettings, desk: ApprovalDesk, warn: Callable[[str], None]) -> None:
        self._host = host
        self._settings = settings
        self._desk = desk
        self._warn = warn

    def take_signal(self, payloads: tuple[Any, ...], *, approved: bool) -> None:
        """An ``approve`` or ``reject`` signal: applied, or ignored with the reason in the warnings and the log."""
        name = contracts.SIGNAL_APPROVE if approved else contracts.SIGNAL_REJECT
        try:
            decision = decisions.parse_decision(Decision, payloads, name)
            if self._desk.signatures_required:
                raise decisions.DecisionRefused(
                    "this agent requires signed decisions: decide with `durable-agent approve ... --key FILE` or in the reviewer inbox"
                )
            require_id = self._host.patched(PATCH_BOUND_DECISIONS)
            target = self._desk.target(decision.approval_id, decision.reviewer, decision.args_sha256, require_id=require_id)
        except decisions.DecisionRefused as exc:
            self._refused(f"{name} signal ignored", exc)
            return
        self._desk.decide(target.approval_id, approved, decision.reviewer, decision.comment)

    async def take_review(self, payloads: tuple[Any, ...]) -> ApprovalRecord:
        """A ``review`` update: the decided record, or an ``ApplicationError`` that fails the update with the reason."""
        request = self._review_request(payloads)
        if not self._desk.signatures_required:
            target = self._review_target(request, require_id=self._host.patched(PATCH_BOUND_DECISIONS))
            return self._desk.decide(target.approval_id, request.approved, request.reviewer, request.comment)
        try:
            target = await self._check_signed(request)
        except decisions.DecisionRefused as exc:
            self._refused(f"{contracts.UPDATE_REVIEW} update refused", exc)
            raise _refusal(exc) from None
        return self._desk.decide(target.approval_id, request.approved, request.reviewer, request.comment)

    def check_review(self, payloads: tuple[Any, ...]) -> None:
        """The ``review`` update's validator: refuse a bad decision before it is accepted (history stays clean).

        Everything :meth:`take_review` would refuse without reading anything is refused
        here: a malformed payload, an id that is not pending, other arguments, and on
        signed profiles a decision that is unsigned, names no reviewer, is bound to
        another run or arguments, or has expired (so a storm of them writes nothing).
        Whether the signature verifies depends on the keyring as it is now, which only
        :meth:`take_review` reads (an activity); its refusals are listed in the warnings.
        Deterministic and without I/O, as validators must be: the run's state and clock only.
        """
        try:
            request = self._review_request(payloads)
            if not self._desk.signatures_required:
                self._review_target(request, require_id=True)
            else:
                target = self._review_target(request, require_id=True)
                try:
                    decisions.check_binding(request, target, now=self._host.now())
                except decisions.DecisionRefused as exc:
                    raise _refusal(exc) from None
        except ApplicationError as exc:
            # Validators run only for new updates, never on replay, so this logs once.
            self._host.logger.warning("refused %s update: %s", contracts.UPDATE_REVIEW, exc.message)
            raise

    def _review_request(self, payloads: tuple[Any, ...]) -> ReviewRequest:
        try:
            return decisions.parse_decision(ReviewRequest, payloads, contracts.UPDATE_REVIEW)
        except decisions.DecisionRefused as exc:
            raise _refusal(exc) from None

    def _review_target(self, request: ReviewRequest, *, require_id: bool) -> PendingApproval:
        """The approval an unsigned review decides, or the update's refusal."""
        try:
            return self._desk.target(request.approval_id, request.reviewer, request.args_sha256, require_id=require_id)
        except decisions.DecisionRefused as exc:
            raise _refusal(exc) from None

    def _refused(self, what: str, exc: decisions.DecisionRefused) -> None:
        """Log and list a refused decision."""
        message = f"DECISION_REFUSED: {what}: {exc}"
        self._host.logger.warning(message)
        self._warn(message)

    async def _check_signed(self, request: ReviewRequest) -> PendingApproval:
        """The approval a signed review decides, once its binding, reviewer and signature check out.

        Raises:
            decisions.DecisionRefused: see :func:`durable_agent.decisions.check_binding` and ``check_signer``.
        """
        target = self._desk.target(request.approval_id, request.reviewer, request.args_sha256, require_id=True)
        decisions.check_binding(request, target, now=self._host.now())
        try:
            keyring = await self._host.execute_activity(
                contracts.ACTIVITY_REVIEWER_KEYRING,
                KeyringRequest(agent=self._settings.profile.name),
                result_type=ReviewerKeyring,
                start_to_close_timeout=KEYRING_TIMEOUT,
                retry_policy=KEYRING_RETRY,
                summary=f"reviewer keys for {request.approval_id}",
            )
        except ActivityError as exc:
            raise decisions.DecisionRefused(f"the reviewer keys could not be read: {failure_message(exc)}") from None
        ids = self._host.ids()
        decisions.check_signer(request, target, keyring, namespace=ids.namespace, workflow_id=ids.workflow_id)
        # Still waiting? It may have been decided or timed out while the keys were read.
        return self._desk.target(request.approval_id, request.reviewer, request.args_sha256, require_id=True)
