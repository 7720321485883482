"""The reviewer inbox, used as reviewers use it: headless Chromium against the real app on a real server.

The inbox (uvicorn on a free loopback port) lists runs through the search
attribute the worker sets, and signs decisions as the profile's delegate for the
reviewer signed in. Alice is on the allow-list; mallory has a token but is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from durable_agent import signing
from durable_agent.demo import shop
from durable_agent.inbox import SignIn, create_app, serving
from durable_agent.inbox.signin import add_token
from durable_agent.profiles import load_config
from tests.conftest import ROOT, Harness, subprocess_env
from tests.test_approvals import CANCEL_1001, REFUND_4999, Webhook, wait_pending
from tests.test_cli_and_ui_approval import CHROMIUM, CHROMIUM_ARGS
from tests.processes import free_port
from tests.test_signed_approvals import write_config

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)"),
]

#: Set to a file name to keep the screenshot of the inbox for a person to look at (docs/images/inbox.png came from it).
SCREENSHOT = os.environ.get("INBOX_SCREENSHOT")


@contextlib.asynccontextmanager
async def inbox_for(harness: Harness, tmp_path: Path, *, webhook_url: str | None = None) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A worker whose support profile trusts the inbox as a delegate for alice, and the inbox serving.

    Yields the inbox's base URL and the reviewers' sign-in tokens.
    """
    inbox_key = signing.generate_key("inbox")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    extra = f'inbox_url = "{base}"\n' + (f'webhook_url = "{webhook_url}"\n' if webhook_url else "")
    config = load_config(
        write_config(tmp_path / "agents.toml", {"inbox": inbox_key.public_key}, reviewers=["alice"], delegates=["inbox"], extra=extra)
    )
    tokens_file = tmp_path / "inbox-tokens.toml"
    tokens = {name: add_token(tokens_file, name) for name in ("alice", "mallory")}
    app = create_app(harness.client, inbox_key, SignIn(tokens_file=tokens_file))
    async with harness.worker(config), serving(app, "127.0.0.1", port) as url:
        assert url == base
        yield url, tokens


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(browser: Browser, url: str, name: str, token: str) -> Page:
    """A reviewer's own browser context, signed in through the form."""
    page = await (await browser.new_context(viewport={"width": 1200, "height": 1000})).new_page()
    await page.goto(url)
    assert page.url.startswith(f"{url}/signin")
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{url}/")
    return page


def card(page: Page, approval_id: str) -> Any:
    return page.locator("article.approval", has_text=approval_id)


class TestInbox:
    """Alice approves and the refund runs once; mallory sees it but is refused; a rejection reaches the model."""

    async def test_alice_approves_mallory_is_refused(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        async with inbox_for(harness, tmp_path) as (url, tokens), chromium() as browser:
            mallory = await sign_in(browser, url, "mallory", tokens["mallory"])
            alice = await sign_in(browser, url, "alice", tokens["alice"])
            await expect(alice.get_by_text("No approvals are waiting.")).to_be_visible()
            # The run starts after the page is open: its card arrives by server-sent event, no reload.
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
            for page in (alice, mallory):
                shown = card(page, pending.approval_id)
                await expect(shown).to_be_visible(timeout=20_000)
                await expect(shown.locator(".amount")).to_have_text("4,999.00 USD")
                await expect(shown.locator(".reason")).to_have_text("amount 4999 USD is above the limit of 1000")
                await expect(shown).to_contain_text("medium risk")
                await expect(shown).to_contain_text("support")
                await expect(shown.locator("ol.steps li")).to_have_count(2)  # lookup_order, then search_kb
                await expect(shown.locator("ol.steps")).to_contain_text("lookup_order")
                await expect(shown.locator("ol.steps")).to_contain_text("search_kb")
            await alice.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)
            if SCREENSHOT:
                shutil.copy(tmp_path / "inbox.png", SCREENSHOT)

            await card(mallory, pending.approval_id).get_by_role("button", name="Approve").click()
            await expect(mallory.get_by_role("status")).to_contain_text("Refused: 'mallory' may not decide: allowed reviewers are alice")
            assert (await wait_pending(handle)).pending_approvals == [pending]  # she saw it, and it still waits

            shown = card(alice, pending.approval_id)
            await shown.get_by_label(f"Comment on {pending.approval_id}").fill("VIP customer, checked")
            await shown.get_by_role("button", name="Approve").click()
            await expect(alice.get_by_role("status")).to_contain_text(f"{pending.approval_id} approved by alice.")
            result = await asyncio.wait_for(handle.result(), timeout=60)
            # Decided elsewhere: mallory's open page drops the card by itself.
            await expect(card(mallory, pending.approval_id)).to_have_count(0, timeout=20_000)
        assert [(a.status, a.reviewer, a.comment) for a in result.approvals] == [("approved", "alice", "VIP customer, checked")]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]  # once
        assert any("'mallory' may not decide" in w for w in result.warnings)

    async def test_a_rejection_with_a_comment_reaches_the_model(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        with Webhook() as hook:
            async with inbox_for(harness, tmp_path, webhook_url=hook.url) as (url, tokens), chromium() as browser:
                handle = await harness.start(CANCEL_1001)
                pending = (await wait_pending(handle)).pending_approvals[0]
                notice = (await hook.wait_for_posts())[0]
                link = notice["inbox_url"]
                assert link == f"{url}/approvals/{handle.id}/{pending.approval_id}"
                alice = await sign_in(browser, url, "alice", tokens["alice"])
                await alice.goto(link)  # the notification's link, as a reviewer would follow it
                shown = alice.locator("article.approval.focus")
                await expect(shown).to_contain_text(pending.approval_id)
                await shown.get_by_label(f"Comment on {pending.approval_id}").fill("the customer called back: keep the order")
                await shown.get_by_role("button", name="Reject").click()
                await expect(alice.get_by_role("status")).to_contain_text(f"{pending.approval_id} rejected by alice.")
                result = await asyncio.wait_for(handle.result(), timeout=60)
                await alice.goto(link)
                await expect(alice.get_by_text("That approval is no longer waiting")).to_be_visible()
        assert shop.lookup_order("ord-1001")["status"] == "processing"
        assert "REJECTED by alice: the customer called back: keep the order." in (result.answer or "")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback test server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class TestInboxCommand:
    """`durable-agent inbox` as its own process, behind an auth proxy's header."""

    async def test_trusted_header_sign_in(self, harness: Harness, tmp_path: Path) -> None:
        address = harness.client.service_client.config.target_host
        env = subprocess_env(harness.state, address)
        made = subprocess.run(
            [sys.executable, "-m", "durable_agent", "keys", "new", "inbox", "--dir", str(tmp_path)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert made.returncode == 0, made.stderr
        port = free_port()
        inbox = subprocess.Popen(
            [sys.executable, "-m", "durable_agent", "inbox", "--port", str(port), "--key", str(tmp_path / "inbox.key"),
             "--trust-header", "X-Forwarded-Email"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await asyncio.to_thread(_get, f"{url}/healthz"))[0] == 200:
                        break
                except OSError:
                    pass
                assert inbox.poll() is None, inbox.communicate()[0]
                assert time.monotonic() < deadline, "the inbox did not come up"
                await asyncio.sleep(0.2)
            anonymous, _ = await asyncio.to_thread(_get, url)
            status, body = await asyncio.to_thread(_get, url, {"X-Forwarded-Email": "alice@example.com"})
        finally:
            inbox.terminate()
            output = inbox.communicate(timeout=30)[0]
        assert anonymous == 401
        assert status == 200 and "alice@example.com" in body and "Approvals" in body
        assert f"Reviewer inbox on {url}" in output and json.dumps("inbox") in output.replace("'", '"')
        assert inbox.returncode == 0
