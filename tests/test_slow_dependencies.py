"""A slow dependency costs time, never the run: every activity heartbeats for its whole body.

The ``think`` and ``compact`` activities run under a 15 s heartbeat timeout (a
killed worker is noticed that soon). Here the fake Messages API is slower than that
at each of their waits (the token count, the answer, compaction's summary, streamed
or not), on a real Temporal server: the run waits, makes each request once, and
succeeds on the first attempt of each activity.
"""

from __future__ import annotations

import threading

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History

from durable_agent import contracts
from durable_agent.workflows.host import DEFAULT_HEARTBEAT_TIMEOUT
from tests.conftest import Harness, make_config
from tests.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, text, tool_use
from tests.test_failures import attempts, events

MODEL = "claude-haiku-4-5"
#: Longer than the heartbeat timeout of the model activities, as in the security review's reproduction (issue 17).
SLOW_COUNT_SECONDS = 20.0
SLOW_ANSWER_SECONDS = 25.0


def no_timeouts(history: History) -> bool:
    return events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT) == []


class TestSlowModelApi:
    """The model's endpoints answer slower than the heartbeat timeout: the run waits for them."""

    async def test_slow_token_count_and_slow_answer(self, harness: Harness, fake_api: FakeAnthropic) -> None:
        assert SLOW_COUNT_SECONDS > DEFAULT_HEARTBEAT_TIMEOUT.total_seconds()
        fake_api.count_delay = SLOW_COUNT_SECONDS
        fake_api.script(text("All done.", delay=SLOW_ANSWER_SECONDS))
        # A prompt near a small window, so the API is asked to count it (far from it, nothing is counted).
        config = make_config({"claude": {"model": MODEL, "tools": [], "autonomy": "autonomous", "max_tokens": 256, "context_window_tokens": 4096}})
        async with harness.worker(config):
            handle = await harness.start({"task": "Please read this carefully. " * 170})
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "success" and result.answer == "All done."
        # Counted once and asked once: no attempt was given up on, nothing was paid for twice.
        assert len(fake_api.count_requests) == 1 and len(fake_api.requests) == 1
        assert attempts(history, contracts.ACTIVITY_THINK) == [1]
        assert no_timeouts(history)


class Chatty:
    """The model's side: long reasoning with each small tool call until the run compacts, then an answer.

    Compaction's summary request (plain text, no tools) is answered after ``summary_delay`` seconds.
    """

    def __init__(self, summary_delay: float) -> None:
        self.summary_delay = summary_delay
        self.summaries = 0
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if not request.body.get("tools"):
                self.summaries += 1
                return text("The agent echoed a few words while thinking aloud at length.", delay=self.summary_delay)
            if self.summaries:
                return text("Done after compaction.")
        return tool_use("echo", {"text": "x"}, say="Thinking aloud. " * 150)


class TestSlowSummary:
    """Compaction's summary call is slower than the heartbeat timeout: the run waits for it."""

    @pytest.mark.parametrize(("stream", "delay"), [("0", SLOW_ANSWER_SECONDS), ("1", SLOW_COUNT_SECONDS)], ids=["plain", "streamed"])
    async def test_slow_summary(self, harness: Harness, fake_api: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, stream: str, delay: float) -> None:
        # Streamed, the delay is before the first byte: no event arrives to heartbeat on.
        monkeypatch.setenv("DURABLE_AGENT_STREAM", stream)
        model = Chatty(summary_delay=delay)
        fake_api.always(model)
        config = make_config({
            "chatty": {"model": MODEL, "tools": ["echo"], "autonomy": "autonomous", "max_tokens": 1024, "context_window_tokens": 4096},
        })
        async with harness.worker(config):
            handle = await harness.start({"task": "Think aloud, echo, then answer.", "max_steps": 12})
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "success" and result.answer == "Done after compaction.", result
        assert model.summaries == 1
        assert attempts(history, contracts.ACTIVITY_COMPACT) == [1]
        assert no_timeouts(history)
