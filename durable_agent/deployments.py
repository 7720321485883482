"""Worker Versioning: a worker as one build of a Worker Deployment (``--deployment-name``, ``--build-id``).

Without them a worker is unversioned, as before: any worker may replay any run,
so a change to workflow code needs a ``workflow.patched`` branch. With them the
worker is build ``ID`` of deployment ``NAME``, and Temporal routes each task:

- ``AgentWorkflow`` runs are **pinned**: every task of a run goes to the build it
  started on, whatever is deployed since. At each continue-as-new the run moves to
  the deployment's current version (the ``continue_as_new`` call asks for
  auto-upgrade), so a long run picks up new code at a safe point and never replays
  old history on it.
- The shared entities (``BudgetLedger``, ``RateLimiter``, on the limits task queue)
  **auto-upgrade**: their next task goes to the current version, so a build being
  retired never holds a day's budget or a rate limit hostage.

The behaviour is each worker's default (``WorkerDeploymentConfig.default_versioning_behavior``:
the agents' queue pinned, the limits queue auto-upgrade), not an argument of
``@workflow.defn``: a workflow class that declares one cannot complete a task on an
unversioned worker (the server refuses it: "versioning behavior cannot be
specified without deployment options"), and unversioned must keep working.

Rollout (``temporal worker deployment set-current-version``...) and the patch
policy are in ``docs/versioning.md``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

DEPLOYMENT_ENV = "AGENT_DEPLOYMENT_NAME"
BUILD_ENV = "AGENT_BUILD_ID"

#: Agent runs stay on the build they started on (until their next continue-as-new).
RUNS = VersioningBehavior.PINNED
#: Ledgers and rate limiters follow the current version at their next task.
ENTITIES = VersioningBehavior.AUTO_UPGRADE

#: The server's limit on a build id (longer ones are refused when the worker polls).
MAX_BUILD_ID = 255


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--deployment-name`` and ``--build-id`` (both or neither), each defaulting to its environment variable."""
    group = parser.add_argument_group("Worker Versioning (both or neither; see docs/versioning.md)")
    group.add_argument(
        "--deployment-name", default=None, metavar="NAME",
        help=f"the Worker Deployment this worker belongs to (env {DEPLOYMENT_ENV}); runs are pinned to their build",
    )
    group.add_argument(
        "--build-id", default=None, metavar="ID",
        help=f"this worker's build within the deployment, e.g. a git commit or image tag (env {BUILD_ENV})",
    )


def from_args(args: argparse.Namespace) -> WorkerDeploymentVersion | None:
    """The worker's deployment version from flags, else the environment; ``None`` for an unversioned worker.

    Raises:
        ValueError: one given without the other, or a value the server would refuse (named, with its source).
    """
    name, name_source = _setting(getattr(args, "deployment_name", None), "--deployment-name", DEPLOYMENT_ENV)
    build, build_source = _setting(getattr(args, "build_id", None), "--build-id", BUILD_ENV)
    if name is None and build is None:
        return None
    if build is None:
        raise ValueError(
            f"{name_source} is set but no build id: a versioned worker needs both "
            f"(--build-id or {BUILD_ENV}), or neither for an unversioned worker"
        )
    if name is None:
        raise ValueError(
            f"{build_source} is set but no deployment name: a versioned worker needs both "
            f"(--deployment-name or {DEPLOYMENT_ENV}), or neither for an unversioned worker"
        )
    for char in ".:":
        if char in name:
            raise ValueError(f"{name_source}={name!r}: a deployment name cannot contain {char!r}")
    if name.startswith("__"):
        raise ValueError(f"{name_source}={name!r}: a deployment name cannot start with '__'")
    if build.startswith("__"):
        raise ValueError(f"{build_source}={build!r}: a build id cannot start with '__'")
    if len(build) > MAX_BUILD_ID:
        raise ValueError(f"{build_source} is {len(build)} characters long; a build id has at most {MAX_BUILD_ID}")
    return WorkerDeploymentVersion(deployment_name=name, build_id=build)


def _setting(flag: str | None, flag_name: str, env: str) -> tuple[str | None, str]:
    if flag is not None:
        if not flag.strip():
            raise ValueError(f"{flag_name} is empty")
        return flag.strip(), flag_name
    value = os.environ.get(env, "").strip()
    return (value or None), env


def worker_config(version: WorkerDeploymentVersion | None, behavior: VersioningBehavior) -> WorkerDeploymentConfig | None:
    """The ``deployment_config`` of one ``Worker``: ``behavior`` for every workflow it runs; ``None`` unversioned."""
    if version is None:
        return None
    return WorkerDeploymentConfig(version=version, use_worker_versioning=True, default_versioning_behavior=behavior)


def check_task_queues(version: WorkerDeploymentVersion | None, task_queue: str, limits_task_queue: str) -> None:
    """Refuse a versioned worker whose entities would share the agents' queue.

    One worker on one queue has one default behaviour: on the agents' queue the
    ledgers and limiters would be pinned like the runs, and a day's ledger pinned
    to a build being retired would hold every run's budget until that build came back.

    Raises:
        ValueError: naming both queues.
    """
    if version is not None and limits_task_queue == task_queue:
        raise ValueError(
            f"the limits task queue is the agents' task queue ({task_queue!r}): with Worker Versioning the "
            "ledgers and rate limiters need a queue of their own (they auto-upgrade, agent runs are pinned); "
            "leave --limits-task-queue and AGENT_LIMITS_TASK_QUEUE unset for '<task queue>-limits'"
        )


def _status_name(value: int) -> str:
    return WorkerDeploymentVersionStatus.Name(value).removeprefix("WORKER_DEPLOYMENT_VERSION_STATUS_").lower()  # type: ignore[arg-type]


@dataclass(frozen=True)
class DeploymentStatus:
    """Where one build stands in its deployment, as the server says (``DescribeWorkerDeployment``)."""

    deployment: str
    build_id: str
    exists: bool
    """False until a worker of the deployment first polls."""
    current: str | None = None
    """The current version's build id; ``None``: unversioned workers are current (the default)."""
    ramping: str | None = None
    ramping_percentage: float = 0.0
    builds: dict[str, str] = field(default_factory=dict)
    """Every build the server knows in the deployment and its status (``current``, ``draining``, ``drained``...)."""

    @property
    def is_current(self) -> bool:
        return self.current == self.build_id

    def summary(self) -> str:
        """One line: this build's place, the current version, the other builds' states (draining, drained...)."""
        if not self.exists:
            return (
                f"deployment {self.deployment} does not exist yet (its first worker creates it when it polls); "
                f"build {self.build_id} is not current: {self.make_current()}"
            )
        current = f"build {self.current}" if self.current else "unversioned workers"
        if self.is_current:
            place = "current"
        elif self.ramping == self.build_id:
            place = f"ramping at {self.ramping_percentage:g}% (current: {current})"
        else:
            place = f"not current (current: {current})"
        others = [f"{build} {status}" for build, status in sorted(self.builds.items()) if build not in (self.build_id, self.current)]
        line = f"deployment {self.deployment}, build {self.build_id}: {place}"
        if others:
            line += f"; other builds: {', '.join(others)}"
        if not self.is_current:
            line += f". New runs start on it once it is current: {self.make_current()}"
        return line

    def make_current(self) -> str:
        """The command that makes this build current."""
        return f"temporal worker deployment set-current-version --deployment-name {self.deployment} --build-id {self.build_id}"


async def describe(client: Client, version: WorkerDeploymentVersion) -> DeploymentStatus:
    """Ask the server where ``version`` stands in its deployment.

    Raises:
        RPCError: anything but "no such deployment" (the server cannot say, or refuses to).
    """
    request = DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=version.deployment_name)
    try:
        response = await client.workflow_service.describe_worker_deployment(request)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return DeploymentStatus(version.deployment_name, version.build_id, exists=False)
        raise
    info = response.worker_deployment_info
    routing = info.routing_config
    current = routing.current_deployment_version.build_id if routing.HasField("current_deployment_version") else None
    ramping = routing.ramping_deployment_version.build_id if routing.HasField("ramping_deployment_version") else None
    return DeploymentStatus(
        version.deployment_name,
        version.build_id,
        exists=True,
        current=current or None,
        ramping=ramping or None,
        ramping_percentage=routing.ramping_version_percentage if ramping else 0.0,
        builds={v.deployment_version.build_id: _status_name(v.status) for v in info.version_summaries},
    )


async def status_line(client: Client, version: WorkerDeploymentVersion) -> tuple[bool, str]:
    """Whether the server could say where ``version`` stands, and one line saying it (or why it could not).

    ``durable-agent worker --check`` prints it (and fails when the server cannot say);
    a worker logs it when it starts.
    """
    try:
        return True, (await describe(client, version)).summary()
    except RPCError as exc:
        return False, f"cannot describe Worker Deployment {version.deployment_name}: {exc.message}"
