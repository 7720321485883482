"""Fixtures for the MCP tests: the test server of :mod:`tests.mcp_servers` over stdio and over streamable HTTP.

Import the fixtures into a test module (``from tests.mcp_fixtures import mcp_state, stdio_server, http_server``).
Each HTTP server is a real ``uvicorn`` process on a free loopback port, killed at the end of its test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

SERVER_SCRIPT = str(ROOT / "tests" / "mcp_servers.py")
TOKEN = "tok-s3cr3t-for-tests-only"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stdio_config(state: Path, **extra: Any) -> dict[str, Any]:
    """``[mcp_servers.NAME]`` for the test server over stdio, counting its calls under ``state``."""
    env = {"MCP_TEST_STATE": str(state), **extra.pop("env", {})}
    return {"command": sys.executable, "args": [SERVER_SCRIPT, "stdio"], "env": env, "timeout": 10, **extra}


@contextlib.contextmanager
def http_server(state: Path, token: str | None = TOKEN, variant: str = "", port: int | None = None) -> Iterator[str]:
    """The test server over streamable HTTP; yields its URL. ``token``: the bearer token it requires; ``port``: a free one by default."""
    port = port or free_port()
    env = {**os.environ, "MCP_TEST_STATE": str(state), "MCP_TEST_VARIANT": variant}
    if token:
        env["MCP_TEST_TOKEN"] = token
    log = (state / f"http-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, SERVER_SCRIPT, "http", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the MCP test server did not start: {(state / f'http-{port}.log').read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def mcp_state(tmp_path: Path) -> Path:
    """Where the test server counts its calls."""
    state = tmp_path / "mcp"
    state.mkdir()
    return state


@pytest.fixture
def stdio_server(mcp_state: Path) -> dict[str, Any]:
    """The test server's configuration over stdio (the worker starts it on first use)."""
    return stdio_config(mcp_state)


@pytest.fixture
def http_url(mcp_state: Path) -> Iterator[str]:
    """The URL of the test server over streamable HTTP, requiring ``Bearer TOKEN``."""
    with http_server(mcp_state) as url:
        yield url
