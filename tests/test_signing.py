"""Bound and signed decisions, without Temporal: the canonical message, keys, and who may decide.

The workflow tests (tests/test_signed_approvals.py) show the same rules on a real
server; these tables pin each rule down, one refusal at a time.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from durable_agent import signing
from durable_agent.decisions import (
    DecisionRefused,
    approval_id,
    check_binding,
    check_signer,
    decision_target,
    delegate_may_decide,
    signed_review,
    unauthenticated_allow_list,
)
from durable_agent.schemas import ApprovalPolicy, ApprovalRecord, PendingApproval, ReviewerKeyring, ReviewRequest

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)
ARGS = {"order_id": "ord-789", "amount": 4999.0, "currency": "USD"}
WHERE = {"namespace": "default", "workflow_id": "run-1"}


def pending(approval: str = "apr-3-aaaaaaaa", args: dict[str, Any] | None = None, run_id: str = "run-id-1") -> PendingApproval:
    args = ARGS if args is None else args
    return PendingApproval(
        approval_id=approval,
        run_id=run_id,
        tool="issue_refund",
        args=args,
        args_sha256=signing.args_digest(args),
        risk="medium",
        reason="amount 4999 USD is above the limit of 1000",
        deadline=NOW + timedelta(minutes=5),
        requested_at=NOW,
    )


@pytest.fixture(scope="module")
def alice() -> signing.SigningKey:
    return signing.generate_key("alice")


@pytest.fixture(scope="module")
def inbox() -> signing.SigningKey:
    return signing.generate_key("inbox")


@pytest.fixture(scope="module")
def bob() -> signing.SigningKey:
    return signing.generate_key("bob")


def keyring(*keys: signing.SigningKey, reviewers: tuple[str, ...] = ("alice",), delegates: tuple[str, ...] = ("inbox",)) -> ReviewerKeyring:
    return ReviewerKeyring(
        agent="support", reviewers=list(reviewers), delegates=list(delegates), keys={k.name: k.public_key for k in keys}
    )


def signed(key: signing.SigningKey, target: PendingApproval | None = None, **overrides: Any) -> ReviewRequest:
    fields: dict[str, Any] = {
        "approved": True, "reviewer": "alice", "comment": "VIP", "expires_at": int((NOW + timedelta(minutes=10)).timestamp()), **WHERE,
    }
    fields.update(overrides)
    return signed_review(key, target or pending(), **fields)


class TestCanonicalJson:
    """One byte string per value, as JSON writers in other languages produce it."""

    def test_sorted_compact_and_integral_numbers(self) -> None:
        assert signing.signable_json({"b": 1.0, "a": [2.5, "é"]}) == '{"a":[2.5,"é"],"b":1}'.encode()

    def test_digest_is_independent_of_key_order_and_float_form(self) -> None:
        assert signing.args_digest({"amount": 4999.0, "order_id": "x"}) == signing.args_digest({"order_id": "x", "amount": 4999})
        assert signing.args_digest({"amount": 4999.5}) != signing.args_digest({"amount": 4999})
        assert re.fullmatch(r"[0-9a-f]{64}", signing.args_digest(ARGS))


class TestKeys:
    """Key files are the owner's alone; public keys are one pasteable line."""

    def test_new_key_file_is_0600_and_loads(self, tmp_path: Path) -> None:
        key = signing.generate_key("alice@example.com")
        path = signing.write_key_file(key, tmp_path / "keys")
        assert path.name == "alice@example.com.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        loaded = signing.load_key_file(path)
        assert (loaded.name, loaded.public_key) == (key.name, key.public_key)
        assert signing.toml_key_line(key.name, key.public_key) == f'"alice@example.com" = "{key.public_key}"'
        assert signing.toml_key_line("alice", key.public_key).startswith("alice = ")

    def test_never_overwrites(self, tmp_path: Path) -> None:
        signing.write_key_file(signing.generate_key("alice"), tmp_path)
        with pytest.raises(signing.KeyFileError, match="exists already"):
            signing.write_key_file(signing.generate_key("alice"), tmp_path)

    def test_refuses_a_key_others_can_read(self, tmp_path: Path) -> None:
        path = signing.write_key_file(signing.generate_key("alice"), tmp_path)
        os.chmod(path, 0o644)
        with pytest.raises(signing.KeyFileError, match="chmod 600"):
            signing.load_key_file(path)

    @pytest.mark.parametrize(
        ("text", "message"),
        [("alice", "ed25519:BASE64"), ("ed25519:!!!", "not valid base64"), ("ed25519:AAAA", "32 bytes, this one is 3")],
    )
    def test_bad_public_keys(self, text: str, message: str) -> None:
        with pytest.raises(signing.KeyFileError, match=re.escape(message)):
            signing.parse_public_key(text)

    def test_bad_names(self) -> None:
        with pytest.raises(signing.KeyFileError, match="cannot name a key"):
            signing.generate_key("../etc/passwd")


class TestDecisionTarget:
    """A decision names the approval it decides, for the arguments it saw, once."""

    def test_names_a_pending_approval(self) -> None:
        waiting = {"apr-3-a": pending("apr-3-a"), "apr-3-2-a": pending("apr-3-2-a")}
        assert decision_target(waiting, {}, "apr-3-2-a", "alice", ApprovalPolicy()).approval_id == "apr-3-2-a"

    def test_matching_digest_is_accepted(self) -> None:
        target = pending()
        found = decision_target({target.approval_id: target}, {}, target.approval_id, "x", None, args_sha256=target.args_sha256.upper())
        assert found is target

    def test_runs_begun_before_ids_were_required_may_leave_it_out(self) -> None:
        assert decision_target({"apr-3": pending("apr-3")}, {}, None, "bob", ApprovalPolicy(), require_id=False).approval_id == "apr-3"

    @pytest.mark.parametrize(
        ("waiting", "decided", "approval", "extra", "message"),
        [
            ([], {}, None, {}, "no approval is pending"),
            (["apr-3-a"], {}, None, {}, "approval_id is required: name the approval you decide (pending: apr-3-a)"),
            (["apr-3-a", "apr-3-2-a"], {}, None, {"require_id": False}, "approval_id is required: name the approval you decide (pending: apr-3-a, apr-3-2-a)"),
            (["apr-5-a"], {"apr-3-a": ("approved", "alice")}, "apr-3-a", {}, "approval 'apr-3-a' was already decided: approved by alice; pending: apr-5-a"),
            (["apr-5-a"], {"apr-3-a": ("timed_out", None)}, "apr-3-a", {}, "approval 'apr-3-a' was already decided: timed out; pending: apr-5-a"),
            ([], {}, "apr-999", {}, "approval 'apr-999' is not pending; pending: none"),
            (["apr-5-a"], {}, "apr-5-a", {"args_sha256": "0" * 64}, "args_sha256 does not match the arguments of apr-5-a"),
        ],
    )
    def test_refused(self, waiting: list[str], decided: dict[str, tuple[str, str | None]], approval: str | None, extra: dict[str, Any], message: str) -> None:
        records = {k: ApprovalRecord(approval_id=k, tool="issue_refund", status=s, reviewer=r) for k, (s, r) in decided.items()}  # type: ignore[arg-type]
        with pytest.raises(DecisionRefused, match="^" + re.escape(message)):
            decision_target({k: pending(k) for k in waiting}, records, approval, "alice", ApprovalPolicy(), **extra)

    @pytest.mark.parametrize(("reviewer", "who"), [("mallory", "'mallory'"), (None, "a reviewer with no name")])
    def test_allow_list(self, reviewer: str | None, who: str) -> None:
        with pytest.raises(DecisionRefused, match=f"^{re.escape(who)} may not decide: allowed reviewers are alice, bob"):
            decision_target({"apr-5": pending("apr-5")}, {}, "apr-5", reviewer, ApprovalPolicy(reviewers=["alice", "bob"]))

    def test_ids_differ_across_executions_of_one_workflow_id(self) -> None:
        first, second = approval_id(3, 0, "0194f0c2-1111-7000-8000-000000000001"), approval_id(3, 0, "0194f0c2-1111-7000-8000-000000000002")
        assert first != second and first.startswith("apr-3-") and approval_id(3, 1, "r").startswith("apr-3-2-")


class TestSignedDecisions:
    """Ed25519 over namespace, workflow, run, approval, digest, verdict, reviewer, signer, comment and expiry."""

    def test_reviewer_signs_for_herself(self, alice: signing.SigningKey) -> None:
        request = signed(alice)
        check_binding(request, pending(), now=NOW)
        check_signer(request, pending(), keyring(alice), **WHERE)

    def test_a_delegate_signs_for_a_reviewer_on_the_allow_list(self, inbox: signing.SigningKey) -> None:
        request = signed(inbox, reviewer="alice")
        check_signer(request, pending(), keyring(inbox), **WHERE)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"signature": None}, "this agent requires signed decisions"),
            ({"run_id": "run-id-0"}, "the decision is for run run-id-0, but apr-3-aaaaaaaa waits in run run-id-1"),
            ({"args_sha256": "0" * 64}, "args_sha256 does not match"),
            ({"args_sha256": None}, "args_sha256 is missing"),
            ({"reviewer": None}, "a signed decision names its reviewer"),
        ],
    )
    def test_binding_refusals(self, alice: signing.SigningKey, change: dict[str, Any], message: str) -> None:
        request = signed(alice).model_copy(update=change)
        with pytest.raises(DecisionRefused, match="^" + re.escape(message)):
            check_binding(request, pending(), now=NOW)

    def test_expired(self, alice: signing.SigningKey) -> None:
        request = signed(alice, expires_at=int((NOW - timedelta(seconds=1)).timestamp()))
        with pytest.raises(DecisionRefused, match="^the decision expired at 2026-11-26T08:59:59"):
            check_binding(request, pending(), now=NOW)

    def test_wrong_key(self, alice: signing.SigningKey, bob: signing.SigningKey) -> None:
        forged = signed(bob).model_copy(update={"signature": signed(bob).signature.model_copy(update={"signer": "alice"})})  # type: ignore[union-attr]
        with pytest.raises(DecisionRefused, match="^the signature does not verify with the key of 'alice'"):
            check_signer(forged, pending(), keyring(alice), **WHERE)

    def test_claiming_another_reviewer(self, alice: signing.SigningKey, bob: signing.SigningKey) -> None:
        with pytest.raises(DecisionRefused, match="^the key of 'bob' may not sign for 'alice'"):
            check_signer(signed(bob, reviewer="alice"), pending(), keyring(alice, bob, reviewers=("alice", "bob")), **WHERE)

    def test_delegate_cannot_sign_for_someone_off_the_list(self, inbox: signing.SigningKey) -> None:
        with pytest.raises(DecisionRefused, match="^'mallory' may not decide: allowed reviewers are alice"):
            check_signer(signed(inbox, reviewer="mallory"), pending(), keyring(inbox), **WHERE)

    def test_revoked_key(self, alice: signing.SigningKey) -> None:
        with pytest.raises(DecisionRefused, match="^'alice' has no key under \\[reviewer_keys\\]"):
            check_signer(signed(alice), pending(), keyring(), **WHERE)

    @pytest.mark.parametrize(
        "tampered",
        [
            {"approved": False},
            {"comment": "refund twice"},
            {"approval_id": "apr-4-aaaaaaaa"},
        ],
    )
    def test_any_change_breaks_the_signature(self, alice: signing.SigningKey, tampered: dict[str, Any]) -> None:
        request = signed(alice).model_copy(update=tampered)
        target = pending(tampered.get("approval_id", "apr-3-aaaaaaaa"))
        with pytest.raises(DecisionRefused, match="^the signature does not verify with the key of 'alice'"):
            check_signer(request, target, keyring(alice), **WHERE)

    @pytest.mark.parametrize("where", [{"namespace": "prod", "workflow_id": "run-1"}, {"namespace": "default", "workflow_id": "run-2"}])
    def test_another_namespace_or_workflow(self, alice: signing.SigningKey, where: dict[str, str]) -> None:
        with pytest.raises(DecisionRefused, match="^the signature does not verify with the key of 'alice'"):
            check_signer(signed(alice), pending(), keyring(alice), **where)

    def test_a_decision_for_another_run_fails_even_when_it_names_this_one(self, alice: signing.SigningKey) -> None:
        other_run = signed(alice, target=pending(run_id="run-id-0")).model_copy(update={"run_id": "run-id-1"})
        with pytest.raises(DecisionRefused, match="^the signature does not verify with the key of 'alice'"):
            check_signer(other_run, pending(), keyring(alice), **WHERE)


class TestWhoTheInboxShows:
    """The inbox shows a reviewer what a decision it signs for them could decide; a name-only allow-list is named."""

    @pytest.mark.parametrize(
        ("policy", "reviewer", "keys", "shown"),
        [
            (ApprovalPolicy(require_signature=True, reviewers=["alice"], delegates=["inbox"]), "alice", {"inbox"}, True),
            (ApprovalPolicy(require_signature=True, reviewers=["alice"], delegates=["inbox"]), "bob", {"inbox"}, False),
            # The inbox is not a delegate, or has no key: nothing it signs counts.
            (ApprovalPolicy(require_signature=True, reviewers=["alice"]), "alice", {"inbox"}, False),
            (ApprovalPolicy(require_signature=True, reviewers=["alice"], delegates=["inbox"]), "alice", set(), False),
            # Unsigned: the allow-list alone; an empty one lets anyone decide.
            (ApprovalPolicy(reviewers=["alice"]), "alice", set(), True),
            (ApprovalPolicy(reviewers=["alice"]), "mallory", set(), False),
            (ApprovalPolicy(), "mallory", set(), True),
        ],
    )
    def test_delegate_may_decide(self, policy: ApprovalPolicy, reviewer: str, keys: set[str], shown: bool) -> None:
        assert delegate_may_decide(policy, reviewer, "inbox", keys) is shown

    def test_a_name_only_allow_list_is_named_with_the_fix(self) -> None:
        warning = unauthenticated_allow_list("agents.toml", "support", ApprovalPolicy(reviewers=["alice"]))
        assert warning is not None and warning.startswith("agents.toml: agents.support.approval.reviewers ('alice') is not authenticated")
        assert "require_signature = true" in warning and "[reviewer_keys]" in warning
        assert unauthenticated_allow_list("agents.toml", "support", ApprovalPolicy()) is None
        signed = ApprovalPolicy(require_signature=True, reviewers=["alice"])
        assert unauthenticated_allow_list("agents.toml", "support", signed) is None
