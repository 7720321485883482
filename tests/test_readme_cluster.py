"""The README's "From laptop to cluster" commands, followed on this machine.

Everything but Docker and the cloud: ``moto_server`` stands in for the S3 bucket
(the README's bucket name is created there and ``AWS_ENDPOINT_URL`` points at it)
and the session's dev server for Temporal Cloud. Every other line runs as written,
in bash, with the installed ``durable-agent`` and ``temporal`` commands.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, subprocess_env
from tests.s3_server import aws_env, create_bucket, moto_server, payload_bytes
from tests.processes import Processes, free_port

pytestmark = pytest.mark.slow

TASK = "Refund 20 USD on order ord-789"


def cluster_commands() -> list[str]:
    """The command lines of the section's first shell block (comments dropped)."""
    section = (ROOT / "README.md").read_text().split("## From laptop to cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the section has no sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]


def exported(lines: list[str], env: dict[str, str]) -> dict[str, str]:
    """The environment after running the README's ``export`` lines in bash."""
    script = "\n".join([*lines, "env -0"])
    out = subprocess.run(["bash", "-ec", script], env=env, capture_output=True, timeout=60, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def bash(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)


async def test_the_cluster_section_as_written(tmp_path: Path, processes: Processes, server_address: str) -> None:
    commands = cluster_commands()
    exports = [c for c in commands if c.startswith("export ")]
    runs = [c for c in commands if not c.startswith("export ")]
    assert [c.split()[1].split("=")[0] for c in exports] == ["AGENT_ENCRYPTION_KEYS", "AGENT_CODEC_TOKEN", "AGENT_STORE_URL", "TEMPORAL_ADDRESS"]

    with moto_server() as s3:
        # Stand-ins: the README's bucket on moto_server; the session's server instead of Temporal Cloud.
        base = subprocess_env(tmp_path, server_address, AGENT_TASK_QUEUE=f"readme-{uuid.uuid4().hex[:8]}", **aws_env(s3))
        base["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), base.get("PATH", "")])
        env = exported([c for c in exports if "TEMPORAL_ADDRESS" not in c], base)
        bucket = urllib.parse.urlsplit(env["AGENT_STORE_URL"]).netloc
        create_bucket(s3, bucket)
        assert len(env["AGENT_ENCRYPTION_KEYS"].split(":", 1)[1]) == 44 and len(env["AGENT_CODEC_TOKEN"]) >= 32

        check, worker, codec, run, show = runs
        result = await asyncio.to_thread(bash, check, env)
        assert result.returncode == 0 and "encryption on" in result.stdout, result.stderr
        processes.start("worker", shlex.split(worker), env)
        port = free_port()
        processes.start("codec", shlex.split(codec.replace("8081", str(port))), env)
        await until_http(f"http://127.0.0.1:{port}/healthz", processes)

        workflow_id = f"run-{uuid.uuid4().hex[:8]}"
        result = await asyncio.to_thread(bash, run.replace("run-1", workflow_id), env)
        assert result.returncode == 0, result.stdout + result.stderr + processes.output()

        shown = await asyncio.to_thread(bash, show.replace("run-1", workflow_id).replace("8081", str(port)), env)
        assert shown.returncode == 0, shown.stderr
        assert any(TASK.encode() in data for data in payload_bytes(shown.stdout)), "the codec server decoded the history"
        plain = await asyncio.to_thread(bash, f"temporal workflow show -w {workflow_id} --output json", env)
        assert plain.returncode == 0 and not any(TASK.encode() in d for d in payload_bytes(plain.stdout)), "ciphertext without it"
        no_token = await asyncio.to_thread(bash, show.split(" --codec-auth")[0].replace("run-1", workflow_id).replace("8081", str(port)), env)
        # Decoded for holders of the token only: without it the codec server answers 401 and the CLI gives up.
        assert no_token.returncode != 0 and TASK not in no_token.stdout + no_token.stderr


async def until_http(url: str, processes: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).close())
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer\n{processes.output()}") from None
            await asyncio.sleep(0.2)
