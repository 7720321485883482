"""Approvals a security reviewer can trust, on a real Temporal server.

Bound decisions (every profile): a decision names an approval id that is unique
across executions of the workflow id, may carry the digest of the arguments it
was made for, and is used once. Signed decisions (profiles with
``require_signature``): only an Ed25519 signature by a reviewer on the allow-list,
or by a delegate for one, over this run, approval, digest, verdict and expiry
counts; the keys are read when the decision arrives. Every refusal leaves the run
waiting and is listed in its warnings; effects are checked in the shop's database
and the event history.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from durable_agent import signing
from durable_agent.client import AgentClient, ApprovalRefused
from durable_agent.decisions import signed_review
from durable_agent.demo import shop
from durable_agent.profiles import AgentsConfig, load_config
from durable_agent.schemas import ApprovalRecord, PendingApproval
from durable_agent.testing import answer, tool_use
from tests.conftest import ROOT, Harness, subprocess_env
from tests.test_approvals import (
    CANCEL_1001,
    REFUND_4999,
    pending_after,
    refused_warnings,
    scheduled,
    support,
    tools_run,
    wait_pending,
)

APPROVAL_ID = re.compile(r"apr-3-[0-9a-f]{8}")


def write_config(path: Path, keys: dict[str, str], *, reviewers: list[str], delegates: list[str] = (), extra: str = "") -> Path:  # type: ignore[assignment]
    """An agents.toml with the support demo requiring signed decisions."""
    lines = "\n".join(signing.toml_key_line(name, key) for name, key in keys.items())
    path.write_text(
        f"""tool_modules = ["durable_agent.demo.shop", "tests.tools_for_tests"]
[reviewer_keys]
{lines}
[agents.support]
system_prompt = "You are a support agent."
tools = ["lookup_order", "search_kb", "issue_refund", "cancel_order"]
autonomy = "supervised"
[agents.support.approval]
max_amount = 1000.0
timeout_seconds = 300
require_signature = true
reviewers = {json.dumps(reviewers)}
delegates = {json.dumps(list(delegates))}
{extra}
"""
    )
    os.utime(path, ns=(time.time_ns(), time.time_ns()))  # a rewrite within the same tick still counts as a change
    return path


@pytest.fixture(scope="module")
def people() -> dict[str, signing.SigningKey]:
    return {name: signing.generate_key(name) for name in ("alice", "bob", "mallory", "inbox")}


def signed_profile(tmp_path: Path, people: dict[str, signing.SigningKey], **kwargs: Any) -> tuple[Path, AgentsConfig]:
    keys = {name: people[name].public_key for name in ("alice", "bob", "inbox")}
    path = write_config(tmp_path / "agents.toml", keys, reviewers=["alice", "bob"], delegates=["inbox"], **kwargs)
    return path, load_config(path)


async def refusal(handle: WorkflowHandle[Any, Any], request: Any) -> str:
    """Send ``review``; expect a refusal; its message."""
    payload = request.model_dump(mode="json", exclude_none=True) if hasattr(request, "model_dump") else request
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update("review", payload)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable
    return cause.message


def sign(key: signing.SigningKey, handle: WorkflowHandle[Any, Any], target: PendingApproval, **fields: Any) -> Any:
    values: dict[str, Any] = {"approved": True, "reviewer": key.name, "comment": None, "expires_at": int(time.time()) + 600}
    values.update(fields)
    return signed_review(key, target, namespace="default", workflow_id=handle.id, **values)


def durable_agent_cli(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """``durable-agent ARGS`` in its own process, pointed at the test server."""
    address = harness.client.service_client.config.target_host
    return subprocess.run(
        [sys.executable, "-m", "durable_agent", *args],
        cwd=ROOT, env=subprocess_env(harness.state, address), capture_output=True, text=True, timeout=60,
    )


class TestBoundDecisions:
    """Unsigned profiles: a decision names its approval, for its arguments, once."""

    async def test_an_id_from_an_earlier_execution_decides_nothing(self, harness: Harness) -> None:
        """The reproduced incident: a command printed for run 1, pasted after run 2 began under the same id."""
        model, _ = harness.scripted([tool_use("issue_refund", {"order_id": "ord-456", "amount": 2000, "currency": "USD"})])
        async with harness.worker():
            first = await harness.start({**REFUND_4999, "model": model}, workflow_id="refund-case-17")
            old = (await wait_pending(first)).pending_approvals[0]
            await first.cancel()
            await first.result()
            second = await harness.start(REFUND_4999, workflow_id="refund-case-17")
            new = (await wait_pending(second)).pending_approvals[0]
            assert old.approval_id != new.approval_id and APPROVAL_ID.fullmatch(new.approval_id)
            assert (new.run_id, new.args_sha256) == (second.result_run_id, signing.args_digest(new.args))
            await second.signal("approve", {"approval_id": old.approval_id, "reviewer": "alice"})
            assert "is not pending" in await refusal(second, {"approval_id": old.approval_id, "approved": True, "reviewer": "alice"})
            status = await wait_pending(second)
            assert [p.approval_id for p in status.pending_approvals] == [new.approval_id]  # still waiting
            assert refused_warnings(status) == [
                f"DECISION_REFUSED: approve signal ignored: approval '{old.approval_id}' is not pending; pending: {new.approval_id}"
            ]
            await second.signal("reject", {"approval_id": new.approval_id, "reviewer": "alice"})
            result = await second.result()
        assert shop.refunds_for("ord-789") == [] and shop.refunds_for("ord-456") == []
        assert [(a.approval_id, a.status) for a in result.approvals] == [(new.approval_id, "rejected")]

    async def test_no_id_no_decision_and_the_pending_ids_are_listed(self, harness: Harness) -> None:
        """The reproduced incident: bob's decision without an id must not land on another action."""
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            pending = (await wait_pending(handle)).pending_approvals[0]
            await handle.signal("approve", {"reviewer": "bob", "comment": "ok refund"})
            message = await refusal(handle, {"approved": True, "reviewer": "bob"})
            assert message == f"approval_id is required: name the approval you decide (pending: {pending.approval_id})"
            status = await wait_pending(handle)
            assert refused_warnings(status) == [f"DECISION_REFUSED: approve signal ignored: {message}"]
            await handle.signal("reject", {"approval_id": pending.approval_id, "reviewer": "bob"})
            result = await handle.result()
        assert shop.lookup_order("ord-1001")["status"] == "processing"
        assert [a.status for a in result.approvals] == ["rejected"]

    async def test_args_digest_must_match_and_a_decision_counts_once(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
            other = signing.args_digest({**pending.args, "amount": 20.0})
            await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice", "args_sha256": other})
            assert "args_sha256 does not match" in await refusal(
                handle, {"approval_id": pending.approval_id, "approved": True, "args_sha256": other}
            )
            assert [p.approval_id for p in (await wait_pending(handle)).pending_approvals] == [pending.approval_id]
            record = await handle.execute_update(
                "review",
                {"approval_id": pending.approval_id, "approved": True, "reviewer": "alice", "args_sha256": pending.args_sha256},
                result_type=ApprovalRecord,
            )
            again = await refusal(handle, {"approval_id": pending.approval_id, "approved": False, "reviewer": "bob"})
            await handle.signal("reject", {"approval_id": pending.approval_id, "reviewer": "bob"})
            result = await handle.result()
        assert again == f"approval '{pending.approval_id}' was already decided: approved by alice; pending: none"
        assert record.status == "approved" and [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        refused = [w for w in result.warnings if w.startswith("DECISION_REFUSED")]
        assert len(refused) == 2 and "args_sha256 does not match" in refused[0] and "approved by alice" in refused[1]

    async def test_a_timed_out_id_cannot_decide_a_later_approval(self, harness: Harness) -> None:
        model, _ = harness.scripted(
            [tool_use("cancel_order", {"order_id": "ord-456"}), tool_use("cancel_order", {"order_id": "ord-1001"}), answer("done")]
        )
        async with harness.worker(support(approval={"timeout_seconds": 2})):
            handle = await harness.start({**CANCEL_1001, "model": model})
            first = (await wait_pending(handle)).pending_approvals[0]
            second = await pending_after(handle, first.approval_id)  # the first timed out after 2 s
            await handle.signal("approve", {"approval_id": first.approval_id, "reviewer": "alice"})
            message = await refusal(handle, {"approval_id": first.approval_id, "approved": True, "reviewer": "alice"})
            result = await handle.result()  # the second times out too: nothing approved it
        assert message == f"approval '{first.approval_id}' was already decided: timed out; pending: {second.approval_id}"
        assert [a.status for a in result.approvals] == ["timed_out", "timed_out"]
        assert shop.lookup_order("ord-456")["status"] == "shipped" and shop.lookup_order("ord-1001")["status"] == "processing"


class TestSignedDecisions:
    """require_signature: only a valid signature by a reviewer on the current allow-list counts."""

    async def test_typed_in_decisions_cannot_approve(self, harness: Harness, tmp_path: Path, people: dict[str, signing.SigningKey]) -> None:
        _, config = signed_profile(tmp_path, people)
        async with harness.worker(config):
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
            assert pending.require_signature
            await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice"})
            unsigned = {"approval_id": pending.approval_id, "approved": True, "reviewer": "alice"}
            assert (await refusal(handle, unsigned)).startswith("this agent requires signed decisions")
            status = await wait_pending(handle)
            await handle.cancel()
            await handle.result()
            activities = await scheduled(handle)
        assert [p.approval_id for p in status.pending_approvals] == [pending.approval_id]
        # The unsigned review is refused by the update's validator: it never reaches the history, so it is not listed.
        assert [w.split(": ")[1] for w in refused_warnings(status)] == ["approve signal ignored"]
        assert tools_run(activities) == ["lookup_order", "search_kb"] and shop.refunds_for("ord-789") == []

    async def test_forged_stale_and_replayed_decisions_are_refused(
        self, harness: Harness, tmp_path: Path, people: dict[str, signing.SigningKey]
    ) -> None:
        alice, bob = people["alice"], people["bob"]
        _, config = signed_profile(tmp_path, people)
        async with harness.worker(config):
            handle = await harness.start(REFUND_4999)
            target = (await wait_pending(handle)).pending_approvals[0]
            by_bob = sign(bob, handle, target)
            forged = by_bob.model_copy(update={"signature": by_bob.signature.model_copy(update={"signer": "alice"}), "reviewer": "alice"})
            cases = {
                "wrong key": (forged, "the signature does not verify with the key of 'alice'"),
                "another reviewer": (sign(bob, handle, target, reviewer="alice"), "the key of 'bob' may not sign for 'alice'"),
                "altered digest": (
                    sign(alice, handle, target.model_copy(update={"args_sha256": signing.args_digest({"amount": 20})})),
                    "args_sha256 does not match",
                ),
                "another run": (sign(alice, handle, target.model_copy(update={"run_id": "0000-another-run"})), "the decision is for run 0000-another-run"),
                "expired": (sign(alice, handle, target, expires_at=int(time.time()) - 5), "the decision expired at"),
                "off the list": (sign(people["mallory"], handle, target), "'mallory' may not decide: allowed reviewers are alice, bob"),
            }
            for name, (request, expected) in cases.items():
                assert expected in await refusal(handle, request), name
            # Still waiting after all of them.
            assert [p.approval_id for p in (await wait_pending(handle)).pending_approvals] == [target.approval_id]
            good = sign(alice, handle, target, comment="checked the order")
            record = await handle.execute_update("review", good.model_dump(mode="json", exclude_none=True), result_type=ApprovalRecord)
            replayed = await refusal(handle, good)
            result = await handle.result()
        assert (record.status, record.reviewer, record.comment) == ("approved", "alice", "checked the order")
        assert replayed == f"approval '{target.approval_id}' was already decided: approved by alice; pending: none"
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        # Listed: the refusals made once the keys were read. The binding's (digest, run, expiry) and the replayed
        # decision are refused by the validator, before the history.
        refused = [w for w in result.warnings if w.startswith("DECISION_REFUSED: review update refused")]
        assert len(refused) == len(["wrong key", "another reviewer", "off the list"]), refused

    @pytest.mark.slow  # runs `durable-agent approve` processes
    async def test_durable_agent_approve_and_revocation_while_waiting(
        self, harness: Harness, tmp_path: Path, people: dict[str, signing.SigningKey]
    ) -> None:
        keys = tmp_path / "keys"
        made = durable_agent_cli(harness, "keys", "new", "alice", "--dir", str(keys))
        assert made.returncode == 0, made.stderr
        alice_line = made.stdout.strip()
        alice_key = signing.load_key_file(keys / "alice.key")
        assert alice_line == f'alice = "{alice_key.public_key}"'
        bob_file = signing.write_key_file(people["bob"], keys)
        path = write_config(tmp_path / "agents.toml", {"alice": alice_key.public_key, "bob": people["bob"].public_key}, reviewers=["alice", "bob"])
        async with harness.worker(load_config(path)):
            cancel = await harness.start(CANCEL_1001)
            refund = await harness.start(REFUND_4999)
            waiting_cancel = (await wait_pending(cancel)).pending_approvals[0]
            waiting_refund = (await wait_pending(refund)).pending_approvals[0]
            approved = await asyncio.to_thread(
                durable_agent_cli, harness, "approve", cancel.id, "--approval-id", waiting_cancel.approval_id,
                "--reviewer", "alice", "--key", str(keys / "alice.key"), "--comment", "customer asked",
            )
            assert approved.returncode == 0, approved.stderr
            cancelled = await cancel.result()
            # Alice's key is revoked while the refund waits: the file changes, no worker restarts.
            write_config(path, {"bob": people["bob"].public_key}, reviewers=["alice", "bob"])
            revoked = await asyncio.to_thread(
                durable_agent_cli, harness, "approve", refund.id, "--approval-id", waiting_refund.approval_id,
                "--reviewer", "alice", "--key", str(keys / "alice.key"),
            )
            assert [p.approval_id for p in (await wait_pending(refund)).pending_approvals] == [waiting_refund.approval_id]
            agents = AgentClient(harness.client, task_queue=harness.task_queue)
            record = await agents.reject(
                refund.id, waiting_refund.approval_id, reviewer="bob", comment="too much", key=signing.load_key_file(bob_file)
            )
            refunded = await refund.result()
        assert json.loads(approved.stdout)["reviewer"] == "alice" and json.loads(approved.stdout)["status"] == "approved"
        assert [(a.status, a.reviewer, a.comment) for a in cancelled.approvals] == [("approved", "alice", "customer asked")]
        assert shop.lookup_order("ord-1001")["status"] == "cancelled"
        assert revoked.returncode == 1 and "'alice' has no key under [reviewer_keys]" in revoked.stderr, revoked.stderr
        assert record.status == "rejected" and shop.refunds_for("ord-789") == []
        assert "REJECTED by bob: too much" in (refunded.answer or "")

    async def test_the_inbox_signs_only_for_reviewers_on_the_list(
        self, harness: Harness, tmp_path: Path, people: dict[str, signing.SigningKey]
    ) -> None:
        """The delegate path without a browser (the inbox tests drive it as a person would)."""
        _, config = signed_profile(tmp_path, people)
        async with harness.worker(config):
            handle = await harness.start(REFUND_4999)
            target = (await wait_pending(handle)).pending_approvals[0]
            agents = AgentClient(harness.client, task_queue=harness.task_queue)
            with pytest.raises(ApprovalRefused, match="'mallory' may not decide"):
                await agents.approve(handle.id, target.approval_id, reviewer="mallory", key=people["inbox"])
            record = await agents.approve(handle.id, target.approval_id, reviewer="bob", key=people["inbox"])
            result = await handle.result()
        assert (record.status, record.reviewer) == ("approved", "bob") and result.approvals == [record]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]


class TestConfig:
    """A profile that requires signatures says who decides, and each of them can sign."""

    def test_require_signature_needs_reviewers(self, tmp_path: Path, people: dict[str, signing.SigningKey]) -> None:
        from durable_agent.errors import ConfigError

        path = write_config(tmp_path / "agents.toml", {"alice": people["alice"].public_key}, reviewers=[])
        with pytest.raises(ConfigError, match=r"agents\.support\.approval\.reviewers: require_signature = true needs"):
            load_config(path)
        path = write_config(tmp_path / "agents.toml", {}, reviewers=["alice"])
        with pytest.raises(ConfigError, match=r"reviewers: none of these reviewers has a key under \[reviewer_keys\]"):
            load_config(path)
        path = write_config(tmp_path / "agents.toml", {"alice": "ed25519:AAAA"}, reviewers=["alice"])
        with pytest.raises(ConfigError, match=r"reviewer_keys: .*alice: .*32 bytes"):
            load_config(path)
