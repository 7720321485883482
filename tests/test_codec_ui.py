"""The Temporal UI shows a decrypted payload through the codec server, in headless Chromium.

A dev server started with ``--ui-codec-endpoint`` (as the README says), the codec
server on another loopback port, a run whose input is encrypted. A person signs in
to the codec server with the token, then sets the UI's codec settings to include
cross-origin credentials; before signing in, the UI sees only ciphertext.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from durable_agent.codec_server import COOKIE, create_app
from durable_agent.encryption import EncryptionCodec, KeyRing, with_encryption
from tests.test_cli_and_ui_approval import CHROMIUM, CHROMIUM_ARGS
from tests.test_encryption import serving
from tests.processes import dev_server, free_ports

pytestmark = pytest.mark.slow

MARKER = "MARKER-ui-codec-7c2e"
TOKEN = "ui-test-token"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)")
async def test_ui_decodes_through_the_codec_server_only_after_sign_in(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    ring = KeyRing.parse(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
    grpc_port, ui_port = free_ports(2)
    ui_url = f"http://127.0.0.1:{ui_port}"
    async with serving(create_app(EncryptionCodec(ring), TOKEN, allowed_origins=[ui_url])) as codec_url, dev_server(
        tmp_path, ui=True, extra=["--ui-codec-endpoint", codec_url], data_converter=with_encryption(pydantic_data_converter, ring),
        ports=(grpc_port, ui_port),
    ) as server:
        client = server.client
        # No worker needed: the run's input is what the UI shows.
        handle = await client.start_workflow("AgentWorkflow", {"task": f"Refund {MARKER}"}, id="codec-ui-run", task_queue="nobody-polls")
        run_url = f"{ui_url}/namespaces/default/workflows/{handle.id}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                # Not signed in: the codec server answers 401 and the UI shows no plaintext.
                async with page.expect_response(lambda r: "/decode" in r.url and r.request.method == "POST") as refused:
                    await page.goto(run_url)
                assert (await refused.value).status == 401
                await expect(page.get_by_text("Codec Server could not connect").filter(visible=True).first).to_be_visible()
                assert MARKER not in await page.inner_text("body")

                # Sign in to the codec server, as a reviewer would, once.
                await page.goto(f"{codec_url}/login")
                await page.get_by_label("Codec token").fill(TOKEN)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.get_by_text("Signed in.")).to_be_visible()
                # The browser holds a signed session that expires, never the token.
                cookie = next(c for c in await page.context.cookies(codec_url) if c["name"] == COOKIE)
                assert TOKEN not in cookie["value"] and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
                assert 0 < cookie["expires"] - time.time() <= 12 * 3600

                # The UI's codec settings: this browser's endpoint, with cross-origin credentials.
                await page.goto(run_url)
                # The codec button in the top bar (its test id follows its state: configured, error...).
                settings = page.locator("[data-testid^=data-encoder-status]").first
                await settings.click()
                dialog = page.locator("dialog[open]")
                if not await dialog.count():  # a click the page swallowed while it was still settling
                    await settings.click()
                await dialog.get_by_test_id("use-local-endpoint-input").check()
                await dialog.get_by_role("textbox").fill(codec_url)
                await dialog.get_by_text("Include cross-origin credentials").click()
                await dialog.get_by_role("button", name="Apply").click()
                await page.goto(run_url)
                await expect(page.get_by_text(f"Refund {MARKER}")).to_be_visible(timeout=20_000)
                await page.screenshot(path=str(tmp_path / "ui-decoded.png"), full_page=True)
            except BaseException:
                await page.screenshot(path=str(tmp_path / "ui-codec-failure.png"), full_page=True)
                raise
            finally:
                await browser.close()
        await handle.terminate()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def login(url: str, token: str, headers: dict[str, str] | None = None) -> SimpleCookie:
    """POST the token to /login, as the form does; the cookie it sets."""
    request = urllib.request.Request(f"{url}/login", data=urllib.parse.urlencode({"token": token}).encode(), headers=headers or {})
    try:
        urllib.request.build_opener(NoRedirect).open(request, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 303, exc.code
        return SimpleCookie(exc.headers["set-cookie"])
    raise AssertionError("/login did not redirect")


def decode(url: str, body: bytes, cookie: str) -> int:
    request = urllib.request.Request(f"{url}/decode", data=body, headers={"Content-Type": "application/json", "Cookie": f"{COOKIE}={cookie}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback test server
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class TestCodecSession:
    """Signing in at /login gives a signed, expiring session cookie, Secure over HTTPS; never the token itself."""

    async def test_the_cookie_is_a_signed_session_that_expires(self) -> None:
        now = [time.time()]
        ring = KeyRing.parse(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
        sealed = await EncryptionCodec(ring).encode([Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(MARKER).encode())])
        body = json_format.MessageToJson(Payloads(payloads=sealed)).encode()
        async with serving(create_app(EncryptionCodec(ring), TOKEN, clock=lambda: now[0])) as url:
            cookie = (await asyncio.to_thread(login, url, TOKEN))[COOKIE]
            assert TOKEN not in cookie.value
            assert cookie["httponly"] and cookie["samesite"].lower() == "lax" and not cookie["secure"]
            assert cookie["max-age"] == str(12 * 3600)
            assert await asyncio.to_thread(decode, url, body, cookie.value) == 200
            # The token itself, or a session altered by a byte, is no session.
            assert await asyncio.to_thread(decode, url, body, TOKEN) == 401
            assert await asyncio.to_thread(decode, url, body, cookie.value[:-2] + ("A" if cookie.value[-2] != "A" else "B") + cookie.value[-1]) == 401
            now[0] += 12 * 3600 + 1
            assert await asyncio.to_thread(decode, url, body, cookie.value) == 401

            # Behind a TLS proxy (X-Forwarded-Proto from a trusted address): Secure, and usable by a UI on another site.
            secure = (await asyncio.to_thread(login, url, TOKEN, {"X-Forwarded-Proto": "https"}))[COOKIE]
            assert secure["secure"] and secure["samesite"].lower() == "none" and secure["httponly"]

        # Another codec server with the same token accepts the session (replicas, restarts); another token does not.
        async with serving(create_app(EncryptionCodec(ring), TOKEN, clock=lambda: now[0])) as again:
            assert await asyncio.to_thread(decode, again, body, secure.value) == 200
        async with serving(create_app(EncryptionCodec(ring), "another-token", clock=lambda: now[0])) as rotated:
            assert await asyncio.to_thread(decode, rotated, body, secure.value) == 401
