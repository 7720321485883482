"""Record workflow histories for the replay test: ``python -m tests.record_histories [SCENARIO...]``.

With scenario names, only those are recorded (add a scenario, record just it: the
others stay as they were recorded); with none, only the scenarios that have no
history yet.

Runs representative scenarios on a throwaway dev server and writes each run's
event history to ``tests/histories/<scenario>.json``. Re-record only when a
change is *meant* to be incompatible (and then use ``workflow.patched`` for runs
already in flight); otherwise new worker code must replay these as they are.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue, SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from durable_agent.connection import find_executable  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from durable_agent import contracts, signing, trace  # noqa: E402
from durable_agent.decisions import signed_review  # noqa: E402
from durable_agent.models import register_provider  # noqa: E402
from durable_agent.schemas import StatusView  # noqa: E402
from durable_agent.testing import ScriptedModel, answer, tool_use, tool_uses  # noqa: E402
from tests.conftest import SUPPORT_PROFILE, make_config  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402

OUT = HERE / "histories"


async def _wait_pending(handle: WorkflowHandle[Any, Any]) -> StatusView:
    for _ in range(200):
        status = await handle.query("status", result_type=StatusView)
        if status.pending_approvals:
            return status
        await asyncio.sleep(0.05)
    raise RuntimeError("no approval became pending")


async def _approve_by_signal(handle: WorkflowHandle[Any, Any]) -> None:
    status = await _wait_pending(handle)
    await handle.signal("approve", {"approval_id": status.pending_approvals[0].approval_id, "reviewer": "alice", "comment": "ok"})


async def _signal_without_id_then_with_it(handle: WorkflowHandle[Any, Any]) -> None:
    status = await _wait_pending(handle)
    await handle.signal("approve", {"reviewer": "bob"})  # refused: it names no approval
    await handle.signal("approve", {"approval_id": status.pending_approvals[0].approval_id, "reviewer": "alice"})


#: Keys of the signed scenario's reviewers (only their public halves reach the worker and the history).
RECORD_KEYS = {name: signing.generate_key(name) for name in ("alice", "bob")}


async def _signed_refused_then_approved(handle: WorkflowHandle[Any, Any]) -> None:
    target = (await _wait_pending(handle)).pending_approvals[0]
    expires = int(time.time()) + 600

    def review(key: signing.SigningKey, reviewer: str) -> dict[str, Any]:
        request = signed_review(
            key, target, namespace="default", workflow_id=handle.id, approved=True, reviewer=reviewer, comment=None, expires_at=expires
        )
        return request.model_dump(mode="json", exclude_none=True)

    try:
        await handle.execute_update("review", review(RECORD_KEYS["bob"], "alice"))  # refused after the keyring is read
    except WorkflowUpdateFailedError:
        pass
    await handle.execute_update("review", review(RECORD_KEYS["alice"], "alice"))


async def _reject_by_update(handle: WorkflowHandle[Any, Any]) -> None:
    status = await _wait_pending(handle)
    await handle.signal("approve", {"approval_id": "apr-999", "reviewer": "mallory"})  # ignored: unknown id
    await handle.execute_update("review", {"approval_id": status.pending_approvals[0].approval_id, "approved": False, "reviewer": "bob", "comment": "no"})


async def _hostile_decisions_then_approved(handle: WorkflowHandle[Any, Any]) -> None:
    """Decisions of every wrong shape (each refused into the warnings), then a proper approval."""
    status = await _wait_pending(handle)
    approval_id = status.pending_approvals[0].approval_id
    await handle.signal("approve", args=[{"approval_id": approval_id, "reviewer": "bob"}, {"x": 1}])
    await handle.signal("reject", args=[RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b'{"reviewer": "\xff"}'))])
    await handle.signal("approve", {"approval_id": approval_id, "reviewer": "r" * 1_000})
    try:
        await handle.execute_update("review", args=[{"approval_id": approval_id, "approved": True}, {"x": 1}])
    except WorkflowUpdateFailedError:
        pass  # refused by the validator: not in the history
    await handle.signal("approve", {"approval_id": approval_id, "reviewer": "alice"})


async def _cancel_while_waiting(handle: WorkflowHandle[Any, Any]) -> None:
    await _wait_pending(handle)
    await handle.cancel()


async def _resume_then_stop(handle: WorkflowHandle[Any, Any]) -> None:
    """A run paused by an anomaly rule: resumed by one reviewer, paused again, stopped by another."""
    first = (await _wait_pending(handle)).pending_approvals[0].approval_id
    await handle.execute_update("review", {"approval_id": first, "approved": True, "reviewer": "alice"})
    for _ in range(200):
        pending = [p for p in (await handle.query("status", result_type=StatusView)).pending_approvals if p.approval_id != first]
        if pending:
            break
        await asyncio.sleep(0.05)
    await handle.execute_update("review", {"approval_id": pending[0].approval_id, "approved": False, "reviewer": "bob"})


Scenario = tuple[str, dict[str, Any], dict[str, Any] | None, list[dict[str, Any]] | None, Callable[[WorkflowHandle[Any, Any]], Awaitable[None]] | None]

SCENARIOS: list[Scenario] = [
    ("offline_small_refund", {"task": "Refund 20 USD on order ord-789"}, None, None, None),
    # Numbers given as strings: taken as numbers by the code before patch strict-input-numbers (with which this
    # one was recorded: it must still replay as it ran), refused at once since.
    ("budget_as_text_before_strict_numbers", {"task": "Refund 20 USD on order ord-789", "budget_usd": "1.00", "max_steps": "20"},
     None, None, None),
    ("budget_as_text_refused", {"task": "Refund 20 USD on order ord-789", "budget_usd": "1.00"}, None, None, None),
    # Bound decisions: ids unique across executions; a signal without one refused, then one naming it.
    ("bound_refund_approved_by_id", {"task": "Refund order ord-789"}, None, None, _signal_without_id_then_with_it),
    # Signed decisions: the keyring read at decision time, a forged decision refused, a signed one approved.
    ("signed_refund_approved", {"task": "Refund order ord-789"},
     {"approval": {**SUPPORT_PROFILE["approval"], "require_signature": True, "reviewers": ["alice", "bob"]}}, None,
     _signed_refused_then_approved),
    ("offline_refund_approved", {"task": "Refund order ord-789"}, None, None, _approve_by_signal),
    ("offline_refund_rejected", {"task": "Refund order ord-789"}, None, None, _reject_by_update),
    ("offline_approval_timed_out", {"task": "Cancel order ord-1001"}, {"approval": {"timeout_seconds": 1}}, None, None),
    ("offline_cancelled", {"task": "Cancel order ord-1001"}, None, None, _cancel_while_waiting),
    ("offline_hostile_decisions", {"task": "Cancel order ord-1001"}, None, None, _hostile_decisions_then_approved),
    ("read_only_refusal", {"task": "Refund 20 USD on order ord-789", "autonomy": "read_only"}, None, None, None),
    ("budget_exceeded", {"task": "Refund 20 USD on order ord-789", "budget_usd": 0.0001, "model": "SCRIPTED"}, None,
     [tool_use("lookup_order", {"order_id": "ord-789"})], None),
    ("scripted_bad_calls_then_max_steps", {"task": "x", "max_steps": 3, "model": "SCRIPTED"}, None,
     [tool_use("issue_refund", {"order_id": 5}), tool_use("teleport", {}), tool_use("search_kb", {"query": "refund"})], None),
    ("scripted_continue_as_new", {"task": "x", "model": "SCRIPTED"}, {"continue_as_new_every": 2},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), tool_use("search_kb", {"query": "c"}), answer("done")], None),
    # Through the shared daily-budget ledger and a rate limiter (their own histories are recorded too).
    # A world-changing tool scheduled to be waited for on cancellation (patch tool-cancel-waits-for-completion).
    ("tool_cancel_waits_small_refund", {"task": "Refund 20 USD on order ord-789"}, None, None, None),
    ("scripted_daily_budget_and_rate_limit", {"task": "x", "model": "SCRIPTED"},
     {"daily_budget_usd": 5.0, "rate_limits": {"search_kb": "1/2s"}},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), answer("done")], None),
    # The same through a leased daily budget and a profile's own rate-limit lane (issue 12).
    ("scripted_leased_budget_and_lane", {"task": "x", "model": "SCRIPTED"},
     {"daily_budget_usd": 5.0, "rate_limits": {"search_kb": "1/2s"}},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), answer("done")], None),
    # A task just over TASK_INLINE_BYTES: stored by a local activity, sent to think by reference,
    # a stub carried into the continuation (patch task-by-reference).
    ("scripted_large_task_by_reference", {"task": "Look up order ord-789. " + "Notes. " * 1_460, "model": "SCRIPTED"},
     {"continue_as_new_every": 2},
     [tool_use("lookup_order", {"order_id": "ord-789"}), tool_use("search_kb", {"query": "a"}), answer("done")], None),
    # Records kept by the record_decisions activity (patch decision-records-stored), and a loop that stops the run.
    ("scripted_records_stored_loop_stopped", {"task": "x", "model": "SCRIPTED"}, {"anomalies": {"on_loop": "stop"}},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}),
      tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), answer("never")], None),
    # A loop that pauses the run through the approval mechanism (patch anomaly-pause): resumed, then stopped.
    ("scripted_anomaly_paused_then_stopped", {"task": "x", "model": "SCRIPTED"}, {"anomalies": {"on_loop": "pause"}},
     [tool_use("search_kb", {"query": "a"})] * 4 + [answer("never")], _resume_then_stop),
    # Recorded before the webhook URL was kept out of payloads (issue 17): the URL is in the resolve_agent
    # result, the notify_reviewer input and the state carried across continue-as-new; new code replays it.
    ("webhook_url_carried_continue_as_new", {"task": "Refund order ord-789"},
     {"continue_as_new_every": 3, "approval": {**SUPPORT_PROFILE["approval"], "webhook_url": "http://127.0.0.1:9/hooks/approvals/RECORDED-TOKEN"}},
     None, _approve_by_signal),
    # A world-changing tool that times out: not retried, its outcome unknown (patch tool-timeout-outcome-unknown).
    ("scripted_tool_timeout_outcome_unknown", {"task": "pay", "model": "SCRIPTED"}, {"tools": ["pay_slowly"], "autonomy": "autonomous"},
     [tool_use("pay_slowly", {"account": "acc-1", "amount": 10.0}), answer("its outcome is unknown")], None),
    # A small window: the conversation is compacted (old results elided, then summarised) mid-run.
    ("scripted_compaction", {"task": "read the reports", "model": "SCRIPTED"},
     {"tools": ["report"], "autonomy": "autonomous", "context_window_tokens": 8192},
     [*[tool_use("report", {"n": n, "size": 3000}) for n in range(10)], answer("read them all")], None),
    # MCP tools through the gate (issue 19): a read-only call, a destructive one approved, an isError result.
    ("scripted_mcp_tools", {"task": "Tidy the tickets", "model": "SCRIPTED"}, {"tools": ["lookup_order", "tickets.*"]},
     [tool_use("mcp__tickets__get_ticket", {"ticket_id": "T-1"}), tool_use("mcp__tickets__delete_ticket", {"ticket_id": "T-1"}),
      tool_use("mcp__tickets__broken_report", {}), answer("done")], _approve_by_signal),
    # Records written by the next step's think (patch records-with-think), by one record_decisions before
    # the run waits for a person and before it continues as new, and at its end (issue 22).
    ("scripted_records_with_think", {"task": "Cancel order ord-1001", "model": "SCRIPTED"}, {"continue_as_new_every": 3},
     [tool_use("lookup_order", {"order_id": "ord-1001"}), tool_use("search_kb", {"query": "cancel"}),
      tool_use("cancel_order", {"order_id": "ord-1001"}), tool_use("search_kb", {"query": "after"}), answer("cancelled")],
     _approve_by_signal),
    # Three read-only calls in one turn, run at once (patch parallel-tool-calls, issue 22).
    ("scripted_parallel_tool_calls", {"task": "Look it all up", "model": "SCRIPTED"}, None,
     [tool_uses(tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), tool_use("lookup_order", {"order_id": "ord-789"})),
      answer("done")], None),
]

#: Top-level agents.toml keys a scenario needs beyond the profile, given the recording's state folder.
TOP_LEVEL: dict[str, Callable[[Path], dict[str, Any]]] = {
    "scripted_mcp_tools": lambda state: {
        "mcp_servers": {"tickets": {"command": sys.executable, "args": [str(HERE / "mcp_servers.py"), "stdio"], "env": {"MCP_TEST_STATE": str(state)}}}
    },
}

#: Entity workflows a scenario drives, recorded after it: (file name, workflow id template).
ENTITIES = {
    "scripted_daily_budget_and_rate_limit": [
        ("ledger", "budget-support-{day}@{queue}"),
        ("rate_limiter", "ratelimit-search_kb@{queue}"),
    ],
    "scripted_leased_budget_and_lane": [
        ("ledger", "budget-support-{day}@{queue}"),
        ("rate_limiter", "ratelimit-search_kb@{queue}"),
    ],
}


async def record(client: Client, state: Path, only: list[str] | None = None) -> None:
    OUT.mkdir(exist_ok=True)
    unknown = set(only or []) - {s[0] for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"no scenario named {', '.join(sorted(unknown))}")
    for name, request, profile_extra, script, action in SCENARIOS:
        if only and name not in only:
            continue
        queue = f"record-{uuid.uuid4().hex[:8]}"
        profile = {**SUPPORT_PROFILE, **(profile_extra or {})}
        pricing: dict[str, Any] = {}
        if script is not None:
            model = f"scripted-{name}"
            register_provider(model, ScriptedModel(script=list(script)))
            request = {**request, "model": model}
            pricing = {"models": {model: {"input": 3.0, "output": 15.0}}}
        top: dict[str, Any] = {"reviewer_keys": {name: key.public_key for name, key in RECORD_KEYS.items()}}
        if pricing:
            top["pricing"] = pricing
        if name in TOP_LEVEL:
            top.update(TOP_LEVEL[name](state))
        config = make_config({"support": profile}, **top)
        workflow_id = f"history-{name}"
        os.environ["SHOP_DB"] = str(state / f"shop-{name}.sqlite")  # every scenario starts from the seed shop
        async with create_worker(client, config, task_queue=queue, max_cached_workflows=0):
            handle = await client.start_workflow("AgentWorkflow", request, id=workflow_id, task_queue=queue)
            if action is not None:
                await action(handle)
            try:
                await handle.result()
            except Exception as exc:  # failed runs are scenarios too
                print(f"{name}: ended with {type(exc).__name__}")
            runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
            for index, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
                history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
                suffix = f"_run{index + 1}" if len(runs) > 1 else ""
                (OUT / f"{name}{suffix}.json").write_text(history.to_json())
                print(f"recorded {name}{suffix}: {len(history.events)} events")
            day = datetime.now(timezone.utc).date().isoformat()
            for label, template in ENTITIES.get(name, []):
                entity = client.get_workflow_handle(template.format(day=day, queue=queue))
                history = await entity.fetch_history()
                (OUT / f"{name}_{label}.json").write_text(history.to_json())
                print(f"recorded {name}_{label}: {len(history.events)} events")


async def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="record-"))
    os.environ.update({"AGENT_STATE_DIR": str(state), "SHOP_DB": str(state / "shop.sqlite"), "AGENT_TRACE_FILE": str(state / "trace.jsonl")})
    os.environ.pop("ANTHROPIC_API_KEY", None)
    trace.configure(str(state / "trace.jsonl"))
    # Only what has no history yet, or the scenarios named: a recorded history is never recorded again.
    names = sys.argv[1:] or [name for name, *_ in SCENARIOS if not any(OUT.glob(f"{name}*.json"))]
    if not names:
        print("nothing to record: every scenario has its history (name one to record it again)")
        return
    print(f"recording: {', '.join(names)}")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_executable("temporal"), data_converter=pydantic_data_converter, dev_server_log_level="error",
        search_attributes=[SearchAttributeKey.for_bool(contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL)],
    )
    try:
        await record(env.client, state, names)
    finally:
        await env.shutdown()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
