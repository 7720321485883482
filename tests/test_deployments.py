"""Worker Versioning with real worker processes: builds v1 and v2 of one deployment, runs in flight.

Each workflow task completed is recorded in the history with the build that
completed it, so the tests read from the history which build ran what.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.api.enums.v1 import EventType, RoutingConfigUpdateState, VersioningBehavior
from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest, DescribeWorkerDeploymentVersionRequest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError

from durable_agent import deployments
from durable_agent.demo import shop
from durable_agent.schemas import AgentResult, StatusView
from tests.conftest import ROOT, subprocess_env, temporal_cli
from tests.test_crash_recovery import Processes, result_of
from tests.test_failures import approval_pending, until

#: The demo profile on the offline model, priced and with a daily budget (so a ledger runs on the limits
#: queue), and the same with a continue-as-new every three steps.
CONFIG = """
tool_modules = ["durable_agent.demo.shop"]
[pricing.models.offline]
input = 3.0
output = 15.0
[defaults]
agent = "support"
[agents.support]
model = "offline"
tools = ["lookup_order", "search_kb", "issue_refund", "cancel_order"]
autonomy = "supervised"
daily_budget_usd = 100.0
[agents.support.approval]
max_amount = 1000.0
[agents.long]
model = "offline"
tools = ["lookup_order", "search_kb", "issue_refund", "cancel_order"]
autonomy = "supervised"
continue_as_new_every = 3
[agents.long.approval]
max_amount = 1000.0
"""


def builds(history: WorkflowHistory) -> list[str]:
    """The build that completed each workflow task, in order."""
    return [
        e.workflow_task_completed_event_attributes.deployment_version.build_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]


def activity_workers(history: WorkflowHistory) -> set[str]:
    """The identities (``pid@host``) of the workers that ran the run's activities."""
    return {
        e.activity_task_started_event_attributes.identity
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }


class Deployment:
    """One Worker Deployment of the test: its worker processes, its task queues, and the `temporal` CLI on it."""

    def __init__(self, client: Client, address: str, state: Path, config: Path, processes: Processes) -> None:
        self.client, self.address, self.state, self.config, self.processes = client, address, state, config, processes
        self.name = f"agents-{uuid.uuid4().hex[:8]}"
        self.task_queue = f"versioned-{uuid.uuid4().hex[:8]}"
        self.queues = {self.task_queue, f"{self.task_queue}-limits"}

    def worker_argv(self, build: str, *extra: str) -> list[str]:
        return [
            sys.executable, "worker.py", "--config", str(self.config), "--task-queue", self.task_queue,
            "--deployment-name", self.name, "--build-id", build,
            # Every task replays from history (no sticky queue on a killed worker to time out, either).
            "--max-cached-workflows", "0", *extra,
        ]

    def start_worker(self, build: str) -> subprocess.Popen[bytes]:
        return self.processes.start(f"worker-{build}", self.worker_argv(build), subprocess_env(self.state, self.address))

    def check(self, build: str) -> subprocess.Popen[str]:
        """Start ``durable-agent worker --check`` as build ``build`` (``checked`` reads what it said)."""
        return subprocess.Popen(
            self.worker_argv(build, "--check"), cwd=ROOT, env=subprocess_env(self.state, self.address),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    @staticmethod
    def checked(check: subprocess.Popen[str]) -> tuple[int, str, str]:
        """The exit status, standard output and standard error of a ``check``."""
        out, err = check.communicate(timeout=60)
        return check.returncode, out, err

    async def polled(self, build: str) -> None:
        """Wait until workers of ``build`` poll both of its task queues (the server then knows the version)."""

        async def both() -> bool:
            request = DescribeWorkerDeploymentVersionRequest(
                namespace=self.client.namespace, deployment_version=VersionProto(deployment_name=self.name, build_id=build)
            )
            try:
                info = (await self.client.workflow_service.describe_worker_deployment_version(request)).worker_deployment_version_info
            except RPCError:
                return False
            return self.queues <= {q.name for q in info.task_queue_infos}

        await until(both, f"build {build} polling {sorted(self.queues)}", 60, self.processes.output)

    async def make_current(self, build: str) -> None:
        """As an operator does: ``temporal worker deployment set-current-version``, then wait until it routes."""
        done = subprocess.run(
            [temporal_cli(), "worker", "deployment", "set-current-version", "--deployment-name", self.name,
             "--build-id", build, "--yes", "--address", self.address],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr

        async def routed() -> bool:
            request = DescribeWorkerDeploymentRequest(namespace=self.client.namespace, deployment_name=self.name)
            info = (await self.client.workflow_service.describe_worker_deployment(request)).worker_deployment_info
            state = info.routing_config_update_state
            return info.routing_config.current_deployment_version.build_id == build and state in (
                RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_COMPLETED,
                RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_UNSPECIFIED,
            )

        await until(routed, f"build {build} to be current", 30, self.processes.output)

    async def start(self, task: str, agent: str = "support") -> WorkflowHandle[Any, AgentResult]:
        return await self.client.start_workflow(
            "AgentWorkflow", {"task": task, "agent": agent}, id=f"run-{uuid.uuid4().hex[:8]}",
            task_queue=self.task_queue, result_type=AgentResult,
        )

    async def waiting(self, handle: WorkflowHandle[Any, AgentResult]) -> str:
        """Wait until the run holds an action for approval; its approval id."""
        await until(lambda: approval_pending(handle), f"{handle.id} to wait for approval", 60, self.processes.output)
        return (await handle.query("status", result_type=StatusView)).pending_approvals[0].approval_id

    async def executions(self, handle: WorkflowHandle[Any, AgentResult]) -> list[WorkflowHistory]:
        """The history of each execution of the run (continue-as-new makes several), first first."""
        runs = [w async for w in self.client.list_workflows(f"WorkflowId = '{handle.id}'")]
        runs.sort(key=lambda w: w.start_time)
        return [(await self.client.get_workflow_handle(handle.id, run_id=w.run_id).fetch_history()) for w in runs]


@pytest.fixture
def deployment(client: Client, server_address: str, state_dir: Path, tmp_path: Path, processes: Processes) -> Deployment:
    config = tmp_path / "agents.toml"
    config.write_text(CONFIG)
    return Deployment(client, server_address, state_dir, config, processes)


@pytest.mark.slow
class TestRollout:
    """v1 → v2 with runs in flight: pinned runs finish on their build, new and continued runs go to the current one."""

    async def test_runs_in_flight_stay_on_their_build_and_new_work_goes_to_the_current_one(
        self, deployment: Deployment, processes: Processes
    ) -> None:
        d = deployment
        v1 = d.start_worker("v1")
        await d.polled("v1")
        await d.make_current("v1")
        d.start_worker("v2")  # beside v1: it serves nothing until it is current
        check_v2 = d.check("v2")
        # Three runs start on v1 and wait for a person: a refund, a refund in a run that continues as new
        # every 3 steps (its 3rd step is the refund), and a cancellation.
        pinned = await d.start("Refund order ord-789")
        long = await d.start("Refund order ord-790", agent="long")
        cancel = await d.start("Cancel order ord-1001")
        pinned_id, long_id, cancel_id = [await d.waiting(h) for h in (pinned, long, cancel)]

        await d.polled("v2")
        assert f"deployment {d.name}, build v2: not current (current: build v1)" in processes.output()  # its start-up log
        check_v2_said = d.checked(check_v2)
        await d.make_current("v2")
        check_v1 = d.check("v1")

        # A new run starts on v2 (and so does the daily ledger's next task: it auto-upgrades).
        fresh = await d.start("Refund 5 USD on order ord-456")
        assert (await result_of(fresh, processes)).status == "success"
        # The pinned run, approved after v2 became current, finishes on v1, its refund done by v1's process.
        await pinned.signal("approve", {"approval_id": pinned_id, "reviewer": "alice"})
        assert (await result_of(pinned, processes)).status == "success"
        # The long run is approved on v1, refunds there, and its continuation runs on v2.
        await long.signal("approve", {"approval_id": long_id, "reviewer": "alice"})
        long_result = await result_of(long, processes)

        [pinned_history] = await d.executions(pinned)
        assert set(builds(pinned_history)) == {"v1"}
        assert activity_workers(pinned_history) == {f"{v1.pid}@{_host()}"}
        assert set(builds((await d.executions(fresh))[0])) == {"v2"}
        first, second = await d.executions(long)
        assert set(builds(first)) == {"v1"} and set(builds(second)) == {"v2"}
        assert long_result.status == "success" and long_result.tools_used == ["lookup_order", "search_kb", "issue_refund"]
        assert [r["amount"] for r in shop.refunds_for("ord-790")] == [4999.0]
        info = (await d.client.get_workflow_handle(long.id).describe()).raw_description.workflow_execution_info.versioning_info
        assert (info.deployment_version.build_id, info.behavior) == ("v2", VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)
        ledgers = [w async for w in d.client.list_workflows(f"WorkflowType = 'BudgetLedger' AND TaskQueue = '{d.task_queue}-limits'")]
        assert len(ledgers) == 1
        ledger = builds(await d.client.get_workflow_handle(ledgers[0].id).fetch_history())
        assert ledger[0] == "v1" and ledger[-1] == "v2" and ledger == sorted(ledger), ledger

        # `worker --check` says where each build stands, and how to make a build current.
        status, out, err = check_v2_said
        assert status == 0, err
        assert f"deployment {d.name}, build v2: not current (current: build v1)" in out
        assert f"set-current-version --deployment-name {d.name} --build-id v2" in out
        status, out, err = d.checked(check_v1)
        assert status == 0, err
        assert f"deployment {d.name}, build v1: not current (current: build v2)" in out and "worker: ok" in out

        # v1's workers go away: the cancellation pinned to v1 waits for them, whatever v2 does meanwhile.
        processes.kill(v1)
        await cancel.signal("approve", {"approval_id": cancel_id, "reviewer": "alice"})
        later = await d.start("Refund 6 USD on order ord-456")
        assert (await result_of(later, processes)).status == "success"
        [waiting] = await d.executions(cancel)
        signalled = max(i for i, e in enumerate(waiting.events) if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
        after = [e for e in waiting.events[signalled:] if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
        assert after == [] and set(builds(waiting)) == {"v1"}
        assert shop.lookup_order("ord-1001")["status"] != "cancelled"
        # v1 comes back and the run finishes there.
        d.start_worker("v1")
        cancelled = await result_of(cancel, processes)
        assert cancelled.status == "success" and cancelled.tools_used == ["lookup_order", "search_kb", "cancel_order"]
        assert set(builds((await d.executions(cancel))[0])) == {"v1"}
        assert shop.lookup_order("ord-1001")["status"] == "cancelled"


class TestStartAndCheck:
    """What a worker says about its deployment before it polls: a missing half, a deployment not there yet."""

    @pytest.mark.slow
    def test_half_a_version_stops_the_worker_naming_the_missing_half(self, deployment: Deployment) -> None:
        argv = [sys.executable, "worker.py", "--config", str(deployment.config), "--deployment-name", deployment.name]
        done = subprocess.run(argv, cwd=ROOT, env=subprocess_env(deployment.state, deployment.address), capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert "worker: configuration error: --deployment-name is set but no build id: a versioned worker needs both" in done.stderr

    def test_the_readme_shows_what_check_prints(self) -> None:
        status = deployments.DeploymentStatus("agents", "v2", exists=True, current="v1", builds={"v1": "current", "v2": "inactive"})
        shown = status.summary().split(": temporal worker")[0]
        assert f"#   worker: {shown}: ..." in (ROOT / "README.md").read_text()

    async def test_a_deployment_no_worker_polled_yet(self, client: Client) -> None:
        status = await deployments.describe(client, WorkerDeploymentVersion(f"nobody-{uuid.uuid4().hex[:8]}", "v1"))
        assert not status.exists and not status.is_current
        assert "does not exist yet" in status.summary()
        assert f"set-current-version --deployment-name {status.deployment} --build-id v1" in status.summary()


def _host() -> str:
    return socket.gethostname()
