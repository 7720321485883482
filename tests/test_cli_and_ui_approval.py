"""Approving a pending 4,999 USD refund the ways people do: the `temporal` CLI and the real Temporal UI.

The UI test starts its own dev server with the Web UI on (the session's server has
none) and drives it in headless Chromium through Playwright as a reviewer would:
More Actions, Send a Signal, ``approve``, ``{"approval_id": ..., "reviewer": "ui-reviewer"}``, Submit;
and More Actions, Send an Update, ``review``, ``{"approval_id": ..., "approved": true, ...}``, Submit.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from durable_agent.client import AgentClient
from durable_agent.demo import shop
from tests.conftest import Harness, subprocess_env
from tests.test_approvals import CANCEL_1001, REFUND_4999, current_details, support, wait_pending
from tests.processes import dev_server
from tests.test_processes import cli

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and nothing that would reach beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class TestCliApproval:
    """`temporal workflow signal` approves a waiting action."""

    async def test_signal_from_the_cli(self, harness: Harness, server_address: str) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            approval_id = (await wait_pending(handle)).pending_approvals[0].approval_id

            def signal(body: dict[str, str]) -> None:
                cli(server_address, "workflow", "signal", "--workflow-id", handle.id, "--name", "approve", "--input", json.dumps(body))

            # Off the event loop: the in-process worker shares it. A decision names what it decides.
            await asyncio.to_thread(signal, {"reviewer": "alice"})
            status = await wait_pending(handle)
            assert f"approval_id is required: name the approval you decide (pending: {approval_id})" in status.warnings[-1]
            await asyncio.to_thread(signal, {"approval_id": approval_id, "reviewer": "alice"})
            result = await handle.result()
        assert result.status == "success"
        assert [(a.approval_id, a.status, a.reviewer) for a in result.approvals] == [(approval_id, "approved", "alice")]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]

    async def test_the_command_shown_in_the_ui_works_as_pasted(self, harness: Harness, server_address: str) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            approval_id = (await wait_pending(handle)).pending_approvals[0].approval_id
            details = await current_details(handle)
            command = re.search(r"Approve: `(temporal workflow signal [^`]+)`", details)
            assert command, details
            argv = shlex.split(command.group(1).replace("YOUR_NAME", "dana"))
            await asyncio.to_thread(cli, server_address, *argv[1:])
            result = await handle.result()
        assert [(a.approval_id, a.status, a.reviewer) for a in result.approvals] == [(approval_id, "approved", "dana")]

    async def test_the_starters_command_binds_the_arguments(self, harness: Harness, server_address: str, state_dir: Path) -> None:
        """The approve command `durable-agent run` prints names the arguments' digest, and works as pasted."""
        from durable_agent.cli.run import follow

        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            shown = io.StringIO()
            following = asyncio.create_task(follow(handle, server_address, shown, prompt=False))
            pending = (await wait_pending(handle)).pending_approvals[0]
            deadline = time.monotonic() + 30
            while "approve:" not in shown.getvalue():
                assert time.monotonic() < deadline and not following.done(), shown.getvalue()
                await asyncio.sleep(0.1)
            command = next(line for line in shown.getvalue().splitlines() if line.strip().startswith("approve:"))
            argv = shlex.split(command.split("approve:", 1)[1])
            assert argv[argv.index("--args-sha256") + 1] == pending.args_sha256
            env = subprocess_env(state_dir, server_address)
            # Another digest (the arguments changed since the reviewer looked) is refused, and says so.
            altered = [*argv[: argv.index("--args-sha256") + 1], "0" * 64, *argv[argv.index("--args-sha256") + 2 :]]
            refused = await asyncio.to_thread(subprocess.run, altered, capture_output=True, text=True, timeout=60, env=env)
            assert refused.returncode == 1 and "refused" in refused.stderr, refused.stderr
            pasted = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60, env=env)
            assert pasted.returncode == 0, pasted.stderr
            result = await asyncio.wait_for(following, timeout=60)
        assert result.status == "success" and [a.approval_id for a in result.approvals] == [pending.approval_id]

    async def test_review_update_from_the_cli_answers(self, harness: Harness, server_address: str) -> None:
        async with harness.worker(support(approval={"reviewers": ["alice"]})):
            handle = await harness.start(REFUND_4999)
            approval_id = (await wait_pending(handle)).pending_approvals[0].approval_id

            def review(reviewer: str, check: bool) -> subprocess.CompletedProcess[str]:
                body = json.dumps({"approval_id": approval_id, "approved": True, "reviewer": reviewer})
                return cli(server_address, "workflow", "update", "execute", "--workflow-id", handle.id, "--name", "review",
                           "--input", body, "-o", "json", check=check)

            refused = await asyncio.to_thread(review, "mallory", False)
            assert refused.returncode != 0
            assert "'mallory' may not decide: allowed reviewers are alice" in refused.stdout + refused.stderr
            # Sending the same decision again cannot help, and the refusal says so.
            assert "retryable: false" in refused.stdout + refused.stderr
            answered = await asyncio.to_thread(review, "alice", True)
            result = await handle.result()
        record = json.loads(answered.stdout)
        record = record.get("result", record)
        assert (record["approval_id"], record["status"], record["reviewer"]) == (approval_id, "approved", "alice")
        assert [a.reviewer for a in result.approvals] == ["alice"]


async def send_from_ui(page: Page, run_url: str, action: str, handler: str, payload: dict[str, Any]) -> None:
    """In the run's page: More Actions > ``action``, pick ``handler``, enter ``payload`` as Data, Submit.

    Args:
        action: "Send a Signal" or "Send an Update", as the menu says.
    """
    kind = "signal" if action == "Send a Signal" else "update"
    await page.goto(run_url)
    await page.get_by_role("button", name="More Actions").click()
    await page.get_by_role("menuitem", name=action).click()
    dialog = page.locator(f"dialog[data-testid={kind}-confirmation-modal]:visible")
    await dialog.get_by_test_id(f"{kind}-select-button").click()
    # Each option lists the handler's description after its name.
    await dialog.get_by_role("option", name=re.compile(rf"^{handler}\b")).click()
    await dialog.get_by_role("textbox", name="Data").click()
    # insert_text, not typing: the code editor would auto-close braces and quotes.
    await page.keyboard.insert_text(json.dumps(payload))
    if kind == "update":
        # Leaving the editor reformats the JSON and moves Submit under the pointer; step out first.
        await dialog.get_by_role("button", name="Random UUID").click()
    await dialog.get_by_role("button", name="Submit").click()


class TestUiApproval:
    """The Temporal UI approves a waiting action: "Send a Signal" (approve) and "Send an Update" (review)."""

    @pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)")
    async def test_approve_from_the_web_ui(self, state_dir: Path, tmp_path: Path) -> None:
        from playwright.async_api import async_playwright, expect

        async with dev_server(tmp_path, ui=True) as server:
            client, ui_url = server.client, server.ui_url
            harness = Harness(client, state_dir)
            agents = AgentClient(client, task_queue=harness.task_queue)
            async with harness.worker(), async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                try:
                    refund = await harness.start(REFUND_4999)
                    refund_id = (await wait_pending(refund)).pending_approvals[0].approval_id
                    await page.goto(f"{ui_url}/namespaces/default/workflows/{refund.id}")
                    # What waits, and why, under User Metadata > Current Details (rendered in a frame).
                    await page.get_by_role("tab", name="User Metadata").first.click()
                    details = page.frame_locator("iframe").first
                    await expect(details.get_by_text("Waiting for approval")).to_be_visible()
                    await expect(details.get_by_text("amount 4999 USD is above the limit of 1000")).to_be_visible()
                    await send_from_ui(page, page.url, "Send a Signal", "approve", {"approval_id": refund_id, "reviewer": "ui-reviewer"})
                    refunded = await asyncio.wait_for(agents.result(refund.id), timeout=60)

                    cancel = await harness.start(CANCEL_1001)
                    cancel_id = (await wait_pending(cancel)).pending_approvals[0].approval_id
                    run_url = f"{ui_url}/namespaces/default/workflows/{cancel.id}"
                    await send_from_ui(page, run_url, "Send an Update", "review", {"approval_id": cancel_id, "approved": True, "reviewer": "ui-updater"})
                    cancelled = await asyncio.wait_for(agents.result(cancel.id), timeout=60)
                except BaseException:
                    await page.screenshot(path=str(tmp_path / "ui-failure.png"), full_page=True)
                    raise
                finally:
                    await browser.close()
        assert refunded.status == "success"
        assert [(a.approval_id, a.status, a.reviewer) for a in refunded.approvals] == [(refund_id, "approved", "ui-reviewer")]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        assert [(a.tool, a.status, a.reviewer) for a in cancelled.approvals] == [("cancel_order", "approved", "ui-updater")]
        assert shop.lookup_order("ord-1001")["status"] == "cancelled"
