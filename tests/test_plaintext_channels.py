"""What leaves a run in clear, and what never enters a payload (issue 17, items 2 and 3).

With ``AGENT_ENCRYPTION_KEYS`` set, histories and the content store hold ciphertext,
and every other channel the product writes (the trace sink on standard output or in
a file, the worker's logs, the reviewer webhook, OpenTelemetry spans) carries ids,
statuses, costs and refs: never the task, arguments, reasoning, results or answer,
unless the operator opts in for that one channel. A key holder still reads every
record whole with ``durable-agent trace``.

And no configuration secret is in a payload: the reviewer webhook's URL (for Slack,
the URL is the credential) is read by the notify activity from the worker's
configuration, so it is in no history, encrypted or not.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.history.v1 import History
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment

from durable_agent import ToolError, logs, tool, trace
from durable_agent.activities import AgentActivities
from durable_agent.cli import trace as trace_cli
from durable_agent.connection import connect
from durable_agent.encryption import KeyRing
from durable_agent.profiles import AgentsConfig
from durable_agent.schemas import AgentResult, PendingApproval, ReviewerNotice
from durable_agent.store import ContentStore, open_store
from durable_agent.testing import ScriptedModel, answer, tool_use
from tests.conftest import SUPPORT_PROFILE, Harness, make_config
from tests.otel_memory import SPANS, install
from tests.test_approvals import REFUND_4999, Webhook, signal_decision
from tests.test_decision_records import trace_args

#: An SSN-like marker: in the task, the arguments, a result, the reasoning, the tools' errors and the answer.
SSN = "078-05-1120"
TASK = f"Close the account of the customer with SSN {SSN}."
KEYS = "k1:" + base64.b64encode(bytes(range(32))).decode()


@tool(read_only=True)
async def pii_customer_record(customer_id: str) -> dict[str, Any]:
    """A customer's record, with their SSN (also as a key, where a value JSON cannot hold gets noted)."""
    return {"customer_id": customer_id, "name": "Ada", "ssn": SSN, "risk_scores": {SSN: float("nan")}}


@tool(read_only=True, retry="no_retry")
async def pii_crashing_lookup(query: str) -> str:
    """Crashes, quoting what it was given (a tool crash)."""
    raise RuntimeError(f"index corrupt near {query}")


@tool(read_only=True, retry="no_retry")
async def pii_refusing_upstream(query: str) -> str:
    """An upstream that refuses, quoting the query (a retryable tool error, out of retries at once)."""
    raise ToolError(f"upstream refused the query {query}")


@tool(destructive=True)
async def pii_close_account(account_id: str, note: str) -> dict[str, str]:
    """Close an account (destructive: it waits for a reviewer)."""
    return {"closed": account_id, "note": note}


SCRIPT = [
    tool_use("pii_customer_record", {"customer_id": f"cust-{SSN}"}, text=f"I will read the record of the customer with SSN {SSN}."),
    tool_use("pii_crashing_lookup", {"query": f"ssn={SSN}"}, text=f"Cross-checking {SSN}."),
    tool_use("pii_refusing_upstream", {"query": f"ssn={SSN}"}, text=f"Asking upstream about {SSN}."),
    tool_use("pii_close_account", {"account_id": f"acct-{SSN}", "note": f"closing for {SSN}"}, text=f"Closing the account of {SSN}."),
    answer(f"Closed the account of the customer with SSN {SSN}."),
]
TOOLS = ["pii_customer_record", "pii_crashing_lookup", "pii_refusing_upstream", "pii_close_account"]


def vault_config(model: str, webhook_url: str, **approval: Any) -> AgentsConfig:
    """A profile whose every tool handles the marker; its held action notifies ``webhook_url``."""
    return make_config(
        {
            "vault": {
                "system_prompt": "You look after customer records.",
                "tools": TOOLS,
                "autonomy": "supervised",
                "model": model,
                "approval": {"max_amount": 1000.0, "webhook_url": webhook_url, **approval},
            }
        }
    )


@pytest.fixture(scope="module", autouse=True)
def otel() -> None:
    if not install():
        pytest.skip("telemetry was already set up in this process by something else")


@pytest.fixture
def webhook() -> Any:
    with Webhook() as hook:
        yield hook


def log_text(records: list[logging.LogRecord]) -> str:
    """The records as the worker writes them, as text and as JSON lines (tracebacks included)."""
    text, as_json = logging.Formatter(logs.TEXT_FORMAT), logs.JsonFormatter()
    return "\n".join(f"{text.format(r)}\n{as_json.format(r)}" for r in records)


@dataclass
class Channels:
    """What one run left on each channel besides the history and the store."""

    workflow_id: str
    approval_id: str
    result: AgentResult
    sink: str
    stdout: str
    webhook: list[dict[str, Any]]
    logs: str
    spans: str
    model: ScriptedModel

    def sink_lines(self) -> list[dict[str, Any]]:
        return [line for line in map(json.loads, self.sink.splitlines()) if line["session_id"] == self.workflow_id]


@pytest.fixture
async def encrypted_run(
    server_address: str,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    webhook: Webhook,
) -> AsyncIterator[Any]:
    """``run(sink=..., **approval)``: one run of the vault profile with encryption on, its channels captured."""
    monkeypatch.setenv("AGENT_ENCRYPTION_KEYS", KEYS)
    monkeypatch.delenv("AGENT_TRACE_PLAINTEXT", raising=False)
    harnesses: list[Harness] = []

    async def run(*, sink: str, **approval: Any) -> Channels:
        sink_file = state_dir / "sink.jsonl"
        trace.configure(str(sink_file) if sink == "file" else None)
        client = await connect(server_address)  # encrypts with the keys; carries the OpenTelemetry plugin
        harness = Harness(client, state_dir)
        harnesses.append(harness)
        harness.store = open_store(KeyRing.from_env())  # as the worker opens it (and `durable-agent trace`)
        model_name, model = harness.scripted(list(SCRIPT))
        capsys.readouterr()
        caplog.set_level(logging.DEBUG)
        spans_before = len(SPANS.get_finished_spans())
        async with harness.worker(vault_config(model_name, webhook.url, **approval)):
            handle = await harness.start({"task": TASK, "agent": "vault"})
            approval_id = await signal_decision(handle, reviewer="alice")
            result = await handle.result()
        await webhook.wait_for_posts()
        stdout = capsys.readouterr().out
        return Channels(
            workflow_id=handle.id,
            approval_id=approval_id,
            result=result,
            sink=sink_file.read_text() if sink == "file" else stdout,
            stdout=stdout,
            webhook=list(webhook.bodies),
            logs=log_text(caplog.records),
            spans="\n".join(s.to_json() for s in SPANS.get_finished_spans()[spans_before:]),
            model=model,
        )

    try:
        yield run
    finally:
        for harness in harnesses:
            harness.close()


class TestNothingInClear:
    """With encryption on, the sink, logs, webhook and spans carry ids, statuses, costs and refs only."""

    @pytest.mark.parametrize("sink", ["stdout", "file"])
    async def test_no_channel_carries_what_the_run_handles(
        self, encrypted_run: Any, sink: str, server_address: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen = await encrypted_run(sink=sink)
        assert seen.result.status == "success" and SSN in (seen.result.answer or "")  # the client holding the keys reads it
        assert seen.sink_lines(), "the sink has the run's records"
        assert SSN not in seen.sink, "the trace sink"
        assert SSN not in seen.stdout, "standard output"
        assert SSN not in json.dumps(seen.webhook), "the webhook body"
        assert SSN not in seen.logs, "the worker's logs"
        assert SSN not in seen.spans, "the OpenTelemetry spans"
        assert "execute_tool pii_crashing_lookup" in seen.spans and "RunActivity:run_tool" in seen.spans, "spans were captured"

        # The sink keeps ids, statuses, costs and refs.
        lines = seen.sink_lines()
        assert [line["action"]["tool"] for line in lines] == [*TOOLS, None]
        assert [line["observation"]["status"] for line in lines] == ["ok", "unavailable", "unavailable", "ok", "answered"]
        assert all(line["record_id"].startswith(f"{seen.workflow_id}/") and line["redacted"] for line in lines)
        assert all(line["cost"]["estimated_cost"] > 0 for line in lines)
        assert lines[0]["observation"]["result_ref"].startswith("sha256:") and lines[0]["warnings"] == ["RESULT_CONVERTED"]
        assert lines[3]["observation"]["approval_id"] == seen.approval_id
        # The reviewer is told what waits and how to decide, not what it is about.
        body = seen.webhook[0]
        assert body["workflow_id"] == seen.workflow_id and body["agent"] == "vault" and body["redacted"] is True
        assert body["approval"]["approval_id"] == seen.approval_id and body["approval"]["tool"] == "pii_close_account"
        assert "args" not in body["approval"] and "context" not in body["approval"]
        assert seen.approval_id in body["approve_command"]
        # The log says that an approval waits and that a tool crashed, without what they were about.
        assert f"approval {seen.approval_id} waits in {seen.workflow_id}" in seen.logs
        assert "tool pii_crashing_lookup crashed" in seen.logs and "Completing activity as failed" in seen.logs

        # The model was told the errors in full (they travel encrypted).
        told = [
            block["content"]
            for request in seen.model.requests
            for block in request.messages[-1]["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
        assert any(f"index corrupt near ssn={SSN}" in text for text in told), told
        assert any(f"upstream refused the query ssn={SSN}" in text for text in told), told

        # A key holder reads every record whole.
        out = io.StringIO()
        assert await trace_cli.main(trace_args(seen.workflow_id, server_address, json=True), out=out) == 0
        full = [json.loads(line) for line in out.getvalue().splitlines()]
        assert full[0]["action"]["args"] == {"customer_id": f"cust-{SSN}"} and SSN in full[0]["action"]["reasoning"]
        assert SSN in full[0]["observation"]["result_preview"]
        assert f"index corrupt near ssn={SSN}" in full[1]["observation"]["message"]
        assert full[3]["action"]["args"]["account_id"] == f"acct-{SSN}"
        assert SSN in full[4]["action"]["reasoning"]  # the answer
        # Without the keys, nothing.
        monkeypatch.delenv("AGENT_ENCRYPTION_KEYS")
        out = io.StringIO()
        assert await trace_cli.main(trace_args(seen.workflow_id, server_address, json=True), out=out) == 2
        assert SSN not in out.getvalue()


class TestOptIns:
    """An operator's opt-in opens exactly its own channel."""

    async def test_trace_plaintext_opens_the_sink_only(self, encrypted_run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AGENT_TRACE_PLAINTEXT", "1")
        seen = await encrypted_run(sink="stdout")
        lines = seen.sink_lines()
        assert lines[0]["action"]["args"] == {"customer_id": f"cust-{SSN}"} and SSN in lines[0]["observation"]["result_preview"]
        assert SSN in lines[-1]["action"]["reasoning"] and not any(line.get("redacted") for line in lines)
        assert SSN not in json.dumps(seen.webhook) and SSN not in seen.logs and SSN not in seen.spans

    async def test_the_webhook_flag_opens_the_webhook_only(self, encrypted_run: Any) -> None:
        seen = await encrypted_run(sink="file", webhook_plaintext=True)
        body = seen.webhook[0]
        assert body["approval"]["args"] == {"account_id": f"acct-{SSN}", "note": f"closing for {SSN}"}
        assert SSN in json.dumps(body["approval"]["context"]) and "redacted" not in body
        assert "webhook_url" not in body
        assert SSN not in seen.sink and SSN not in seen.stdout and SSN not in seen.logs and SSN not in seen.spans


# --------------------------------------------------------------- no secret in a payload


async def chain_histories(client: Client, handle: WorkflowHandle[Any, Any]) -> list[History]:
    """The histories of every execution of ``handle``'s run, first to last (following continue-as-new)."""
    histories: list[History] = []
    run_id: str | None = handle.first_execution_run_id or handle.result_run_id
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        histories.append(History(events=history.events))
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return histories


class TestNoSecretInPayloads:
    """The webhook URL stays in the worker's configuration: no payload of any history carries it."""

    async def test_the_webhook_url_is_in_no_history(self, harness: Harness, webhook: Webhook) -> None:
        assert "s3cr3t" in webhook.url  # the token a Slack-style URL carries
        profile = {**SUPPORT_PROFILE, "continue_as_new_every": 3, "approval": {**SUPPORT_PROFILE["approval"], "webhook_url": webhook.url}}
        async with harness.worker(make_config({"support": profile})):
            handle = await harness.start(REFUND_4999)  # encryption off: the history is plain JSON
            approval_id = await signal_decision(handle, reviewer="alice")
            result = await handle.result()
        assert result.status == "success" and [a.approval_id for a in result.approvals] == [approval_id]
        histories = await chain_histories(harness.client, handle)
        assert len(histories) == 2, "the run continued as new, carrying its state"
        for history in histories:
            raw = history.SerializeToString()
            assert b"s3cr3t" not in raw and b"/hooks/approvals" not in raw
        # The reviewer still heard of the approval, at the configured URL.
        body = (await webhook.wait_for_posts())[0]
        assert webhook.paths == ["/hooks/approvals/s3cr3t"] and body["approval"]["approval_id"] == approval_id

    async def test_a_notice_from_an_older_worker_posts_to_the_configured_url(self, tmp_path: Path, webhook: Webhook) -> None:
        """Notices scheduled before the upgrade carry a URL: the activity posts to the one in its configuration."""
        profile = {**SUPPORT_PROFILE, "approval": {**SUPPORT_PROFILE["approval"], "webhook_url": webhook.url}}
        activities = AgentActivities(make_config({"support": profile}), ContentStore(tmp_path / "content"))
        now = datetime.now(UTC)
        notice = ReviewerNotice(
            workflow_id="run-old",
            agent="support",
            approval=PendingApproval(
                approval_id="apr-3-1a2b3c4d", tool="issue_refund", args={"order_id": "ord-789", "amount": 4999}, risk="high",
                reason="amount 4999 is above the limit of 1000", deadline=now, requested_at=now,
            ),
            webhook_url="http://127.0.0.1:9/hooks/approvals/old-token",  # nothing listens there
        )
        await ActivityEnvironment().run(activities.notify_reviewer, notice)
        assert webhook.paths == ["/hooks/approvals/s3cr3t"]
        assert webhook.bodies[0]["approval"]["approval_id"] == "apr-3-1a2b3c4d"


class TestSinkView:
    """The sink's view of a record while payloads are encrypted, field by field."""

    def test_only_ids_statuses_costs_and_refs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.test_trace_records import make_record

        record = make_record(3, args={"ssn": SSN}, reasoning=f"about {SSN}").model_copy(
            update={
                "observation": {
                    "status": "unavailable", "duration_ms": 7, "result_ref": "sha256:ab", "approval_id": "apr-3-x",
                    "message": f"The tool crashed ({SSN})", "error": SSN, "result_preview": SSN, "reason": SSN, "anything_new": SSN,
                },
                "warnings": [f"POSSIBLE_LOOP: lookup called 3 times with {SSN}", f"step 3: {SSN}"],
            }
        )
        monkeypatch.delenv("AGENT_ENCRYPTION_KEYS", raising=False)
        assert json.loads(trace.sink_line(record)) == record.model_dump(mode="json")  # encryption off: whole
        monkeypatch.setenv("AGENT_ENCRYPTION_KEYS", KEYS)
        line = trace.sink_line(record)
        assert SSN not in line
        view = json.loads(line)
        assert view["action"] == {"type": "tool_call", "tool": "lookup_order", "args": None, "reasoning": None}
        assert view["observation"] == {"status": "unavailable", "duration_ms": 7, "result_ref": "sha256:ab", "approval_id": "apr-3-x"}
        assert view["warnings"] == ["POSSIBLE_LOOP", "WARNING"] and view["redacted"] is True
        assert view["record_id"] == record.record_id and view["cost"] == record.cost.model_dump(mode="json")
        monkeypatch.setenv("AGENT_TRACE_PLAINTEXT", "1")
        assert json.loads(trace.sink_line(record)) == record.model_dump(mode="json")


class TestStartWarnings:
    """A worker says at start which channel its operator opened while payloads are encrypted."""

    def test_each_opt_in_is_named(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from durable_agent.cli.worker import plaintext_opt_ins

        config = vault_config("offline", "https://hooks.example.com/approvals/TOKEN", webhook_plaintext=True)
        monkeypatch.delenv("AGENT_ENCRYPTION_KEYS", raising=False)
        monkeypatch.setenv("AGENT_TRACE_PLAINTEXT", "1")
        assert plaintext_opt_ins(config) == []  # nothing is encrypted: nothing to warn of
        monkeypatch.setenv("AGENT_ENCRYPTION_KEYS", KEYS)
        found = plaintext_opt_ins(config)
        assert len(found) == 2 and "AGENT_TRACE_PLAINTEXT" in found[0] and "'vault' sets webhook_plaintext" in found[1]
        monkeypatch.delenv("AGENT_TRACE_PLAINTEXT")
        assert plaintext_opt_ins(vault_config("offline", "https://hooks.example.com/x")) == []
