"""What to type next: commands that run as printed, in the shell the person ran ours from.

A newcomer runs ``.venv/bin/python starter.py ...`` without activating the
virtualenv, so ``durable-agent`` and ``temporal`` are not on their ``PATH``. Every
command this package prints for them to paste names its program so that it runs
there: the bare name when ``PATH`` finds the same program, else its path beside
this interpreter, else ``python -m durable_agent``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from durable_agent import contracts

#: Words in a failed connection's error that mean nothing answers at the address (a tonic/hyper error's text).
_UNREACHABLE = (
    "connectionrefused",
    "connection refused",
    "tcp connect error",
    "dns error",
    "failed to lookup address",
    "no route to host",
    "network is unreachable",
    "host is unreachable",
    "timed out",
    "deadline has elapsed",
)


def program(name: str) -> list[str]:
    """How to run ``name`` (``durable-agent``, ``temporal``) from the person's shell, as argv words.

    The installed program beside this interpreter is the one meant (a virtualenv's,
    when running from one). Its bare name when ``PATH`` finds that same file; its
    path otherwise (absolute, so it works from any folder and any terminal).
    """
    here = Path(sys.executable).parent
    beside = here / name
    if beside.is_file() and os.access(beside, os.X_OK):
        on_path = shutil.which(name)
        if on_path and Path(on_path).resolve() == beside.resolve():
            return [name]
        return [str(here.absolute() / name)]
    on_path = shutil.which(name)
    if on_path:
        return [name]
    if name == "durable-agent":
        return [sys.executable, "-m", "durable_agent"]
    return [name]


def command(name: str, *args: str) -> str:
    """``name args...`` as one line to paste, quoted for a POSIX shell (see :func:`program`)."""
    return shlex.join([*program(name), *args])


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies under it (``.durable-agent/temporal.db``), else whole."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def is_unreachable(exc: BaseException) -> bool:
    """Whether a failed ``Client.connect`` means nothing answers at the address (rather than TLS, auth...)."""
    text = str(exc).lower()
    return any(word in text for word in _UNREACHABLE)


def is_local(address: str) -> bool:
    """Whether ``address`` is this machine."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def dev_server_command(address: str) -> str:
    """The ``temporal server start-dev`` command for a local ``address``, with the approval search attribute."""
    port = address.rpartition(":")[2]
    args = ["server", "start-dev"]
    if port and port != "7233":
        args += ["--port", port]
    return command("temporal", *args, "--search-attribute", f"{contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL}=Bool")


def cannot_connect(who: str, address: str, exc: BaseException) -> str:
    """One line for a failed connection to Temporal: the address, and what to do about it.

    Nothing answering at a local address gets the three ways forward (start a dev
    server there, let ``durable-agent run`` start its embedded one, or point
    ``TEMPORAL_ADDRESS`` at the server); other failures (TLS, an API key, a namespace)
    keep the SDK's reason, on one line.
    """
    if is_unreachable(exc):
        if is_local(address):
            return (
                f"{who}: nothing answers at {address} (no Temporal server there): start one with "
                f"`{dev_server_command(address)}`, or run `{command('durable-agent', 'run', 'TASK')}`, which starts an "
                f"embedded server and worker, or set TEMPORAL_ADDRESS to your server's host:port"
            )
        return (
            f"{who}: nothing answers at {address}: check that the Temporal server is up and reachable from here, "
            "or set TEMPORAL_ADDRESS to your server's host:port"
        )
    reason = " ".join(str(exc).split())
    return f"{who}: cannot connect to Temporal at {address}: {reason}"


def approve_commands(
    workflow_id: str, approval_id: str, *, reviewer: str, address: str | None = None, signed: bool = False,
    args_sha256: str | None = None,
) -> list[tuple[str, str]]:
    """``[("approve", line), ("reject", line)]``: the ``durable-agent approve`` commands for one approval.

    They answer: a decision the run refuses (a stale id, a reviewer not allowed) prints
    the reason and the ids that wait, and exits 1. ``address`` is added when the
    person's environment would not find the server by itself; ``signed`` adds the key
    file that profiles requiring signatures need; ``args_sha256`` binds the decision to
    the arguments shown (signed decisions bind them anyway).
    """
    args: list[str] = ["approve", workflow_id, "--approval-id", approval_id, "--reviewer", reviewer]
    if args_sha256 and not signed:
        args += ["--args-sha256", args_sha256]
    if signed:
        args += ["--key", "YOUR_KEY_FILE"]
    if address:
        args += ["--address", address]
    approve = command("durable-agent", *args)
    return [("approve", approve), ("reject", approve + " --reject")]
