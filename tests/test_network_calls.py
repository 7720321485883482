"""Over a real network every request is a round trip: a run makes only the requests it needs.

A 10-step run on Claude (the fake Messages API, on a real Temporal server) opens
one connection for all its model calls and, with its prompt far from the context
window, asks the token-counting endpoint nothing.
"""

from __future__ import annotations

from tests.conftest import Harness, make_config
from tests.fake_anthropic import FakeAnthropic, text, tool_use

MODEL = "claude-haiku-4-5"


class TestModelRequests:
    """One connection per worker; token counts only near the window."""

    async def test_ten_steps_one_connection_no_counts(self, harness: Harness, fake_api: FakeAnthropic) -> None:
        fake_api.script(*[tool_use("echo", {"text": f"hop {n}"}) for n in range(9)], text("Done after nine hops."))
        config = make_config({"claude": {"model": MODEL, "tools": ["echo"], "autonomy": "autonomous"}})
        async with harness.worker(config):
            handle = await harness.start({"task": "Echo nine times, then say done."})
            result = await handle.result()
        assert result.status == "success" and result.steps == 10
        assert len(fake_api.requests) == 10
        assert fake_api.count_requests == []
        assert fake_api.connections == 1

    async def test_near_the_window_the_prompt_is_counted(self, harness: Harness, fake_api: FakeAnthropic) -> None:
        fake_api.script(text("Read it all."))
        profile = {"model": MODEL, "tools": [], "autonomy": "autonomous", "max_tokens": 256, "context_window_tokens": 4096}
        async with harness.worker(make_config({"claude": profile})):
            handle = await harness.start({"task": "Please read this carefully. " * 170})
            result = await handle.result()
        assert result.status == "success"
        assert len(fake_api.count_requests) == 1 and len(fake_api.requests) == 1
