"""Remote tools (issue 19, item 5): activities another worker serves on its own task queue, through the same gate.

The other worker is a plain temporalio ``Worker`` in the test process with plain
``@activity.defn(name=...)`` functions (tests/remote_workers.py), as a Go or Java
team's worker would be: nothing of durable-agent runs there.
"""

# ruff: noqa: F811 - the MCP fixtures are imported, and tests take them by name

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from durable_agent.cli.worker import create_worker
from durable_agent.encryption import KeyRing, with_encryption
from durable_agent.errors import ConfigError
from durable_agent.profiles import load_config
from durable_agent.remote_tools import argument_problem
from durable_agent.schemas import AgentResult, StatusView
from durable_agent.testing import answer, tool_use
from tests import mcp_servers, remote_workers
from durable_agent.queues import activity_pollers
from tests.conftest import ROOT, Harness, make_config, subprocess_env
from tests.mcp_fixtures import free_port, http_server, mcp_state, stdio_server  # noqa: F401
from tests.test_failures import approval_pending, until

CHARGE_SCHEMA = {
    "type": "object",
    "properties": {"customer_id": {"type": "string"}, "amount": {"type": "number"}, "currency": {"type": "string"}},
    "required": ["customer_id", "amount", "currency"],
}


def remote_config(queue: str, **tools: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[remote_tools]``: charge_card and lookup_customer on ``queue``, and any others given."""
    base: dict[str, dict[str, Any]] = {
        "charge_card": {
            "task_queue": queue, "activity": "ChargeCard", "description": "Charge a customer's card.",
            "input_schema": CHARGE_SCHEMA, "amount_arg": "amount", "currency_arg": "currency", "timeout": 30,
        },
        "lookup_customer": {
            "task_queue": queue, "activity": "LookupCustomer", "description": "Look a customer up.", "read_only": True,
            "input_schema": {"type": "object", "properties": {"customer_id": {"type": "string"}}, "required": ["customer_id"]},
        },
    }
    return {**base, **tools}


def profile(model: str, tools: list[str], **extra: Any) -> dict[str, Any]:
    return {"model": model, "tools": tools, "autonomy": "supervised", "approval": {"max_amount": 100.0}, **extra}


def tool_observations(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["observation"] for r in trace if r["action"]["type"] == "tool_call"]


@pytest.fixture
def payments_queue() -> str:
    return f"payments-{uuid.uuid4().hex[:8]}"


class TestConfiguration:
    """A bad [remote_tools] entry stops the worker at start, naming the file and key."""

    def write(self, tmp_path: Path, body: str) -> Path:
        path = tmp_path / "agents.toml"
        path.write_text('tool_modules = ["durable_agent.demo.shop"]\n' + body)
        return path

    def test_a_remote_tool_and_its_policy_load(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, '''
[remote_tools.charge_card]
task_queue = "payments"
activity = "ChargeCard"
description = "Charge a customer's card."
input_schema = { type = "object", properties = { customer_id = { type = "string" }, amount = { type = "number" } }, required = ["customer_id", "amount"] }
amount_arg = "amount"
timeout = 30

[agents.support]
tools = ["lookup_order", "charge_card"]
rate_limits = { charge_card = "5/min" }
approval = { protected_tools = ["charge_card"] }
''')
        config = load_config(path)
        assert config.remote_tools["charge_card"].task_queue == "payments"

    @pytest.mark.parametrize(
        ("entry", "key", "says"),
        [
            ('input_schema = { type = "string" }', "remote_tools.charge_card.input_schema", "JSON Schema object"),
            ('input_schema = { type = "object", properties = { a = { type = "nope" } } }', "remote_tools.charge_card.input_schema", "not a valid JSON Schema"),
            ('input_schema = { type = "object", properties = { a = { "$ref" = "https://example.com/a.json" } } }',
             "remote_tools.charge_card.input_schema", "may only point inside the schema"),
            ('input_schema = { type = "object", properties = { a = { "$ref" = "#/$defs/gone" } } }',
             "remote_tools.charge_card.input_schema", "points to nothing"),
            ('input_schema = { type = "object" }\ntask_queue = ""', "remote_tools.charge_card.task_queue", "at least 1"),
            ('input_schema = { type = "object" }\namount_arg = "amount"', "remote_tools.charge_card", "amount_arg 'amount'"),
            ('input_schema = { type = "object" }\nretry = "forever"', "remote_tools.charge_card.retry", "no retry plan named"),
            ('input_schema = { type = "object" }\ntask_queu = "x"', "remote_tools.charge_card.task_queu", "unknown key"),
        ],
    )
    def test_a_bad_entry_is_named(self, tmp_path: Path, entry: str, key: str, says: str) -> None:
        body = '[remote_tools.charge_card]\nactivity = "ChargeCard"\ndescription = "Charge."\n' + entry + "\n"
        if "task_queue =" not in entry:
            body += 'task_queue = "payments"\n'
        path = self.write(tmp_path, body + '[agents.support]\ntools = ["lookup_order"]\n')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.key == key and says in str(caught.value), str(caught.value)
        assert str(path) in str(caught.value)

    def test_the_readmes_example_loads(self, tmp_path: Path) -> None:
        readme = (ROOT / "README.md").read_text()
        section = readme.split("### Remote tools", 1)[1]
        example = section.split("```toml\n", 1)[1].split("```", 1)[0]
        path = self.write(tmp_path, example + '\n[agents.support]\ntools = ["lookup_order", "charge_card"]\n')
        tool = load_config(path).remote_tools["charge_card"]
        assert (tool.task_queue, tool.activity, tool.amount_arg, tool.timeout) == ("payments", "ChargeCard", "amount", 30)

    def test_a_missing_task_queue_is_named(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, '[remote_tools.x]\nactivity = "X"\ndescription = "x"\ninput_schema = { type = "object" }\n[agents.a]\ntools = ["x"]\n')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.key == "remote_tools.x.task_queue"

    @pytest.mark.parametrize(
        ("name", "says"),
        [("lookup_order", "a Python @tool is named"), ("mcp__tickets__x", "MCP servers' tools"), ("a" * 65, "over the API's 64"),
         ("read_result", "built-in"), ("has.dot", "only have letters")],
    )
    def test_a_name_that_collides_or_is_too_long_is_refused(self, tmp_path: Path, name: str, says: str) -> None:
        body = f'[remote_tools."{name}"]\ntask_queue = "q"\nactivity = "X"\ndescription = "x"\ninput_schema = {{ type = "object" }}\n'
        path = self.write(tmp_path, body + '[agents.a]\ntools = ["lookup_order"]\n')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.key == f"remote_tools.{name}" and says in str(caught.value), str(caught.value)

    def test_mcp_tool_names_are_accepted_in_rate_limits_protected_tools_and_tool_policy(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, '''
[mcp_servers.tickets]
url = "http://127.0.0.1:9/mcp"

[agents.support]
tools = ["lookup_order", "tickets.*"]
rate_limits = { "tickets.create_ticket" = "5/min", mcp__tickets__delete_ticket = "1/min" }
approval = { protected_tools = ["tickets.refund_ticket", "mcp__tickets__close_ticket"] }

[agents.support.tool_policy.mcp__tickets__refund_ticket]
amount_arg = "amount"
''')
        config = load_config(path)
        assert config.agents["support"].approval.protected_tools == ["tickets.refund_ticket", "mcp__tickets__close_ticket"]

    def test_an_mcp_name_of_a_server_the_profile_does_not_use_is_refused(self, tmp_path: Path) -> None:
        path = self.write(tmp_path, '''
[mcp_servers.tickets]
url = "http://127.0.0.1:9/mcp"

[agents.support]
tools = ["lookup_order"]
approval = { protected_tools = ["mcp__tickets__close_ticket"] }
''')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.key == "agents.support.approval.protected_tools[0]"


class TestArgumentCheck:
    """The arguments are checked against the schema in the workflow, before anything is held or scheduled."""

    def test_fitting_arguments_pass(self) -> None:
        assert argument_problem(CHARGE_SCHEMA, {"customer_id": "c-1", "amount": 5, "currency": "EUR"}) is None

    def test_the_problems_are_named(self) -> None:
        problem = argument_problem(CHARGE_SCHEMA, {"customer_id": 7, "amount": "lots"})
        assert problem is not None
        assert "'currency' is a required property" in problem and "amount: 'lots' is not of type 'number'" in problem
        assert "customer_id: 7 is not of type 'string'" in problem

    def test_a_schema_that_cannot_be_applied_refuses_the_call_and_never_raises(self) -> None:
        # A recorded run may carry a schema that newer checks refuse: the workflow task must not fail on it.
        problem = argument_problem({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, {"a": 1})
        assert problem is not None and "cannot be applied" in problem


class TestThroughTheGate:
    """A remote tool runs, waits and fails as every tool does; the other worker gets one JSON object."""

    async def test_the_activity_runs_on_its_queue_and_its_result_reaches_the_model(self, harness: Harness, payments_queue: str) -> None:
        model, scripted = harness.scripted([tool_use("lookup_customer", {"customer_id": "c-42"}), answer("Ada is gold")])
        config = make_config({"support": profile(model, ["lookup_order", "lookup_customer"])}, remote_tools=remote_config(payments_queue))
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            handle = await harness.start({"task": "Who is c-42?"})
            result: AgentResult = await handle.result()
            trace = await handle.query("trace")
            history = await handle.fetch_history()
        assert result.status == "success", result
        assert result.tools_used == ["lookup_customer"]
        served = remote_workers.calls("LookupCustomer")
        info = await handle.describe()
        assert served == [({"customer_id": "c-42"}, f"{handle.id}/{info.run_id}/1/0/toolu_scripted_0001")]
        assert "Ada Lovelace" in scripted.tool_results()[0]["content"]
        assert tool_observations(trace)[0]["status"] == "ok" and tool_observations(trace)[0]["result_ref"]
        scheduled = [
            e.activity_task_scheduled_event_attributes for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        remote = [a for a in scheduled if a.activity_type.name == "LookupCustomer"]
        assert len(remote) == 1 and remote[0].task_queue.name == payments_queue
        assert not remote[0].heartbeat_timeout.ToTimedelta()  # a worker in another language may never heartbeat
        # The model saw the tool with its description and schema.
        tools = {t["name"]: t for t in scripted.requests[0].tools}
        assert tools["lookup_customer"]["description"] == "Look a customer up."
        assert tools["lookup_customer"]["input_schema"]["required"] == ["customer_id"]

    async def test_an_amount_over_the_limit_waits_for_approval_and_then_runs_once(self, harness: Harness, payments_queue: str) -> None:
        args = {"customer_id": "c-1", "amount": 500, "currency": "USD"}
        model, scripted = harness.scripted([tool_use("charge_card", args), answer("charged")])
        config = make_config({"support": profile(model, ["charge_card"])}, remote_tools=remote_config(payments_queue))
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            handle = await harness.start({"task": "Charge c-1 500 USD"})
            await until(lambda: approval_pending(handle), "an approval to wait", 30)
            held = (await handle.query("status", result_type=StatusView)).pending_approvals[0]
            assert held.tool == "charge_card" and "above the limit of 100" in held.reason
            assert remote_workers.calls("ChargeCard") == []  # nothing scheduled while it waits
            await handle.signal("approve", {"approval_id": held.approval_id, "reviewer": "alice"})
            result = await handle.result()
        assert result.status == "success", result
        assert [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]
        assert [args for args, _ in remote_workers.calls("ChargeCard")] == [args]
        assert '"captured"' in scripted.tool_results()[0]["content"]

    async def test_arguments_that_do_not_fit_the_schema_are_refused_and_nothing_runs(self, harness: Harness, payments_queue: str) -> None:
        model, scripted = harness.scripted([tool_use("charge_card", {"customer_id": "c-1", "amount": 5000}), answer("cannot")])
        config = make_config({"support": profile(model, ["charge_card"])}, remote_tools=remote_config(payments_queue))
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            handle = await harness.start({"task": "Charge c-1"})
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "success" and result.approvals == []  # nobody was asked to approve an invalid call
        assert remote_workers.calls("ChargeCard") == []
        block = scripted.tool_results()[0]
        assert block["is_error"] is True and "'currency' is a required property" in block["content"]
        assert tool_observations(trace)[0]["status"] == "invalid_arguments"

    async def test_a_refusal_by_the_other_worker_reaches_the_model(self, harness: Harness, payments_queue: str) -> None:
        refuse = {
            "task_queue": payments_queue, "activity": "RefuseRefund", "description": "Refund an order.", "idempotent": True,
            "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        }
        model, scripted = harness.scripted([tool_use("refund_order", {"order_id": "o-1"}), answer("already done")])
        tools = remote_config(payments_queue, refund_order=refuse)
        config = make_config({"support": profile(model, ["refund_order"], autonomy="autonomous")}, remote_tools=tools)
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            result = await harness.run({"task": "Refund o-1"})
        assert result.status == "success"
        assert len(remote_workers.calls("RefuseRefund")) == 1  # non-retryable: not tried again
        block = scripted.tool_results()[0]
        assert block["is_error"] is True and "order o-1 was already refunded" in block["content"]


class TestEncrypted:
    """With AGENT_ENCRYPTION_KEYS, a remote tool's arguments and result are encrypted as every payload is."""

    async def test_a_remote_worker_with_the_same_codec_serves_it_and_the_history_holds_no_plaintext(
        self, harness: Harness, payments_queue: str
    ) -> None:
        ring = KeyRing([("k1", os.urandom(32))])
        encrypted = Client(**{**harness.client.config(), "data_converter": with_encryption(pydantic_data_converter, ring)})
        model, scripted = harness.scripted([tool_use("lookup_customer", {"customer_id": "c-secret-42"}), answer("Ada is gold")])
        config = make_config({"support": profile(model, ["lookup_customer"])}, remote_tools=remote_config(payments_queue))
        their_converter = with_encryption(DataConverter.default, ring)  # their SDK's converter, with our codec
        worker = create_worker(encrypted, config, task_queue=harness.task_queue, store=harness.store, max_cached_workflows=0)
        async with remote_workers.serving(harness.client, payments_queue, their_converter), worker:
            handle = await encrypted.start_workflow(
                "AgentWorkflow", {"task": "Who is the customer?"}, id=f"run-{uuid.uuid4().hex[:12]}", task_queue=harness.task_queue,
                result_type=AgentResult,
            )
            result = await handle.result()
            history = (await harness.client.get_workflow_handle(handle.id).fetch_history()).to_json()
        assert result.status == "success", result
        assert remote_workers.calls("LookupCustomer")[0][0] == {"customer_id": "c-secret-42"}
        assert "Ada Lovelace" in scripted.tool_results()[0]["content"]
        assert "c-secret-42" not in history and "Ada Lovelace" not in history


class TestWhenTheOtherWorkerFails:
    """A timeout, a queue nobody polls: the run goes on, nothing runs twice, the model is told."""

    async def test_a_world_changing_call_that_times_out_is_not_sent_again_and_its_outcome_is_unknown(
        self, harness: Harness, payments_queue: str
    ) -> None:
        transfer = {
            "task_queue": payments_queue, "activity": "SlowTransfer", "description": "Move money.", "timeout": 1,
            "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}},
        }
        model, scripted = harness.scripted([tool_use("transfer", {"to": "acc-9"}), answer("unknown")])
        tools = remote_config(payments_queue, transfer=transfer)
        config = make_config({"support": profile(model, ["transfer"], autonomy="autonomous")}, remote_tools=tools)
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            handle = await harness.start({"task": "Transfer"})
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "success", result
        assert len(remote_workers.calls("SlowTransfer")) == 1
        assert tool_observations(trace)[0]["status"] == "outcome_unknown"
        assert "OUTCOME UNKNOWN" in scripted.tool_results()[0]["content"]

    async def test_a_cancelled_run_waits_for_a_world_changing_remote_call_to_end(self, harness: Harness, payments_queue: str) -> None:
        transfer = {
            "task_queue": payments_queue, "activity": "SlowTransfer", "description": "Move money.", "timeout": 60,
            "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}},
        }
        model, scripted = harness.scripted([tool_use("transfer", {"to": "acc-9"}), answer("never")])
        tools = remote_config(payments_queue, transfer=transfer)
        config = make_config({"support": profile(model, ["transfer"], autonomy="autonomous")}, remote_tools=tools)
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            handle = await harness.start({"task": "Transfer"})
            await until(lambda: remote_workers.calls("SlowTransfer"), "the remote call to start", 30)
            await handle.cancel()
            # It never heartbeats, so it cannot learn of the cancellation: the run waits for it to end.
            remote_workers.RELEASE.set()
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "cancelled", result
        assert len(remote_workers.calls("SlowTransfer")) == 1
        assert len(scripted.requests) == 1, "no model call after the cancellation"
        assert tool_observations(trace), (result, trace)
        assert tool_observations(trace)[0]["status"] == "ok"  # it did end, and its record says so

    async def test_a_queue_nobody_polls_makes_the_tool_unavailable_and_the_run_goes_on(self, harness: Harness) -> None:
        nobody = f"nobody-{uuid.uuid4().hex[:8]}"
        tools = remote_config(nobody)
        tools["charge_card"]["schedule_to_start"] = 1
        model, scripted = harness.scripted([tool_use("charge_card", {"customer_id": "c-1", "amount": 5, "currency": "USD"}), answer("later")])
        config = make_config({"support": profile(model, ["charge_card"])}, remote_tools=tools)
        async with harness.worker(config):
            handle = await harness.start({"task": "Charge c-1 5 USD"})
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "success", result
        assert tool_observations(trace)[0]["status"] == "unavailable"
        content = scripted.tool_results()[0]["content"]
        assert f"no worker of task queue {nobody!r} picked the call up within 1 s, so nothing ran" in content


class TestContinueAsNew:
    """Each execution of a long run resolves its tools again: a tool added to the configuration is there after continue-as-new."""

    async def test_a_tool_added_to_the_profile_mid_run_is_callable_after_continue_as_new(self, harness: Harness, payments_queue: str) -> None:
        lookup = tool_use("lookup_customer", {"customer_id": "c-1"})
        charge = tool_use("charge_card", {"customer_id": "c-1", "amount": 5, "currency": "USD"})
        model, scripted = harness.scripted([lookup, lookup, charge, answer("charged")])
        config = make_config(
            {"support": profile(model, ["lookup_customer"], continue_as_new_every=2)}, remote_tools=remote_config(payments_queue)
        )
        # The operator adds charge_card to the profile while the run is in its first execution.
        remote_workers_hook = lambda: None if "charge_card" in config.agents["support"].tools else config.agents["support"].tools.append("charge_card")  # noqa: E731
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            remote_workers.ON_LOOKUP.append(remote_workers_hook)
            handle = await harness.start({"task": "Charge c-1 5 USD"})
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "success", result
        assert result.tools_used == ["lookup_customer", "lookup_customer", "charge_card"]
        assert [o["status"] for o in tool_observations(trace)] == ["ok", "ok", "ok"]
        assert len(remote_workers.calls("ChargeCard")) == 1
        assert "charge_card" in {t["name"] for t in scripted.requests[-1].tools}
        assert "charge_card" not in {t["name"] for t in scripted.requests[0].tools}

    async def test_an_mcp_server_down_at_start_is_listed_again_at_continue_as_new(
        self, harness: Harness, payments_queue: str, mcp_state: Path
    ) -> None:
        port = free_port()
        transfer = {
            "task_queue": payments_queue, "activity": "SlowTransfer", "description": "Move money.",
            "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}},
        }
        script = [
            tool_use("transfer", {"to": "acc-9"}), tool_use("lookup_customer", {"customer_id": "c-1"}),
            tool_use("mcp__tickets__get_ticket", {"ticket_id": "T-1"}), answer("T-1 is open"),
        ]
        model, scripted = harness.scripted(script)
        agent = profile(model, ["transfer", "lookup_customer", "tickets.*"], autonomy="autonomous", continue_as_new_every=2)
        config = make_config(
            {"support": agent}, remote_tools=remote_config(payments_queue, transfer=transfer),
            mcp_servers={"tickets": {"url": f"http://127.0.0.1:{port}/mcp", "timeout": 10}},
        )
        async with remote_workers.serving(harness.client, payments_queue), harness.worker(config):
            handle = await harness.start({"task": "Look at T-1"})
            await until(lambda: remote_workers.calls("SlowTransfer"), "the first step's call", 60)
            with http_server(mcp_state, token=None, port=port):  # the server comes up while the run's first execution runs
                remote_workers.RELEASE.set()
                result = await handle.result()
                trace = await handle.query("trace")
        assert result.status == "success", result
        assert any(w.startswith("MCP_SERVER_UNAVAILABLE: tickets") for w in result.warnings), result.warnings
        assert "mcp__tickets__get_ticket" not in {t["name"] for t in scripted.requests[0].tools}
        assert "mcp__tickets__get_ticket" in {t["name"] for t in scripted.requests[-1].tools}
        assert [o["status"] for o in tool_observations(trace)] == ["ok", "ok", "ok"]
        assert len(mcp_servers.calls(mcp_state, "get_ticket")) == 1


class TestNamesInProfileLists:
    """MCP and remote tools may be named in protected_tools and rate_limits as Python tools are."""

    @pytest.mark.parametrize("named", ["tickets.get_ticket", "mcp__tickets__get_ticket"])
    async def test_an_mcp_tool_named_in_protected_tools_waits_for_approval(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path, named: str
    ) -> None:
        model, _ = harness.scripted([tool_use("mcp__tickets__get_ticket", {"ticket_id": "T-1"}), answer("seen")])
        agent = profile(model, ["tickets.*"], approval={"max_amount": 100.0, "protected_tools": [named]})
        config = make_config({"support": agent}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Look at T-1"})
            await until(lambda: approval_pending(handle), "an approval to wait", 30)
            held = (await handle.query("status", result_type=StatusView)).pending_approvals[0]
            assert held.tool == "mcp__tickets__get_ticket" and "protected" in held.reason
            assert mcp_servers.calls(mcp_state, "get_ticket") == []
            await handle.signal("reject", {"approval_id": held.approval_id, "reviewer": "bob"})
            result = await handle.result()
        assert [a.status for a in result.approvals] == ["rejected"]
        assert mcp_servers.calls(mcp_state, "get_ticket") == []

    async def test_an_mcp_tool_named_as_the_model_sees_it_in_tool_policy_gets_that_policy(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path
    ) -> None:
        model, _ = harness.scripted([tool_use("mcp__tickets__refund_ticket", {"ticket_id": "T-1", "amount": 500}), answer("asked")])
        agent = profile(model, ["tickets.*"], tool_policy={"mcp__tickets__refund_ticket": {"amount_arg": "amount", "risk": "medium"}})
        config = make_config({"support": agent}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Refund 500 on T-1"})
            await until(lambda: approval_pending(handle), "an approval to wait", 30)
            held = (await handle.query("status", result_type=StatusView)).pending_approvals[0]
            assert held.amount == 500 and "above the limit of 100" in held.reason
            await handle.signal("reject", {"approval_id": held.approval_id, "reviewer": "bob"})
            await handle.result()
        assert mcp_servers.calls(mcp_state, "refund_ticket") == []

    async def test_an_mcp_tool_named_in_rate_limits_gets_that_limit(
        self, harness: Harness, stdio_server: dict[str, Any]
    ) -> None:
        model, _ = harness.scripted([answer("nothing to do")])
        agent = profile(model, ["tickets.*"], rate_limits={"tickets.get_ticket": "7/min"})
        config = make_config({"support": agent}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "x"})
            await handle.result()
            history = await handle.fetch_history()
        resolved = next(
            e.activity_task_completed_event_attributes.result for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        )
        tools = {t["name"]: t for t in json.loads(resolved.payloads[0].data)["tools"]}
        assert tools["mcp__tickets__get_ticket"]["rate_limit"] == "7/min"
        assert tools["mcp__tickets__create_ticket"]["rate_limit"] is None


@pytest.mark.slow
class TestWorkerCheck:
    """``durable-agent worker --check`` says whether a worker polls each remote tool's task queue."""

    async def test_check_fails_while_nothing_polls_a_remote_queue_and_passes_once_one_does(
        self, harness: Harness, server_address: str, tmp_path: Path, payments_queue: str
    ) -> None:
        config = tmp_path / "agents.toml"
        config.write_text(f"""
tool_modules = ["durable_agent.demo.shop"]

[remote_tools.charge_card]
task_queue = "{payments_queue}"
activity = "ChargeCard"
description = "Charge a customer's card."
input_schema = {{ type = "object", properties = {{ amount = {{ type = "number" }} }} }}

[agents.support]
tools = ["lookup_order", "charge_card"]
""")
        env = subprocess_env(harness.state, server_address)

        def check() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "worker.py", "--check", "--config", str(config), "--task-queue", harness.task_queue],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
            )

        unserved = check()
        async with remote_workers.serving(harness.client, payments_queue):
            await until(lambda: activity_pollers(harness.client, payments_queue), "the remote worker to poll", 60)
            served = check()
        assert unserved.returncode == 1, unserved.stdout + unserved.stderr
        assert f"no worker polls the task queue of remote tools: {payments_queue!r} (charge_card (ChargeCard))" in unserved.stderr
        assert served.returncode == 0, served.stdout + served.stderr
        assert f"remote tools charge_card (ChargeCard): task queue {payments_queue!r} is served" in served.stdout


class TestMcpList:
    """``durable-agent mcp list`` shows the remote tools beside the MCP servers' tools."""

    def test_remote_tools_are_listed_with_their_queue_and_policy(self, tmp_path: Path) -> None:
        path = tmp_path / "agents.toml"
        path.write_text('''
[remote_tools.charge_card]
task_queue = "payments"
activity = "ChargeCard"
description = "Charge a customer's card."
input_schema = { type = "object", properties = { amount = { type = "number" } } }
amount_arg = "amount"

[agents.support]
tools = ["charge_card"]

[agents.support.tool_policy.charge_card]
risk = "high"
''')
        listed = subprocess.run(
            [sys.executable, "-m", "durable_agent", "mcp", "list", "--config", str(path)], cwd=ROOT, capture_output=True, text=True,
            timeout=120, check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "charge_card  ChargeCard on task queue 'payments'; used by: support" in listed.stdout
        assert "writes, not idempotent, risk low, timeout 60s, amount_arg amount" in listed.stdout
        assert "in support: writes, not idempotent, risk high" in listed.stdout
