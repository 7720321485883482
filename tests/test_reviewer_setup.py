"""What the worker and the inbox say about a reviewer setup that is unsafe or incomplete, on servers of their own.

- An allow-list without signatures checks a typed name: the worker says so at
  start and in ``--check``, naming the profile and the fix.
- The inbox finds waiting runs by the ``AgentAwaitingApproval`` search attribute:
  the worker registers it where it may (a dev server); where it may not (here, a
  dev server whose three Bool attributes are taken, which refuses a fourth), the
  worker and the inbox page say what is missing and the command that fixes it, and
  a link to one approval still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from durable_agent import signing
from durable_agent.inbox import Deciders, SignIn, create_app, serving
from durable_agent.inbox.signin import add_token
from durable_agent.schemas import AgentResult
from tests.conftest import ROOT, subprocess_env, temporal_cli
from tests.test_approvals import REFUND_4999, wait_pending
from tests.test_inbox import CHROMIUM, card, chromium, sign_in
from tests.test_processes import free_port, stop
from tests.test_signed_approvals import write_config

pytestmark = pytest.mark.slow

NAME_ONLY = """tool_modules = ["durable_agent.demo.shop"]
[agents.support]
tools = ["lookup_order", "search_kb", "issue_refund", "cancel_order"]
[agents.support.approval]
max_amount = 1000.0
reviewers = ["alice"]
"""
REGISTER = "temporal operator search-attribute create --name AgentAwaitingApproval --type Bool"


@contextlib.asynccontextmanager
async def dev_server(*bools: str) -> AsyncIterator[Client]:
    """A dev server of this test's own, with these Bool search attributes and no other."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        search_attributes=[SearchAttributeKey.for_bool(name) for name in bools],
    )
    try:
        yield env.client
    finally:
        await env.shutdown()


async def bool_attributes(client: Client) -> set[str]:
    response = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
    return {name for name, kind in response.custom_attributes.items() if kind == IndexedValueType.INDEXED_VALUE_TYPE_BOOL}


@contextlib.contextmanager
def worker_process(env: dict[str, str], config: Path) -> Iterator[list[str]]:
    """``durable-agent worker --config CONFIG`` until the block ends; its output lines so far, as they come."""
    process = subprocess.Popen(
        [sys.executable, "-m", "durable_agent", "worker", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        yield lines
    finally:
        stop(process)
        reader.join(timeout=10)


async def started(lines: list[str]) -> str:
    """The worker's output up to its start line."""
    deadline = time.monotonic() + 60
    while not any("polling task queue" in line for line in lines):
        assert time.monotonic() < deadline, "".join(lines)
        await asyncio.sleep(0.2)
    return "".join(lines)


class TestWorkerSays:
    """The worker registers the inbox's search attribute where it may, and warns of a name-only allow-list."""

    async def test_a_name_only_allow_list_is_named_and_the_attribute_registered(self, state_dir: Path, tmp_path: Path) -> None:
        config = tmp_path / "agents.toml"
        config.write_text(NAME_ONLY)
        async with dev_server() as client:
            env = subprocess_env(state_dir, client.service_client.config.target_host, AGENT_TASK_QUEUE="setup-test")
            check = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "durable_agent", "worker", "--check", "--config", str(config)],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            )
            assert check.returncode == 0, check.stderr
            warning = f"{config}: agents.support.approval.reviewers ('alice') is not authenticated"
            assert warning in check.stderr
            assert "set require_signature = true under [agents.support.approval]" in check.stderr
            assert "a public key under [reviewer_keys]" in check.stderr
            assert "search attribute AgentAwaitingApproval is not registered in namespace default" in check.stderr
            assert REGISTER in check.stderr
            assert "AgentAwaitingApproval" not in await bool_attributes(client)  # a check only looks

            with worker_process(env, config) as lines:
                output = await started(lines)
            assert warning in output and "require_signature" in output
            assert "registered search attribute AgentAwaitingApproval (Bool) in namespace default" in output
            assert "AgentAwaitingApproval" in await bool_attributes(client)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)")
class TestWithoutTheAttribute:
    """Where the attribute cannot be registered, the worker and the inbox say so, and a direct link still decides."""

    async def test_the_inbox_says_what_is_missing_and_a_link_still_works(self, state_dir: Path, tmp_path: Path) -> None:
        from playwright.async_api import expect

        inbox_key = signing.generate_key("inbox")
        config = write_config(tmp_path / "agents.toml", {"inbox": inbox_key.public_key}, reviewers=["alice"], delegates=["inbox"])
        tokens_file = tmp_path / "inbox-tokens.toml"
        token = add_token(tokens_file, "alice")
        async with dev_server("Flag1", "Flag2", "Flag3") as client:
            env = subprocess_env(state_dir, client.service_client.config.target_host, AGENT_TASK_QUEUE="no-index")
            signin = SignIn(secrets.token_bytes(32), tokens_file=tokens_file)
            app = create_app(client, inbox_key, signin, Deciders(config, "inbox"))
            with worker_process(env, config) as lines:
                output = await started(lines)
                handle = await client.start_workflow("AgentWorkflow", REFUND_4999, id="no-index-run", task_queue="no-index", result_type=AgentResult)
                pending = (await wait_pending(handle)).pending_approvals[0]
                async with serving(app, "127.0.0.1", free_port()) as url, chromium() as browser:
                    alice = await sign_in(browser, url, "alice", token)
                    setup = alice.get_by_role("alert")
                    await expect(setup).to_contain_text("has no search attribute AgentAwaitingApproval")
                    await expect(setup).to_contain_text(REGISTER)
                    await alice.screenshot(path=str(tmp_path / "inbox-no-index.png"), full_page=True)

                    await alice.goto(f"{url}/approvals/{handle.id}/{pending.approval_id}")
                    shown = card(alice, pending.approval_id)
                    await expect(shown).to_be_visible()
                    await shown.get_by_role("button", name="Approve").click()
                    await expect(alice.get_by_role("status")).to_contain_text(f"{pending.approval_id} approved by alice.")
                    result = await asyncio.wait_for(handle.result(), timeout=60)
        assert "AgentAwaitingApproval is not registered in namespace default, and this worker may not register it" in output
        assert "cannot have more than 3 search attribute of type Bool" in output and REGISTER in output
        assert result.status == "success" and [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]
