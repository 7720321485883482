"""Workers that do one thing (``durable-agent worker --role``), sized apart, together run what one worker runs (issue 22)."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from durable_agent import contracts
from durable_agent.cli.worker import create_worker, parse_args
from durable_agent.schemas import AgentResult
from durable_agent.testing import answer, tool_use
from tests.conftest import SUPPORT_PROFILE, Harness, make_config


def activity_names(group: object) -> set[str]:
    return {fn.__temporal_activity_definition.name for worker in group.workers for fn in worker.config().get("activities", [])}  # type: ignore[attr-defined]


def workflow_names(group: object) -> set[str]:
    return {wf.__temporal_workflow_definition.name for worker in group.workers for wf in worker.config().get("workflows", [])}  # type: ignore[attr-defined]


class TestRoles:
    async def test_each_role_polls_only_its_part(self, harness: Harness) -> None:
        config = make_config()
        groups = {role: create_worker(harness.client, config, task_queue=f"{harness.task_queue}-{role}", store=harness.store, role=role)
                  for role in ("all", "workflows", "activities", "limits")}
        assert {contracts.AGENT_WORKFLOW, contracts.ACTIVITY_THINK} <= workflow_names(groups["all"]) | activity_names(groups["all"])
        # Workflow tasks, and only the local activities those run in place.
        assert contracts.AGENT_WORKFLOW in workflow_names(groups["workflows"])
        assert activity_names(groups["workflows"]) == {contracts.ACTIVITY_STORE_TASK, contracts.ACTIVITY_STORE_REMOTE_RESULT}
        assert workflow_names(groups["activities"]) == set() and contracts.ACTIVITY_THINK in activity_names(groups["activities"])
        assert contracts.AGENT_WORKFLOW not in workflow_names(groups["limits"]) and activity_names(groups["limits"]) == set()
        assert [w.config()["task_queue"] for w in groups["limits"].workers] == [f"{harness.task_queue}-limits-limits"]
        assert groups["workflows"].workers[0].config().get("no_remote_activities") is True
        with pytest.raises(ValueError, match="unknown worker role 'everything'"):
            create_worker(harness.client, config, task_queue=harness.task_queue, store=harness.store, role="everything")

    def test_the_flag_and_its_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert parse_args([]).role == "all"
        assert parse_args(["--role", "activities"]).role == "activities"
        with pytest.raises(SystemExit):
            parse_args(["--role", "everything"])

    async def test_three_workers_one_role_each_run_a_run_with_a_daily_budget(self, harness: Harness) -> None:
        model, _ = harness.scripted([tool_use("lookup_order", {"order_id": "ord-789"}), answer("found it")])
        config = make_config({"support": {**SUPPORT_PROFILE, "model": model, "daily_budget_usd": 5.0}},
                             pricing={"models": {model: {"input": 3.0, "output": 15.0}}})
        async with contextlib.AsyncExitStack() as stack:
            for role in ("workflows", "activities", "limits"):
                await stack.enter_async_context(
                    create_worker(harness.client, config, task_queue=harness.task_queue, store=harness.store, role=role, max_cached_workflows=0)
                )
            handle = await harness.client.start_workflow(
                "AgentWorkflow", {"task": "Look up ord-789 " + "(notes) " * 1500}, id=f"roles-{uuid.uuid4().hex[:8]}",
                task_queue=harness.task_queue, result_type=AgentResult,
            )
            result = await handle.result()
        assert result.status == "success" and result.tools_used == ["lookup_order"], result
        assert result.daily_budget_remaining is not None and result.daily_budget_remaining < 5.0
