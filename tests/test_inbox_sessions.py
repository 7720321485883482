"""Reviewer sessions in the inbox: they expire, end with the reviewer's token, and outlive a restart.

Sessions are cookies the inbox signs with a secret from its configuration, so any
inbox process with that secret accepts them (a restart, a second replica), and
each request checks them against the tokens file as it is now. Browser tests run
the app in-process (its clock can be moved); the command tests run
``durable-agent inbox`` as its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from durable_agent.inbox import serving
from durable_agent.inbox.signin import add_token
from tests.conftest import ROOT, Harness, subprocess_env
from tests.test_approvals import REFUND_4999, wait_pending
from tests.test_inbox import CHROMIUM, card, chromium, form_of, inbox_for, sign_in, wait_listed
from tests.test_processes import free_port

pytestmark = pytest.mark.slow
browser_test = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)")


@browser_test
class TestSessions:
    """A session ends when it expires or its token goes, and reaches every inbox process that shares the secret."""

    async def test_a_removed_token_ends_the_session_before_the_next_decision(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        async with inbox_for(harness, tmp_path) as inbox, chromium() as browser:
            alice = await sign_in(browser, inbox.url, "alice", inbox.tokens["alice"])
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
            await wait_listed(harness.client, handle)
            await expect(card(alice, pending.approval_id)).to_be_visible(timeout=20_000)
            fields = await form_of(alice, pending.approval_id)
            # The operator removes alice's line from the tokens file while her page is open.
            lines = inbox.tokens_file.read_text().splitlines()
            inbox.tokens_file.write_text("".join(f"{line}\n" for line in lines if not line.startswith("alice ")))

            answer = await alice.request.post(
                f"{inbox.url}{card_path(handle.id, pending.approval_id)}", form=fields | {"verdict": "approve"}, max_redirects=0
            )
            assert answer.status == 303 and answer.headers["location"].startswith("/signin")
            assert [p.approval_id for p in (await wait_pending(handle)).pending_approvals] == [pending.approval_id]  # not decided
            await expect(alice.get_by_label("Token")).to_be_visible(timeout=20_000)  # her open page went to the sign-in form

            # A new token signs her in again.
            alice = await sign_in(browser, inbox.url, "alice", add_token(inbox.tokens_file, "alice"))
            await card(alice, pending.approval_id).get_by_role("button", name="Approve").click()
            await expect(alice.get_by_role("status")).to_contain_text(f"{pending.approval_id} approved by alice.")
            result = await asyncio.wait_for(handle.result(), timeout=60)
        assert [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]

    async def test_a_session_ends_after_twelve_hours(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        async with inbox_for(harness, tmp_path) as inbox, chromium() as browser:
            alice = await sign_in(browser, inbox.url, "alice", inbox.tokens["alice"])
            cookie = next(c for c in await alice.context.cookies() if c["name"] == "inbox_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
            assert 12 * 3600 - 60 < cookie["expires"] - time.time() <= 12 * 3600
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
            await wait_listed(harness.client, handle)
            await expect(card(alice, pending.approval_id)).to_be_visible(timeout=20_000)
            fields = await form_of(alice, pending.approval_id)

            inbox.clock.ahead = 12 * 3600 + 1
            answer = await alice.request.post(
                f"{inbox.url}{card_path(handle.id, pending.approval_id)}", form=fields | {"verdict": "approve"}, max_redirects=0
            )
            assert answer.status == 303 and answer.headers["location"].startswith("/signin")
            await expect(alice.get_by_text("Your session has ended")).to_be_visible(timeout=20_000)
            assert [p.approval_id for p in (await wait_pending(handle)).pending_approvals] == [pending.approval_id]  # not decided
            await handle.terminate()

    async def test_a_session_survives_a_restart_and_reaches_another_replica(self, harness: Harness, tmp_path: Path) -> None:
        from playwright.async_api import expect

        async with inbox_for(harness, tmp_path) as first, chromium() as browser:
            alice = await sign_in(browser, first.url, "alice", first.tokens["alice"])
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
            await wait_listed(harness.client, handle)
            # Two more inbox processes with the same secret: one restarted, one its replica behind a balancer.
            restarted, replica = free_port(), free_port()
            async with serving(first.app(harness.client), "127.0.0.1", restarted) as again, \
                    serving(first.app(harness.client), "127.0.0.1", replica) as other:
                await alice.goto(again)
                await expect(alice.locator(".reviewer")).to_have_text("alice")
                await expect(card(alice, pending.approval_id)).to_be_visible(timeout=20_000)
                fields = await form_of(alice, pending.approval_id)
                # The form loaded from one process is posted to the other, as a load balancer may route it.
                answer = await alice.request.post(f"{other}{card_path(handle.id, pending.approval_id)}", form=fields | {"verdict": "approve"})
                assert f"{pending.approval_id} approved by alice." in await answer.text()
            result = await asyncio.wait_for(handle.result(), timeout=60)
        assert [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]


def card_path(workflow_id: str, approval_id: str) -> str:
    return f"/approvals/{urllib.parse.quote(workflow_id, safe='')}/{urllib.parse.quote(approval_id, safe='')}"


# ------------------------------------------------------------------ the command


def _get(url: str, headers: dict[str, str] | None = None, opener: urllib.request.OpenerDirector | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class InboxProcess:
    """``durable-agent inbox ARGS`` in its own process, until stopped; its output."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durable_agent", "inbox", "--port", str(self.port), *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    async def up(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (await asyncio.to_thread(_get, f"{self.url}/healthz"))[0] == 200:
                    return
            except OSError:
                pass
            assert self.process.poll() is None, self.process.communicate()[0]
            assert time.monotonic() < deadline, "the inbox did not come up"
            await asyncio.sleep(0.2)

    def stop(self) -> str:
        self.process.terminate()
        output = self.process.communicate(timeout=30)[0]
        assert self.process.returncode == 0, output
        return output


def durable_agent(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "durable_agent", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def inbox_env(harness: Harness, tmp_path: Path) -> dict[str, str]:
    """The environment of an inbox command pointed at the test server, with a key at ``tmp_path/inbox.key``."""
    env = subprocess_env(harness.state, harness.client.service_client.config.target_host)
    env.pop("AGENT_INBOX_SECRET", None)
    made = durable_agent(env, "keys", "new", "inbox", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    return env


class TestInboxCommand:
    """`durable-agent inbox` as its own process: behind an auth proxy, with tokens, and its session secret."""

    async def test_trusted_header_sign_in(self, inbox_env: dict[str, str], tmp_path: Path) -> None:
        inbox = InboxProcess(inbox_env | {"AGENT_INBOX_SECRET": "x" * 40}, "--key", str(tmp_path / "inbox.key"),
                             "--trust-header", "X-Forwarded-Email")
        try:
            await inbox.up()
            anonymous, _ = await asyncio.to_thread(_get, inbox.url)
            status, body = await asyncio.to_thread(_get, inbox.url, {"X-Forwarded-Email": "alice@example.com"})
        finally:
            output = inbox.stop()
        assert anonymous == 401
        assert status == 200 and "alice@example.com" in body and "Approvals" in body
        assert f"Reviewer inbox on {inbox.url}" in output and json.dumps("inbox") in output.replace("'", '"')
        assert "signed with the secret from AGENT_INBOX_SECRET" in output

    async def test_serving_beyond_this_machine_needs_a_shared_secret(self, inbox_env: dict[str, str], tmp_path: Path) -> None:
        refused = await asyncio.to_thread(
            durable_agent, inbox_env, "inbox", "--host", "0.0.0.0", "--port", str(free_port()), "--key", str(tmp_path / "inbox.key"),
            "--trust-header", "X-Forwarded-Email",
        )
        assert refused.returncode == 2
        assert "serving on 0.0.0.0" in refused.stderr and "AGENT_INBOX_SECRET" in refused.stderr and "replica" in refused.stderr

    async def test_a_session_survives_a_restart_of_the_command(self, harness: Harness, inbox_env: dict[str, str], tmp_path: Path) -> None:
        token = durable_agent(inbox_env, "inbox", "--new-token", "alice").stdout.strip()
        key = str(tmp_path / "inbox.key")
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        inbox = InboxProcess(inbox_env, "--key", key)
        try:
            await inbox.up()
            form = urllib.parse.urlencode({"name": "alice", "token": token, "next": "/"}).encode()
            signed_in = await asyncio.to_thread(lambda: opener.open(f"{inbox.url}/signin", data=form, timeout=30).read().decode())
            assert "Signed in as" in signed_in
        finally:
            first_output = inbox.stop()
        secret_file = harness.state / "inbox-secret"
        assert f"signed with the secret from {secret_file}" in first_output
        assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600

        again = InboxProcess(inbox_env, "--key", key)  # another port: a cookie is for the host, whatever the port
        try:
            await again.up()
            status, body = await asyncio.to_thread(_get, again.url, None, opener)
        finally:
            again.stop()
        assert status == 200 and "Signed in as <strong class=\"reviewer\">alice</strong>" in body
