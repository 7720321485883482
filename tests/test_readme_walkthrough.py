"""The README's walkthrough, followed in order as a newcomer would, on fresh state.

The commands are read from README.md itself (its code blocks and the command it
asks you to try), run in the order the README gives them, in one fresh project
folder (its own ``.durable-agent``, so the demo shop and the embedded server's
database start empty), and each must print what the README shows or says:

1. the first command: the embedded default and the offline demo (a 20 USD refund);
2. the refund that waits: the starter prints the approve command, which runs as
   printed in the same shell (the virtualenv not activated), answers a wrong id
   with the refusal and the ids that wait, and approves the right one;
3. "Running it like production": a dev server the test starts (on a free port,
   through ``TEMPORAL_ADDRESS``), ``durable-agent worker``, and the CLI commands;
4. ``durable-agent demo reset``.

The only changes to what the README says: the interpreter and ``starter.py`` by
their paths (the venv is this test's), and free ports instead of 7233.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.processes import Processes
from tests.test_processes import free_port

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
#: Where this interpreter's commands are: the venv's bin folder (``.venv/bin`` in the README).
BIN = Path(sys.executable).parent
#: What the README shows for that folder in the commands the starter prints.
README_BIN = "/home/you/durable-agent/.venv/bin"

#: "Running it like production", command by command, with what the README says each prints.
#: The test checks both against README.md, so the list cannot drift from it.
PRODUCTION: list[tuple[str, list[str]]] = [
    (". .venv/bin/activate", []),
    ("temporal server start-dev --db-filename agents.db --search-attribute AgentAwaitingApproval=Bool", []),
    ("durable-agent worker", []),
    (
        'temporal workflow start --type AgentWorkflow --task-queue agents --workflow-id run-1 '
        '--input \'{"task": "Refund order ord-791", "agent": "support"}\'',
        [],
    ),
    ("temporal workflow query --workflow-id run-1 --type status", ['"phase":"waiting_for_approval"', '"approval_id":"apr-3-']),
    ("durable-agent approve run-1 --approval-id apr-3-1a2b3c4d --reviewer alice", ['"status": "approved"']),
    ("temporal workflow result --workflow-id run-1", ["Status COMPLETED", '"status":"success"']),
    ("durable-agent trace run-1", ["4 records, from the content store"]),
]


# ------------------------------------------------------------------ reading the README


def section(title: str) -> str:
    text = README.read_text()
    assert f"\n## {title}\n" in text, f"the README has no section {title!r}"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def block_after(text: str, marker: str, lang: str = "") -> str:
    """The first fenced code block after ``marker`` in ``text``."""
    assert marker in text, f"the README no longer says {marker!r}"
    found = re.search(rf"```{lang}\n(.*?)```", text.split(marker, 1)[1], re.S)
    assert found, f"no code block after {marker!r}"
    return found.group(1)


def shell_lines(block: str) -> list[tuple[str, str]]:
    """``(command, comment)`` for each command of a shell block, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", "", block)
    lines = []
    for line in joined.splitlines():
        command, _, comment = line.partition("  # ")
        if command.strip():
            lines.append((" ".join(command.split()), comment.strip()))
    return lines


#: Parts of a line that differ from run to run, and what matches them.
_VARYING = [
    (r"run-[0-9a-f]{8}", r"run-[0-9a-f]{8}"),
    (r"apr-\d+-[0-9a-f]{8}", r"apr-\d+-[0-9a-f]{8}"),
    (r"[0-9a-f]{64}", r"[0-9a-f]{64}"),
    (r"\d+\+\d+ tok", r"\d+\+\d+ tok"),
    (r"\d+ input \+ \d+ output tokens", r"\d+ input \+ \d+ output tokens"),
    (r"127\.0\.0\.1:\d+", r"127\.0\.0\.1:\d+"),
    (r"localhost:\d+", r"localhost:\d+"),
    (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"),
    (r"\.\.\.", r".*?"),
]


def pattern(line: str) -> re.Pattern[str]:
    """A README output line as a pattern: ids, token counts, ports and times vary; ``...`` elides."""
    combined = "|".join(f"({shown})" for shown, _ in _VARYING)
    line = line.strip()
    out, last = "", 0
    for found in re.finditer(combined, line):
        out += re.escape(line[last : found.start()])
        out += _VARYING[found.lastindex - 1][1] if found.lastindex else ""
        last = found.end()
    out += re.escape(line[last:])
    return re.compile(out)


def assert_shows(readme_block: str, output: str) -> None:
    """Every line of the README's block matches a line of ``output``, in the README's order."""
    lines = [line.strip() for line in output.splitlines()]
    at = 0
    for expected in (line for line in readme_block.splitlines() if line.strip()):
        wanted = pattern(expected)
        while at < len(lines) and not wanted.fullmatch(lines[at]):
            at += 1
        assert at < len(lines), f"the README shows\n  {expected}\nbut the output has no such line (in order):\n{output}"
        at += 1


# ------------------------------------------------------------------ running it


def fresh_shell(folder: Path, address: str) -> dict[str, str]:
    """A newcomer's shell: the venv not activated, no agent or Temporal settings but the server's address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "TEMPORAL_", "ANTHROPIC_", "SHOP_", "OTEL_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN.resolve())
    env.update(TEMPORAL_ADDRESS=address, USER="you", HOME=str(folder), PYTHONUNBUFFERED="1")
    return env


def activated(env: dict[str, str]) -> dict[str, str]:
    """``. .venv/bin/activate``: the venv's commands first on ``PATH``."""
    return {**env, "PATH": os.pathsep.join([str(BIN), env["PATH"]]), "VIRTUAL_ENV": str(BIN.parent)}


def as_here(readme_command: str) -> list[str]:
    """A README command with this test's interpreter, venv and checkout in place of ``.venv/bin/...`` and ``starter.py``."""
    words = shlex.split(readme_command)
    places = {".venv/bin/python": sys.executable, "starter.py": str(ROOT / "starter.py")}
    return [places.get(w) or (str(BIN / w.removeprefix(".venv/bin/")) if w.startswith(".venv/bin/") else w) for w in words]


def bash(line: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def port_pair() -> int:
    """A free port whose +1000 (the embedded server's UI) is free too."""
    while True:
        port = free_port()
        if port + 1000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1000))
            except OSError:
                continue
        return port


class Lines:
    """A process's standard output, read as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.text = ""
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self.changed:
                self.text += line
                self.changed.notify_all()

    def wait_for(self, fragment: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        with self.changed:
            while fragment not in self.text:
                left = deadline - time.monotonic()
                assert left > 0, f"{fragment!r} never came:\n{self.text}"
                self.changed.wait(left)
            return self.text


def test_the_walkthrough_in_order_on_fresh_state(tmp_path: Path, processes: Processes) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    shell = fresh_shell(folder, f"127.0.0.1:{port_pair()}")  # nothing answers there: the embedded default starts

    # 1. The first command: install (done: this is the venv), then the demo.
    two = section("Two commands")
    first = block_after(two, "Run the demo", "sh").strip()
    install, _, demo = first.rpartition(" && ")
    assert install == "python3 -m venv .venv && .venv/bin/pip install -e .", first
    run = subprocess.run(as_here(demo), cwd=folder, env=shell, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout + run.stderr
    assert_shows(block_after(two, "drives the bundled `support` agent through a real run and says so:"), run.stdout)
    assert (folder / ".durable-agent" / "temporal.db").exists()

    # 2. The refund that waits for a person.
    tried = re.search(r"try `(\.venv/bin/python starter\.py '[^']+')`", two)
    assert tried, "the README no longer asks to try a refund that waits"
    starter = subprocess.Popen(
        as_here(tried.group(1)), cwd=folder, env=shell, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    try:
        out = Lines(starter)
        shown = out.wait_for("reject:")
        printed = block_after(two, "offers to approve it right there):").replace(README_BIN, str(BIN))
        assert_shows(printed, shown)
        approve = re.search(r"approve: (.+)", shown)
        assert approve, shown
        command = approve.group(1).strip()
        approval_id = re.search(r"--approval-id (\S+)", command).group(1)  # type: ignore[union-attr]

        # In the same shell (venv not activated): a wrong id is refused, naming the id that waits.
        wrong = bash(command.replace(approval_id, "apr-3-deadbeef"), shell, folder)
        assert wrong.returncode == 1, wrong.stdout + wrong.stderr
        refusal = block_after(two, "with the ids that wait, and exits 1:").replace("apr-3-37b1d634", approval_id)
        assert wrong.stderr.strip() == refusal.strip()

        right = bash(command, shell, folder)
        assert right.returncode == 0, right.stdout + right.stderr
        assert '"status": "approved"' in right.stdout and "(`\"status\": \"approved\"`)" in two
        assert starter.wait(timeout=120) == 0, out.text
        assert "Result: success after 4 steps" in out.text and "then `Result: success after 4 steps`" in two
    finally:
        if starter.poll() is None:
            os.killpg(starter.pid, 9)
            starter.wait()

    # 3. Running it like production, on the same folder (the shop has refunded two orders by now).
    block = block_after(section("Running it like production"), "from the project folder:", "sh")
    commands = shell_lines(block)
    assert [command for command, _ in commands] == [command for command, _ in PRODUCTION]
    for (command, comment), (_, says) in zip(commands, PRODUCTION):
        for fragment in says:
            assert fragment in comment, f"the README no longer says {fragment!r} of `{command}`"
    port, ui_port = free_port(), free_port()
    env = activated({**shell, "TEMPORAL_ADDRESS": f"127.0.0.1:{port}"})
    server, worker, start, status, decide, result, trace = (command for command, _ in PRODUCTION[1:])
    processes.start("dev-server", [*shlex.split(server), "--port", str(port), "--ui-port", str(ui_port)], env, cwd=folder)
    deadline = time.monotonic() + 60
    while bash("temporal operator namespace describe default", env, folder).returncode != 0:
        assert time.monotonic() < deadline, processes.output()
        time.sleep(0.5)
    processes.start("worker", shlex.split(worker), env, cwd=folder)

    said = dict(PRODUCTION)
    started = bash(start, env, folder)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 90
    while True:
        queried = bash(status, env, folder)
        if all(fragment in queried.stdout for fragment in said[status]):
            break
        assert time.monotonic() < deadline, f"{queried.stdout}{queried.stderr}\n{processes.output()}"
        time.sleep(0.5)
    approval_id = re.search(r'"approval_id":"(apr-3-[0-9a-f]+)"', queried.stdout).group(1)  # type: ignore[union-attr]
    for command in (decide.replace("apr-3-1a2b3c4d", approval_id), result, trace):
        done = bash(command, env, folder)
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}\n{processes.output()}"
        flat = " ".join(done.stdout.split())
        for fragment in said[command.replace(approval_id, "apr-3-1a2b3c4d")]:
            assert fragment in flat, f"`{command}` printed\n{done.stdout}"
    assert (folder / "agents.db").exists()

    # 4. The demo shop back as seeded.
    reset = re.search(r"`(\.venv/bin/durable-agent demo reset)`", two)
    assert reset, "the README no longer says how to reset the demo shop"
    done = subprocess.run(as_here(reset.group(1)), cwd=folder, env=shell, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Reset the demo shop at .durable-agent/shop.sqlite" in done.stdout, done.stdout + done.stderr


def test_the_production_database_is_not_left_for_git() -> None:
    """`temporal server start-dev --db-filename agents.db` leaves agents.db in the project folder: git ignores it."""
    ignored = subprocess.run(["git", "check-ignore", "-q", "agents.db"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "agents.db is not in .gitignore"
