"""The approval and autonomy policy as pure functions: tables of cases, no Temporal."""

from __future__ import annotations

from typing import Any

import pytest

from durable_agent.policy import approve_command, evaluate, reviewer_allowed, run_autonomy
from durable_agent.schemas import ApprovalPolicy, Autonomy, ToolInfo

# The demo shop's tools, as the workflow sees them (metadata only).
LOOKUP = ToolInfo(name="lookup_order", read_only=True)
REFUND = ToolInfo(name="issue_refund", risk="medium", amount_arg="amount", currency_arg="currency")
CANCEL = ToolInfo(name="cancel_order", destructive=True, risk="high")
NOTE = ToolInfo(name="add_note")
PROTECTED = ToolInfo(name="change_email", protected=True)
WIRE = ToolInfo(name="wire", amount_arg="amount")  # risk low, money-bearing

SUPPORT = ApprovalPolicy(max_amount=1000.0)
SUPERVISED = Autonomy.SUPERVISED


class TestEvaluateSupervised:
    """Supervised runs: which actions wait for a person, and why."""

    @pytest.mark.parametrize(
        ("tool", "args", "policy", "verdict", "risk", "reason"),
        [
            # max_amount read through amount_arg: 20 USD runs, 4,999 USD waits, the limit itself runs.
            (REFUND, {"order_id": "ord-789", "amount": 20, "currency": "USD"}, SUPPORT, "allow", "medium", "within policy"),
            (REFUND, {"order_id": "ord-789", "amount": 4999, "currency": "USD"}, SUPPORT, "needs_approval", "medium",
             "amount 4999 USD is above the limit of 1000"),
            (REFUND, {"amount": 1000.0}, SUPPORT, "allow", "medium", "within policy"),
            (REFUND, {"amount": "4999.00"}, SUPPORT, "needs_approval", "medium", "above the limit"),
            # Money fails closed: an amount that is not a number cannot be checked, so it waits.
            (REFUND, {"amount": "lots"}, SUPPORT, "needs_approval", "medium", "not a number"),
            (REFUND, {"amount": float("nan")}, SUPPORT, "needs_approval", "medium", "not a number"),
            (REFUND, {"amount": True}, SUPPORT, "needs_approval", "medium", "not a number"),
            # A low-risk tool over the limit is shown to the reviewer as high risk.
            (WIRE, {"amount": 5000}, SUPPORT, "needs_approval", "high", "above the limit"),
            # Without the run's total (the rules of runs begun before money limits): no max_amount, no check.
            # With it, every amount waits (tests/test_money.py).
            (REFUND, {"amount": 10**9}, ApprovalPolicy(), "allow", "medium", "within policy"),
            # Destructive: waits, unless the profile turns that rule off.
            (CANCEL, {"order_id": "ord-1001"}, SUPPORT, "needs_approval", "high", "cancel_order is destructive"),
            (CANCEL, {"order_id": "ord-1001"}, ApprovalPolicy(destructive_needs_approval=False), "needs_approval", "high",
             "high-risk action"),
            (CANCEL, {}, ApprovalPolicy(destructive_needs_approval=False, high_risk_actions=[]), "allow", "high", "within policy"),
            # Protected: by the decorator, or by the profile's protected_tools.
            (PROTECTED, {}, SUPPORT, "needs_approval", "high", "change_email is a protected tool"),
            (NOTE, {}, ApprovalPolicy(protected_tools=["add_note"]), "needs_approval", "high", "add_note is a protected tool"),
            (NOTE, {}, ApprovalPolicy(protected_tools=["other"]), "allow", "low", "within policy"),
            # high_risk_actions by risk level.
            (NOTE, {}, SUPPORT, "allow", "low", "within policy"),
            (REFUND, {"amount": 5}, ApprovalPolicy(high_risk_actions=["medium", "high"]), "needs_approval", "medium",
             "issue_refund is a medium-risk action"),
            (NOTE, {}, ApprovalPolicy(high_risk_actions=["low"]), "needs_approval", "low", "add_note is a low-risk action"),
            # Read-only tools run when supervised too, unless their risk is listed.
            (LOOKUP, {"order_id": "ord-789"}, SUPPORT, "allow", "low", "within policy"),
        ],
    )
    def test_verdict(
        self, tool: ToolInfo, args: dict[str, Any], policy: ApprovalPolicy, verdict: str, risk: str, reason: str
    ) -> None:
        decision = evaluate(tool, args, SUPERVISED, policy)
        assert (decision.verdict, decision.risk) == (verdict, risk)
        assert reason in decision.reason


class TestAutonomyLevels:
    """read_only refuses what could change something; autonomous asks nobody."""

    @pytest.mark.parametrize(
        ("autonomy", "tool", "args", "verdict"),
        [
            (Autonomy.READ_ONLY, LOOKUP, {"order_id": "ord-789"}, "allow"),
            (Autonomy.READ_ONLY, REFUND, {"amount": 20}, "refuse"),
            (Autonomy.READ_ONLY, NOTE, {}, "refuse"),
            (Autonomy.READ_ONLY, CANCEL, {}, "refuse"),
            (Autonomy.SUPERVISED, CANCEL, {}, "needs_approval"),
            (Autonomy.AUTONOMOUS, CANCEL, {"order_id": "ord-1001"}, "allow"),
            (Autonomy.AUTONOMOUS, REFUND, {"amount": 4999}, "allow"),
            (Autonomy.AUTONOMOUS, PROTECTED, {}, "allow"),
        ],
    )
    def test_verdict(self, autonomy: Autonomy, tool: ToolInfo, args: dict[str, Any], verdict: str) -> None:
        assert evaluate(tool, args, autonomy, SUPPORT).verdict == verdict

    def test_read_only_refusal_tells_the_model_it_was_not_executed(self) -> None:
        decision = evaluate(REFUND, {"amount": 20}, Autonomy.READ_ONLY, SUPPORT)
        assert "read-only" in decision.reason and "not executed" in decision.reason

    @pytest.mark.parametrize(
        ("profile", "requested", "effective"),
        [
            (Autonomy.SUPERVISED, None, Autonomy.SUPERVISED),
            (Autonomy.SUPERVISED, Autonomy.READ_ONLY, Autonomy.READ_ONLY),
            (Autonomy.SUPERVISED, Autonomy.AUTONOMOUS, Autonomy.SUPERVISED),
            (Autonomy.READ_ONLY, Autonomy.AUTONOMOUS, Autonomy.READ_ONLY),
            (Autonomy.READ_ONLY, Autonomy.SUPERVISED, Autonomy.READ_ONLY),
            (Autonomy.AUTONOMOUS, Autonomy.SUPERVISED, Autonomy.SUPERVISED),
            (Autonomy.AUTONOMOUS, Autonomy.READ_ONLY, Autonomy.READ_ONLY),
            (Autonomy.AUTONOMOUS, Autonomy.AUTONOMOUS, Autonomy.AUTONOMOUS),
        ],
    )
    def test_tighten_never_loosens(self, profile: Autonomy, requested: Autonomy | None, effective: Autonomy) -> None:
        assert profile.tighten(requested) is effective
        level, warning = run_autonomy(profile, requested)
        assert level is effective
        loosening = requested is not None and requested.rank > profile.rank
        assert (warning is not None) == loosening
        if warning:
            assert warning.startswith("AUTONOMY_NOT_LOOSENED") and profile.value in warning


class TestReviewers:
    """Who may decide, and which pending approval a decision is for."""

    @pytest.mark.parametrize(
        ("reviewers", "reviewer", "allowed"),
        [
            ([], "anyone", True),
            ([], None, True),
            (["alice", "bob"], "alice", True),
            (["alice", "bob"], "mallory", False),
            (["alice", "bob"], None, False),
            (["alice"], "Alice", False),  # names are exact
        ],
    )
    def test_allow_list(self, reviewers: list[str], reviewer: str | None, allowed: bool) -> None:
        assert reviewer_allowed(ApprovalPolicy(reviewers=reviewers), reviewer) is allowed

    # Bound decisions (decision_target) are tested in tests/test_signing.py.


class TestApproveCommand:
    """The command shown in the UI and the log is one a person can paste."""

    def test_default_namespace(self) -> None:
        assert approve_command("run-1", "apr-3") == (
            "temporal workflow signal --workflow-id run-1 --name approve "
            """--input '{"approval_id": "apr-3", "reviewer": "YOUR_NAME"}'"""
        )

    def test_other_namespace_and_reject(self) -> None:
        command = approve_command("run 1", "apr-3", namespace="prod", name="reject")
        assert command.startswith("temporal workflow signal --namespace prod --workflow-id 'run 1' --name reject ")

    def test_address_and_reviewer(self) -> None:
        command = approve_command("run-1", "apr-3", address="127.0.0.1:7233", reviewer="alice")
        assert command == (
            "temporal workflow signal --address 127.0.0.1:7233 --workflow-id run-1 --name approve "
            """--input '{"approval_id": "apr-3", "reviewer": "alice"}'"""
        )
