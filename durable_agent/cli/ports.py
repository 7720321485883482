"""Why the embedded Temporal server cannot start: who holds its port, and what the server said.

The starter runs ``temporal server start-dev`` on the port of ``TEMPORAL_ADDRESS``
when nothing answers there. When something that is not Temporal already listens
on that port, or the server exits for another reason, the person running the
starter needs the cause and what to do, not only a log file's name.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Log lines that name a cause the person can act on.
_CAUSES = ("address already in use", "permission denied", "no space left", "database is locked", "error")


def port_owner(port: int) -> str | None:
    """Which process listens on TCP ``port`` on this machine, as ``"pid 123 (python3 -m http.server)"``.

    Linux only (it reads ``/proc``): ``None`` when nothing listens or the system does
    not say; ``"a process of another user"`` when the socket is there but its owner
    cannot be seen.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
                    return f"pid {proc.name} ({command[:120] or 'no command line'})"
        except OSError:  # the process ended, or is not ours to look at
            continue
    return "a process of another user"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def server_log_cause(log_path: Path, since: int = 0) -> str | None:
    """The line of the embedded server's log (from byte ``since``) that best says why it stopped."""
    try:
        with log_path.open("rb") as fh:
            fh.seek(since)
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for cause in _CAUSES:
        for line in reversed(lines):
            if cause in line.lower():
                return line.strip()[:300]
    return None


def what_to_do(port: int) -> str:
    """The two ways out when the embedded server cannot have ``port``."""
    other = 7300 if port != 7300 else 7400
    return (
        "Either point TEMPORAL_ADDRESS at your Temporal server (e.g. TEMPORAL_ADDRESS=host:7233), "
        f"or start the embedded one on a free port: durable-agent run --port {other} \"TASK\"."
    )
