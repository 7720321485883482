"""The approval desk and the decision intake, without a server: what waits, who may decide it, and how.

Each test holds an action at the desk as the loop does, and sends decisions through
the intake as the ``approve``/``reject`` signals and the ``review`` update do.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from durable_agent import contracts, decisions, policy, signing
from durable_agent.schemas import ReviewerKeyring, ToolCall
from durable_agent.workflows.approval_desk import PATCH_DECISION_BEATS_DEADLINE, PATCH_MARK_CLEARED_ON_CLOSE, PATCH_PENDING_IN_MEMO, ApprovalDesk
from durable_agent.workflows.decision_intake import DecisionIntake
from durable_agent.workflows.progress import RunPhase
from durable_agent.workflows.settings import RunSettings
from tests.component_kit import record, settings
from tests.workflow_host import FakeHost, activity_failure

STEP = 3
REFUND = ToolCall(id="t1", name="issue_refund", args={"order_id": "ord-789", "amount": 4999, "currency": "USD"})
CANCEL = ToolCall(id="t2", name="cancel_order", args={"order_id": "ord-1001"})


def approval_id(index: int = 0, step: int = STEP) -> str:
    return decisions.approval_id(step, index, "first-run")


class Desk:
    """A desk and its intake as the workflow wires them, with what they warn and show."""

    def __init__(self, host: FakeHost | None = None, run: RunSettings | None = None) -> None:
        self.host = host or FakeHost({contracts.ACTIVITY_NOTIFY_REVIEWER: None})
        self.run = run or settings(approval_index="AgentAwaitingApproval")
        self.phase = RunPhase()
        self.phase.move("thinking")
        self.warnings: list[str] = []
        self.shown: list[str] = []
        self.desk = ApprovalDesk(self.host, self.run, self.phase, self.warnings.append, lambda n: [record(1), record(2)][-n:], self.shown.append)
        self.intake = DecisionIntake(self.host, self.run, self.desk, self.warnings.append)

    def verdict(self, call: ToolCall) -> policy.PolicyDecision:
        agent = self.run.profile
        info = agent.tool(call.name)
        assert info is not None
        return policy.evaluate(info, call.args, self.run.autonomy, agent.approval)

    def soon(self, action: Callable[[], Any]) -> None:
        """Do ``action`` once the desk waits (as a signal arriving while the run waits)."""
        asyncio.get_running_loop().call_soon(action)

    def signal(self, approved: bool = True, **payload: Any) -> None:
        self.intake.take_signal((payload,), approved=approved)


class TestHeldToolCalls:
    """A held action waits, listed and notified, until a reviewer decides it."""

    async def test_approved_by_id(self) -> None:
        d = Desk()
        seen: list[tuple[str, str | None, list[str]]] = []

        def decide() -> None:
            seen.append((d.phase.phase, d.phase.waiting_for, [p.approval_id for p in d.desk.pending()]))
            d.signal(approval_id=approval_id(), reviewer="alice", comment="fine")

        d.soon(decide)
        outcome = await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP)
        assert (outcome.status, outcome.reviewer, outcome.comment) == ("approved", "alice", "fine")
        assert seen == [("waiting_for_approval", f"approval {approval_id()}", [approval_id()])]
        assert d.desk.pending() == [] and d.desk.records() == [outcome]
        [(name, notice, _)] = d.host.calls
        assert name == contracts.ACTIVITY_NOTIFY_REVIEWER
        assert (notice.approval.amount, notice.approval.currency, notice.approval.run_id) == (4999, "USD", "run-2")
        assert notice.approval.args_sha256 == signing.args_digest(REFUND.args)
        assert [c["step"] for c in notice.approval.context] == [1, 2]
        assert "temporal workflow signal" in notice.approve_command and approval_id() in notice.approve_command
        assert f"**Waiting for approval** `{approval_id()}`: issue_refund" in d.shown[0]
        # The inbox's search attribute: set while it waits, cleared when nothing does.
        assert [[u.value for u in updates] for updates in d.host.search_attributes] == [[True], [False]]

    async def test_a_turns_held_calls_open_together(self) -> None:
        d = Desk()
        turn = [REFUND, ToolCall(id="t0", name="lookup_order", args={"order_id": "ord-789"}), CANCEL]
        d.soon(lambda: d.signal(approval_id=approval_id(0), reviewer="alice"))
        first = await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), turn, STEP)
        # The cancel was opened with the refund: it waits already, with its own id and deadline.
        assert [p.approval_id for p in d.desk.pending()] == [approval_id(2)]
        d.signal(approved=False, approval_id=approval_id(2), reviewer="bob", comment="no")
        second = await d.desk.hold_tool_call(CANCEL, 2, d.verdict(CANCEL), turn, STEP)
        assert [(r.approval_id, r.status) for r in (first, second)] == [(approval_id(0), "approved"), (approval_id(2), "rejected")]
        assert d.host.names() == [contracts.ACTIVITY_NOTIFY_REVIEWER] * 2
        # Where the recorded histories expect the patches, in order: the refund's id (asked, then opened), the
        # turn's other held calls (opened), each signal's binding, then the cancel's id (open already).
        # (The memo index asks its own patch beside each of them; what it keeps is tested on its own.)
        assert [p for p in d.host.patches if p != PATCH_PENDING_IN_MEMO] == [
            "approval-ids-unique", "approval-ids-unique", "approvals-opened-per-turn", "approval-ids-unique",
            "bound-decisions", "bound-decisions", "approval-ids-unique",
        ]

    async def test_what_waits_is_kept_in_the_memo_until_decided(self) -> None:
        d = Desk(FakeHost({contracts.ACTIVITY_NOTIFY_REVIEWER: None}))
        waiting = asyncio.ensure_future(d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP))
        await asyncio.sleep(0)
        [pending] = d.desk.pending()
        indexed = d.host.memo[contracts.MEMO_PENDING_APPROVALS]
        assert indexed["agent"] == d.run.profile.name and [a["approval_id"] for a in indexed["approvals"]] == [pending.approval_id]
        d.desk.decide(pending.approval_id, True, "alice", None)
        await waiting
        assert d.host.memo[contracts.MEMO_PENDING_APPROVALS]["approvals"] == []

    async def test_a_notice_that_failed_is_a_warning_not_an_unretrieved_error(self, caplog: pytest.LogCaptureFixture) -> None:
        lost: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: lost.append(context))  # where asyncio reports an error nobody took
        try:
            failure = activity_failure("webhook down", "notify_reviewer")

            def webhook_down(_: Any) -> None:
                raise failure

            d = Desk(FakeHost({contracts.ACTIVITY_NOTIFY_REVIEWER: webhook_down}))
            waiting = asyncio.ensure_future(d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP))
            await asyncio.sleep(0)
            [pending] = d.desk.pending()
            notice = d.desk._notifications[pending.approval_id]
            await asyncio.wait([notice])  # it failed, after its retries
            d.desk.decide(pending.approval_id, True, "alice", None)
            await waiting
            del waiting, d, notice
            gc.collect()
        finally:
            loop.set_exception_handler(None)
        assert lost == []
        assert any("the reviewer could not be notified: webhook down" in r.getMessage() for r in caplog.records)

    async def test_runs_before_per_turn_approvals_open_one_at_a_time(self) -> None:
        d = Desk(FakeHost({contracts.ACTIVITY_NOTIFY_REVIEWER: None}, unpatched=["approvals-opened-per-turn", "approval-ids-unique"]))
        d.soon(lambda: d.signal(approval_id="apr-3", reviewer="alice"))
        await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND, CANCEL], STEP)
        assert d.desk.pending() == []  # the cancel waits for its own turn, under the old id form
        assert d.desk.records()[0].approval_id == "apr-3"

    async def test_no_decision_in_time_is_timed_out_and_a_late_one_refused(self) -> None:
        d = Desk()
        outcome = await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP)
        assert outcome.status == "timed_out" and d.desk.pending() == []
        assert outcome.decided_at == d.host.clock  # when the deadline passed
        d.signal(approval_id=approval_id(), reviewer="alice")
        assert d.warnings == [f"DECISION_REFUSED: approve signal ignored: approval {approval_id()!r} was already decided: timed out; pending: none"]


class TestDecisionsRefused:
    """A decision that does not name what it decides, or may not decide it, is refused and listed; the action keeps waiting."""

    async def test_no_id_is_refused_listing_what_waits(self) -> None:
        d = Desk()
        d.soon(lambda: d.signal(reviewer="alice"))
        outcome = await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP)
        assert outcome.status == "timed_out"
        assert d.warnings == [f"DECISION_REFUSED: approve signal ignored: approval_id is required: name the approval you decide (pending: {approval_id()})"]

    async def test_runs_before_bound_decisions_take_one_without_id(self) -> None:
        d = Desk(FakeHost({contracts.ACTIVITY_NOTIFY_REVIEWER: None}, unpatched=["bound-decisions"]))
        d.soon(lambda: d.signal(reviewer="alice"))
        outcome = await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP)
        assert outcome.status == "approved" and d.warnings == []

    async def test_a_decision_for_other_arguments_is_refused(self) -> None:
        d = Desk()
        d.soon(lambda: d.signal(approval_id=approval_id(), reviewer="alice", args_sha256="0" * 64))
        outcome = await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP)
        assert outcome.status == "timed_out" and "args_sha256 does not match" in d.warnings[0]

    @pytest.mark.parametrize("payloads", [(), ({"approval_id": "x"}, {"approval_id": "y"}), ("approve",), ({"approval_id": "x", "typo": 1},)])
    def test_malformed_signals_are_listed_never_raised(self, payloads: tuple[Any, ...]) -> None:
        d = Desk()
        d.intake.take_signal(payloads, approved=True)
        assert len(d.warnings) == 1 and d.warnings[0].startswith("DECISION_REFUSED: approve signal ignored:")

    def test_before_the_profile_is_known_nothing_is_pending(self) -> None:
        d = Desk(run=RunSettings())
        d.signal(approval_id="apr-1", reviewer="alice")
        assert d.warnings == ["DECISION_REFUSED: approve signal ignored: no approval is pending"]

    def test_the_review_validator_refuses_an_unknown_id(self) -> None:
        d = Desk()
        with pytest.raises(ApplicationError, match="'apr-9' is not pending") as caught:
            d.intake.check_review(({"approval_id": "apr-9", "approved": True, "reviewer": "alice"},))
        assert caught.value.type == "DecisionRefused" and caught.value.non_retryable


class TestSignedDecisions:
    """A profile that requires signatures takes only signed reviews, checked against the keyring read now."""

    def signed(self, keyring: ReviewerKeyring | Exception) -> Desk:
        host = FakeHost({contracts.ACTIVITY_NOTIFY_REVIEWER: None, contracts.ACTIVITY_REVIEWER_KEYRING: self._raise_or(keyring)})
        return Desk(host, settings(approval={"max_amount": 1000.0, "require_signature": True, "reviewers": ["alice"]}))

    @staticmethod
    def _raise_or(keyring: ReviewerKeyring | Exception) -> Callable[[Any], ReviewerKeyring]:
        def answer(_: Any) -> ReviewerKeyring:
            if isinstance(keyring, Exception):
                raise keyring
            return keyring

        return answer

    async def _hold_and_sign(self, d: Desk, key: signing.SigningKey) -> tuple[asyncio.Future[Any], tuple[Any, ...]]:
        """Hold the refund, and sign alice's approval of it with ``key``: the hold, and the ``review`` payloads."""
        hold = asyncio.ensure_future(d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP))
        await asyncio.sleep(0)
        [target] = d.desk.pending()
        request = decisions.signed_review(
            key, target, namespace="default", workflow_id="wf-1", approved=True, reviewer="alice", comment=None,
            expires_at=int(d.host.clock.timestamp()) + 600,
        )
        return hold, (request.model_dump(mode="json"),)

    async def test_signed_by_the_reviewer_is_taken(self) -> None:
        alice = signing.generate_key("alice")
        d = self.signed(ReviewerKeyring(agent="unit-support", reviewers=["alice"], keys={"alice": alice.public_key}))
        hold, payloads = await self._hold_and_sign(d, alice)
        decided = await d.intake.take_review(payloads)
        assert decided.status == "approved" and (await hold).status == "approved"
        assert d.host.names() == [contracts.ACTIVITY_NOTIFY_REVIEWER, contracts.ACTIVITY_REVIEWER_KEYRING]

    async def test_a_key_revoked_meanwhile_no_longer_counts(self) -> None:
        alice = signing.generate_key("alice")
        d = self.signed(ReviewerKeyring(agent="unit-support", reviewers=["alice"], keys={}))
        hold, payloads = await self._hold_and_sign(d, alice)
        with pytest.raises(ApplicationError, match="has no key under"):
            await d.intake.take_review(payloads)
        assert d.desk.pending() and "DECISION_REFUSED: review update refused" in d.warnings[0]
        assert (await hold).status == "timed_out"  # nobody else decided it

    async def test_signals_are_refused(self) -> None:
        d = self.signed(ReviewerKeyring(agent="unit-support"))
        d.signal(approval_id=approval_id(), reviewer="alice")
        assert "requires signed decisions" in d.warnings[0]


class TestHoldingTheRun:
    """The run itself can be held (an anomaly rule pausing it), decided like any approval."""

    async def test_pauses_get_ids_of_their_own(self) -> None:
        d = Desk()
        for expected in ("approved", "rejected"):
            d.soon(lambda expected=expected: d.signal(expected == "approved", approval_id=d.desk.pending()[0].approval_id, reviewer="alice"))
            outcome = await d.desk.hold_run("pause", {"tool": "lookup_order", "args": {}}, reason="a loop", step=STEP)
            assert outcome.status == expected
        tag = approval_id().rsplit("-", 1)[1]
        assert [r.approval_id for r in d.desk.records()] == [f"pause-{STEP}-{tag}", f"pause-{STEP}-{tag}-2"]

    async def test_a_closed_run_advertises_nothing(self) -> None:
        d = Desk()
        hold = asyncio.ensure_future(d.desk.hold_run("pause", {}, reason="a loop", step=STEP))
        await asyncio.sleep(0)
        assert len(d.desk.pending()) == 1
        d.desk.close()
        assert d.desk.pending() == []
        hold.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hold


class DeadlineWithADecision(FakeHost):
    """The deadline fires in the workflow task that also brings a decision: ``decide`` runs, then the wait times out."""

    decide: Callable[[], None] = staticmethod(lambda: None)

    async def wait_condition(self, done: Callable[[], bool], *, timeout: float | None = None, timeout_summary: str | None = None) -> None:
        self.decide()
        assert timeout is not None
        self.clock += timedelta(seconds=timeout)
        raise asyncio.TimeoutError


class TestEdgesOfADecision:
    """One outcome per approval: at its deadline, after the run ended; and the awaiting mark cleared on every end."""

    @pytest.mark.parametrize("patched", [True, False])
    async def test_a_decision_taken_as_the_deadline_fires_stands(self, patched: bool) -> None:
        host = DeadlineWithADecision({contracts.ACTIVITY_NOTIFY_REVIEWER: None}, unpatched=[] if patched else [PATCH_DECISION_BEATS_DEADLINE])
        d = Desk(host)
        told: list[str] = []
        host.decide = lambda: told.append(d.desk.decide(approval_id(), True, "alice", None).status)  # type: ignore[method-assign]
        outcome = await d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP)
        # Runs begun before the patch replay as they ran: the deadline overwrote the decision.
        assert (told, outcome.status) == ((["approved"], "approved") if patched else (["approved"], "timed_out"))

    async def test_a_closed_run_refuses_decisions_and_clears_its_mark(self) -> None:
        d = Desk()
        hold = asyncio.ensure_future(d.desk.hold_tool_call(REFUND, 0, d.verdict(REFUND), [REFUND], STEP))
        await asyncio.sleep(0)
        hold.cancel()  # the run is cancelled while the approval waits
        with pytest.raises(asyncio.CancelledError):
            await hold
        d.desk.close()
        d.signal(approval_id=approval_id(), reviewer="alice")
        assert d.warnings == ["DECISION_REFUSED: approve signal ignored: the run has ended: it takes no more decisions"]
        assert [[u.value for u in updates] for updates in d.host.search_attributes] == [[True], [False]]
        assert PATCH_MARK_CLEARED_ON_CLOSE in d.host.patches

    async def test_the_validator_refuses_unsigned_expired_and_unbound_signed_reviews(self) -> None:
        alice = signing.generate_key("alice")
        d = Desk(run=settings(approval={"max_amount": 1000.0, "require_signature": True, "reviewers": ["alice"]}))
        d.desk._open_tool_call(REFUND, 0, d.verdict(REFUND), STEP)  # held, as the loop does before it waits
        [target] = d.desk.pending()

        def signed(expires_in: int = 600, **changes: Any) -> tuple[Any, ...]:
            request = decisions.signed_review(
                alice, target.model_copy(update=changes), namespace="default", workflow_id="wf-1", approved=True, reviewer="alice",
                comment=None, expires_at=int(d.host.clock.timestamp()) + expires_in,
            )
            return (request.model_dump(mode="json"),)

        cases = {
            "this agent requires signed decisions": ({"approval_id": target.approval_id, "approved": True, "reviewer": "alice"},),
            "the decision expired at": signed(expires_in=-1),
            "the decision is for run other-run": signed(run_id="other-run"),
            "args_sha256 does not match": signed(args_sha256="0" * 64),
        }
        for message, payloads in cases.items():
            with pytest.raises(ApplicationError, match=message):
                d.intake.check_review(payloads)
        d.intake.check_review(signed())  # bound and in time: accepted (its signature is checked by the handler)
        assert d.host.names() == [contracts.ACTIVITY_NOTIFY_REVIEWER]  # the validator read nothing: no keyring activity
