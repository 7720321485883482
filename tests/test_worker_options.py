"""Worker sizing and shutdown settings: flags over environment over defaults, checked values."""

from __future__ import annotations

import argparse
import re

import pytest
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion

from durable_agent import deployments
from durable_agent.worker_options import MIN_SHUTDOWN_GRACE_SECONDS, WorkerTuning, add_arguments, from_args, shutdown_grace


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


class TestWorkerTuning:
    """Each setting has a flag and an AGENT_* variable; the flag wins; bad values are named."""

    def test_defaults_suit_llm_work(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("AGENT_MAX_CONCURRENT_ACTIVITIES", "AGENT_SHUTDOWN_GRACE_SECONDS", "AGENT_TOOL_THREADS"):
            monkeypatch.delenv(name, raising=False)
        tuning = from_args(parse())
        assert tuning == WorkerTuning()
        assert tuning.max_concurrent_activities > tuning.max_concurrent_workflow_tasks

    def test_flag_over_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AGENT_MAX_CONCURRENT_ACTIVITIES", "50")
        monkeypatch.setenv("AGENT_TOOL_THREADS", "4")
        tuning = from_args(parse("--max-concurrent-activities", "80", "--shutdown-grace-seconds", "30"))
        assert (tuning.max_concurrent_activities, tuning.tool_threads, tuning.shutdown_grace_seconds) == (80, 4, 30.0)

    @pytest.mark.parametrize(
        ("argv", "env", "message"),
        [
            ((), {"AGENT_WORKFLOW_POLLERS": "many"}, "AGENT_WORKFLOW_POLLERS='many' is not a number"),
            ((), {"AGENT_TOOL_THREADS": "0"}, "AGENT_TOOL_THREADS must be at least 1"),
            (("--max-concurrent-activities", "0"), {}, "--max-concurrent-activities must be at least 1"),
            (("--shutdown-grace-seconds", "-1"), {}, "--shutdown-grace-seconds must be at least 0"),
        ],
    )
    def test_bad_values_are_named(self, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str], message: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=message):
            from_args(parse(*argv))

    @pytest.mark.parametrize(
        ("configured", "tools", "grace"),
        [
            (None, [], MIN_SHUTDOWN_GRACE_SECONDS),
            (None, [60.0, 300.0], 300.0),
            (None, [30.0], MIN_SHUTDOWN_GRACE_SECONDS),
            (10.0, [300.0], 10.0),
            (0.0, [300.0], 0.0),
        ],
    )
    def test_grace_covers_the_longest_tool(self, configured: float | None, tools: list[float], grace: float) -> None:
        assert shutdown_grace(WorkerTuning(shutdown_grace_seconds=configured), tools) == grace


def parse_deployment(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    deployments.add_arguments(parser)
    return parser.parse_args(list(argv))


class TestDeploymentFlags:
    """--deployment-name and --build-id (or their variables): both or neither, values the server accepts."""

    @pytest.fixture(autouse=True)
    def no_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(deployments.DEPLOYMENT_ENV, raising=False)
        monkeypatch.delenv(deployments.BUILD_ENV, raising=False)

    def test_neither_is_an_unversioned_worker(self) -> None:
        assert deployments.from_args(parse_deployment()) is None
        assert deployments.worker_config(None, deployments.RUNS) is None

    def test_flags_or_environment_make_a_versioned_worker(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert deployments.from_args(parse_deployment("--deployment-name", "agents", "--build-id", "1.4.2")) == (
            WorkerDeploymentVersion("agents", "1.4.2")
        )
        monkeypatch.setenv(deployments.DEPLOYMENT_ENV, "agents")
        monkeypatch.setenv(deployments.BUILD_ENV, "abc123")
        assert deployments.from_args(parse_deployment()) == WorkerDeploymentVersion("agents", "abc123")
        assert deployments.from_args(parse_deployment("--build-id", "def456")) == WorkerDeploymentVersion("agents", "def456")

    def test_runs_are_pinned_and_entities_auto_upgrade(self) -> None:
        version = WorkerDeploymentVersion("agents", "v1")
        runs = deployments.worker_config(version, deployments.RUNS)
        entities = deployments.worker_config(version, deployments.ENTITIES)
        assert runs is not None and entities is not None
        assert (runs.version, runs.use_worker_versioning, runs.default_versioning_behavior) == (version, True, VersioningBehavior.PINNED)
        assert entities.default_versioning_behavior == VersioningBehavior.AUTO_UPGRADE

    @pytest.mark.parametrize(
        ("argv", "env", "message"),
        [
            (("--deployment-name", "agents"), {}, "--deployment-name is set but no build id: a versioned worker needs both"),
            ((), {"AGENT_BUILD_ID": "v2"}, "AGENT_BUILD_ID is set but no deployment name: a versioned worker needs both"),
            (("--deployment-name", "agents", "--build-id", " "), {}, "--build-id is empty"),
            (("--deployment-name", "agents.prod", "--build-id", "v1"), {}, "--deployment-name='agents.prod': a deployment name cannot contain '.'"),
            ((), {"AGENT_DEPLOYMENT_NAME": "agents:prod", "AGENT_BUILD_ID": "v1"}, "AGENT_DEPLOYMENT_NAME='agents:prod': a deployment name cannot contain ':'"),
            (("--deployment-name", "__agents", "--build-id", "v1"), {}, "cannot start with '__'"),
            (("--deployment-name", "agents", "--build-id", "__v1"), {}, "--build-id='__v1': a build id cannot start with '__'"),
            (("--deployment-name", "agents", "--build-id", "x" * 256), {}, "--build-id is 256 characters long; a build id has at most 255"),
        ],
    )
    def test_bad_values_are_named(self, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str], message: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=re.escape(message)):
            deployments.from_args(parse_deployment(*argv))

    def test_versioned_entities_need_a_queue_of_their_own(self) -> None:
        deployments.check_task_queues(None, "agents", "agents")  # unversioned: as before
        deployments.check_task_queues(WorkerDeploymentVersion("agents", "v1"), "agents", "agents-limits")
        with pytest.raises(ValueError, match="the limits task queue is the agents' task queue"):
            deployments.check_task_queues(WorkerDeploymentVersion("agents", "v1"), "agents", "agents")

    def test_summary_says_where_the_build_stands_and_how_to_make_it_current(self) -> None:
        status = deployments.DeploymentStatus("agents", "v2", exists=True, current="v1", builds={"v1": "current", "v2": "inactive", "v0": "drained"})
        assert status.summary() == (
            "deployment agents, build v2: not current (current: build v1); other builds: v0 drained. "
            "New runs start on it once it is current: "
            "temporal worker deployment set-current-version --deployment-name agents --build-id v2"
        )
        ramping = deployments.DeploymentStatus("agents", "v2", exists=True, current="v1", ramping="v2", ramping_percentage=10.0)
        assert ramping.summary().startswith("deployment agents, build v2: ramping at 10% (current: build v1)")
        current = deployments.DeploymentStatus("agents", "v2", exists=True, current="v2", builds={"v1": "draining", "v2": "current"})
        assert current.summary() == "deployment agents, build v2: current; other builds: v1 draining"
        unversioned = deployments.DeploymentStatus("agents", "v1", exists=True)
        assert "not current (current: unversioned workers)" in unversioned.summary()
