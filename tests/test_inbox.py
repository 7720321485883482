"""The reviewer inbox, used as reviewers use it: headless Chromium against the real app on a real server.

The inbox (uvicorn on a free loopback port) lists runs through the search
attribute the worker sets, shows each reviewer only the approvals their agents'
profiles let them decide, and signs decisions as the profile's delegate for the
reviewer signed in. Alice decides for ``support``; bob for ``finance``, whose
payments go to a bank account; mallory has a token but is on no list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from temporalio.client import Client, WorkflowHandle

from durable_agent import contracts, signing
from durable_agent.demo import shop
from durable_agent.inbox import Deciders, SignIn, create_app, serving
from durable_agent.inbox.signin import add_token
from durable_agent.profiles import load_config
from durable_agent.testing import answer, tool_use
from tests.conftest import Harness
from tests.test_approvals import CANCEL_1001, REFUND_4999, Webhook, wait_pending
from tests.test_cli_and_ui_approval import CHROMIUM, CHROMIUM_ARGS
from tests.processes import free_port
from tests.test_signed_approvals import write_config
from tests.tools_for_tests import calls

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)"),
]

#: Set to a file name to keep the screenshot of the inbox for a person to look at (docs/images/inbox.png came from it).
SCREENSHOT = os.environ.get("INBOX_SCREENSHOT")
IBAN = "DE89370400440532013000"
FINANCE = """
[agents.finance]
system_prompt = "You pay invoices."
tools = ["send_payment"]
autonomy = "supervised"
[agents.finance.approval]
require_signature = true
reviewers = ["bob"]
delegates = ["inbox"]
"""


class Clock:
    """The inbox's clock: now, plus however far a test moves it."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@dataclass
class Inbox:
    """An inbox serving for a test, and what a test may change under it."""

    url: str
    tokens: dict[str, str]
    tokens_file: Path
    config: Path
    secret: bytes
    key: signing.SigningKey
    clock: Clock

    def app(self, client: Client) -> Any:
        """Another inbox process with the same configuration and secret (a restart, or a second replica)."""
        signin = SignIn(self.secret, tokens_file=self.tokens_file, clock=self.clock)
        return create_app(client, self.key, signin, Deciders(self.config, self.key.name))


@contextlib.asynccontextmanager
async def inbox_for(harness: Harness, tmp_path: Path, *, webhook_url: str | None = None) -> AsyncIterator[Inbox]:
    """A worker whose support (alice) and finance (bob) profiles trust the inbox as a delegate, and the inbox serving."""
    inbox_key = signing.generate_key("inbox")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    extra = f'inbox_url = "{base}"\n' + (f'webhook_url = "{webhook_url}"\n' if webhook_url else "") + FINANCE
    path = write_config(tmp_path / "agents.toml", {"inbox": inbox_key.public_key}, reviewers=["alice"], delegates=["inbox"], extra=extra)
    tokens_file = tmp_path / "inbox-tokens.toml"
    tokens = {name: add_token(tokens_file, name) for name in ("alice", "bob", "mallory")}
    inbox = Inbox(base, tokens, tokens_file, path, secrets.token_bytes(32), inbox_key, Clock())
    async with harness.worker(load_config(path)), serving(inbox.app(harness.client), "127.0.0.1", port) as url:
        assert url == base
        yield inbox


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


async def wait_listed(client: Client, handle: WorkflowHandle[Any, Any], timeout: float = 60.0) -> None:
    """Wait until the server's visibility store lists ``handle``'s run as awaiting approval, as the inbox asks.

    The store catches up with the workflow task that set the mark on its own: the inbox
    cannot list a run before it is indexed, and a page that waits for that is not the inbox's fault.
    """
    query = f"{contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL} = true AND WorkflowId = '{handle.id}'"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not [run async for run in client.list_workflows(query, limit=1)]:
        assert loop.time() < deadline, f"the server's visibility store did not list {handle.id} as awaiting approval within {timeout:g} s"
        await asyncio.sleep(0.2)


async def form_of(page: Page, approval_id: str) -> dict[str, str]:
    """The hidden fields of an approval's form, as the page that shows it carries them."""
    form = card(page, approval_id).locator("form")
    return {name: await form.locator(f"input[name={name}]").get_attribute("value") or "" for name in ("csrf", "run_id", "args_sha256")}


async def start_payment(harness: Harness) -> WorkflowHandle[Any, Any]:
    """A finance run that asks to pay 2,500 EUR to ``IBAN`` (protected: it waits for bob)."""
    model, _ = harness.scripted([tool_use("send_payment", {"iban": IBAN, "amount": 2500, "currency": "EUR"}), answer("Paid.")])
    return await harness.start({"task": "Pay the supplier's invoice", "agent": "finance", "model": model})


class TestInbox:
    """Alice approves and the refund runs once; mallory, on no list, sees nothing; a rejection reaches the model."""

    async def test_alice_approves_mallory_sees_nothing(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        async with inbox_for(harness, tmp_path) as inbox, chromium() as browser:
            url = inbox.url
            mallory = await sign_in(browser, url, "mallory", inbox.tokens["mallory"])
            alice = await sign_in(browser, url, "alice", inbox.tokens["alice"])
            await expect(alice.get_by_text("No approvals are waiting for you.")).to_be_visible()
            # The run starts after the page is open: its card arrives by server-sent event, no reload.
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
            await wait_listed(harness.client, handle)
            shown = card(alice, pending.approval_id)
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

            # Mallory is on no allow-list: not in her list, not by a direct link.
            await mallory.reload()
            await expect(mallory.get_by_text("No approvals are waiting for you.")).to_be_visible()
            await mallory.goto(f"{url}/approvals/{handle.id}/{pending.approval_id}")
            await expect(mallory.get_by_role("status")).to_contain_text("not waiting for you")
            assert "ord-789" not in await mallory.content()

            await shown.get_by_label(f"Comment on {pending.approval_id}").fill("VIP customer, checked")
            await shown.get_by_role("button", name="Approve").click()
            await expect(alice.get_by_role("status")).to_contain_text(f"Approved: the run goes on with the action. {pending.approval_id} approved by alice.")
            result = await asyncio.wait_for(handle.result(), timeout=60)
        assert [(a.status, a.reviewer, a.comment) for a in result.approvals] == [("approved", "alice", "VIP customer, checked")]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]  # once

    async def test_a_rejection_with_a_comment_reaches_the_model(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        with Webhook() as hook:
            async with inbox_for(harness, tmp_path, webhook_url=hook.url) as inbox, chromium() as browser:
                handle = await harness.start(CANCEL_1001)
                pending = (await wait_pending(handle)).pending_approvals[0]
                notice = (await hook.wait_for_posts())[0]
                link = notice["inbox_url"]
                assert link == f"{inbox.url}/approvals/{handle.id}/{pending.approval_id}"
                alice = await sign_in(browser, inbox.url, "alice", inbox.tokens["alice"])
                await alice.goto(link)  # the notification's link, as a reviewer would follow it
                shown = alice.locator("article.approval.focus")
                await expect(shown).to_contain_text(pending.approval_id)
                await shown.get_by_label(f"Comment on {pending.approval_id}").fill("the customer called back: keep the order")
                await shown.get_by_role("button", name="Reject").click()
                await expect(alice.get_by_role("status")).to_contain_text(f"{pending.approval_id} rejected by alice.")
                result = await asyncio.wait_for(handle.result(), timeout=60)
                await alice.goto(link)
                await expect(alice.get_by_text("That approval is not waiting for you")).to_be_visible()
        assert shop.lookup_order("ord-1001")["status"] == "processing"
        assert "REJECTED by alice: the customer called back: keep the order." in (result.answer or "")


class TestWhoSeesWhat:
    """A reviewer sees only the approvals they may decide: in the list, by a direct link, in a forged form, on the live stream."""

    async def test_alice_never_sees_a_payment_only_bob_may_decide(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        async with inbox_for(harness, tmp_path) as inbox, chromium() as browser:
            alice = await sign_in(browser, inbox.url, "alice", inbox.tokens["alice"])
            bob = await sign_in(browser, inbox.url, "bob", inbox.tokens["bob"])
            refund, payment = await harness.start(REFUND_4999), await start_payment(harness)
            refund_id = (await wait_pending(refund)).pending_approvals[0].approval_id
            payment_id = (await wait_pending(payment)).pending_approvals[0].approval_id
            await wait_listed(harness.client, refund)
            await wait_listed(harness.client, payment)
            await expect(card(bob, payment_id)).to_be_visible(timeout=20_000)
            await expect(card(bob, payment_id)).to_contain_text(IBAN)
            await expect(card(alice, refund_id)).to_be_visible(timeout=20_000)
            for page in (alice, bob):  # both runs are in the list by now; each page keeps to its own
                await page.reload()
            await expect(card(alice, refund_id)).to_be_visible()
            await expect(card(bob, payment_id)).to_be_visible()
            assert await card(alice, payment_id).count() == 0 and await card(bob, refund_id).count() == 0
            assert IBAN not in await alice.content()

            # A direct link (a forwarded notification) shows her nothing of it.
            await alice.goto(f"{inbox.url}/approvals/{payment.id}/{payment_id}")
            await expect(alice.get_by_role("status")).to_contain_text("not waiting for you")
            assert IBAN not in await alice.content() and "send_payment" not in await alice.content()

            # A form she makes herself, with her own anti-forgery token and the payment's ids: not sent.
            await alice.goto(inbox.url)
            fields = await form_of(alice, refund_id)
            status = await wait_pending(payment)
            fields |= {"run_id": status.pending_approvals[0].run_id, "args_sha256": status.pending_approvals[0].args_sha256}
            answer_page = await alice.request.post(f"{inbox.url}/approvals/{payment.id}/{payment_id}", form=fields | {"verdict": "approve"})
            assert "not waiting for you" in await answer_page.text()
            assert [a.approval_id for a in (await wait_pending(payment)).pending_approvals] == [payment_id]
            assert calls("send_payment") == []
            for handle in (refund, payment):
                await handle.terminate()

    async def test_the_live_stream_counts_only_her_own(self, harness: Harness, tmp_path: Path) -> None:
        async with inbox_for(harness, tmp_path) as inbox:
            alice = await asyncio.to_thread(http_sign_in, inbox.url, "alice", inbox.tokens["alice"])
            bob = await asyncio.to_thread(http_sign_in, inbox.url, "bob", inbox.tokens["bob"])
            payment = await start_payment(harness)
            payment_id = (await wait_pending(payment)).pending_approvals[0].approval_id
            deadline = time.monotonic() + 30
            while payment_id not in await asyncio.to_thread(read, bob, f"{inbox.url}/fragment"):
                assert time.monotonic() < deadline, "the payment never reached bob's list"
                await asyncio.sleep(0.2)  # until the inbox's list has the payment
            connected = threading.Event()
            first_event = asyncio.create_task(asyncio.to_thread(next_event, alice, f"{inbox.url}/events", connected))
            assert await asyncio.to_thread(connected.wait, 30), "the stream did not start"
            refund = await harness.start(REFUND_4999)
            await wait_pending(refund)
            # One approval she may decide appeared: the stream counts her own, not bob's payment.
            assert await asyncio.wait_for(first_event, timeout=60) == ("changed", "1")
            for handle in (refund, payment):
                await handle.terminate()


class TestNotices:
    """A link cannot put words of its own in the inbox's banner."""

    async def test_a_notice_is_a_code_with_a_fixed_text(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        phishing = "Your session expired. Call +1 555 0100 and read out your token."
        async with inbox_for(harness, tmp_path) as inbox, chromium() as browser:
            alice = await sign_in(browser, inbox.url, "alice", inbox.tokens["alice"])
            await alice.goto(f"{inbox.url}/?" + urllib.parse.urlencode({"notice": phishing, "refused": "1"}))
            assert "555 0100" not in await alice.content()
            assert await alice.get_by_role("status").count() == 0
            await alice.goto(f"{inbox.url}/approvals/run-x/apr-3-00000000?notice=approved")
            await expect(alice.get_by_role("status")).to_have_text("Approved: the run goes on with the action.")


# ------------------------------------------------------------------ plain HTTP, as a script would


def http_sign_in(url: str, name: str, token: str) -> urllib.request.OpenerDirector:
    """An opener holding ``name``'s session cookie."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    body = urllib.parse.urlencode({"name": name, "token": token, "next": "/"}).encode()
    with opener.open(f"{url}/signin", data=body, timeout=30) as response:
        assert "Signed in as" in response.read().decode()
    return opener


def read(opener: urllib.request.OpenerDirector, url: str) -> str:
    with opener.open(url, timeout=30) as response:
        return response.read().decode()


def next_event(opener: urllib.request.OpenerDirector, url: str, connected: threading.Event) -> tuple[str, str]:
    """The first event on a server-sent event stream (``connected`` is set once the server has looked)."""
    with opener.open(url, timeout=60) as stream:
        event = None
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("retry:"):
                connected.set()
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event:
                return event, line.removeprefix("data: ")
    raise AssertionError("the stream ended without an event")
