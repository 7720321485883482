"""Long conversations: the context window, compaction in tiers, ``read_result``.

The model is :mod:`tests.fake_anthropic` enforcing a window as the API does (a
400 "prompt is too long" above it, counted as its token-counting endpoint counts)
and remembering the largest prompt it was sent; the run is real, on Temporal.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from durable_agent import context, results
from durable_agent.activities import AgentActivities
from durable_agent.cli.worker import create_worker
from durable_agent.schemas import AgentResult, CompactInput, DecisionRecord, ToolCall, ToolCallInput
from durable_agent.store import ContentStore
from tests.conftest import Harness, make_config
from tests.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, error, text, tool_use
from tests.tools_for_tests import report_text

MODEL = "claude-haiku-4-5"
REF = re.compile(r"sha256:[0-9a-f]{64}")


def _sink(state: Path, workflow_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (state / "trace.jsonl").read_text().splitlines()]
    return [line for line in lines if line["session_id"] == workflow_id]


def _claude(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in fake.environ().items():
        monkeypatch.setenv(name, value)


def _config(**profile: Any) -> Any:
    base = {"model": MODEL, "tools": ["report"], "autonomy": "autonomous", "max_tokens": 1024}
    return make_config({"long": {**base, **profile}})


class LongJob:
    """The fake model's side of a long job: ``steps`` reports, then read one back, then answer."""

    def __init__(self, steps: int, size: int = 8192) -> None:
        self.steps, self.size = steps, size
        self.turns = 0
        self.read_ref: str | None = None
        self.summaries = 0
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Reply:
        body_text = json.dumps(request.body["messages"])
        if not request.body.get("tools"):  # compaction's summary request: plain text, no tools
            with self._lock:
                self.summaries += 1
            refs = REF.findall(body_text)
            return text(f"Reports 0 onwards were read; they are kept. Latest kept result: {refs[-1] if refs else 'none'}.")
        with self._lock:
            turn, self.turns = self.turns, self.turns + 1
        if turn < self.steps:
            return tool_use("report", {"n": turn, "size": self.size}, say=f"Reading report {turn}.")
        if turn == self.steps:
            self.read_ref = REF.findall(body_text)[0]  # the oldest result still named in the conversation
            return tool_use("read_result", {"ref": self.read_ref, "offset": 100, "length": 200})
        return text(f"Read {self.steps} reports.")


class TestPlanning:
    """The window arithmetic and the compaction plan, without a server."""

    def test_window_table_and_override(self) -> None:
        assert context.model_limits("claude-sonnet-4-5-20250929") == context.ModelLimits(200_000, 64_000)
        assert context.model_limits("claude-opus-4-8").context_window == 1_000_000
        assert context.model_limits("claude-unknown-9") == context.DEFAULT_LIMITS
        assert context.model_limits(MODEL, 32_000).context_window == 32_000
        assert context.prompt_limit(32_000, 1024) == 32_000 - 1024 - 640

    def test_larger_allowance_reaches_the_ceiling(self) -> None:
        assert [context.larger_allowance(n, 64_000) for n in (1024, 4096, 16_384, 64_000)] == [4096, 16_384, 64_000, None]

    def _conversation(self, turns: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "the task"}]}]
        for i in range(turns):
            messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "report", "input": {"n": i}}]})
            block = {"type": "tool_result", "tool_use_id": f"t{i}", "content": "y" * 1000, "_ref": f"sha256:{i:064d}"}
            messages.append({"role": "user", "content": [block]})
        return messages

    def test_elision_keeps_the_latest_turns_and_is_stable(self) -> None:
        messages = self._conversation(6)
        once, elided = context.elide_old_results(messages, keep_last=4)
        assert elided == 4
        stubs = [b["content"] for m in once for b in m["content"] if b.get("_elided")]
        assert stubs[0] == context.elision_stub("sha256:" + "0" * 64, 1000)
        assert once[-4:] == messages[-4:]
        assert context.cache_points(once) == [len(once) - 5]
        # More turns later: what was elided stays byte for byte the same (the cached prefix holds).
        more = [*once, *self._conversation(8)[len(once):]]
        twice, _ = context.elide_old_results(more, keep_last=4)
        assert twice[: len(once) - 4] == once[: len(once) - 4]
        assert context.wire_messages(twice)[1:] == [
            {k: v for k, v in m.items() if not k.startswith("_")} | {"content": [{k: v for k, v in b.items() if not k.startswith("_")} for b in m["content"]]}
            for m in twice[1:]
        ]

    def test_summary_cut_starts_the_kept_tail_at_an_assistant_turn(self) -> None:
        messages = self._conversation(6)
        cut = context.summary_cut(messages, keep_last=4)
        assert cut is not None and messages[cut]["role"] == "assistant"
        new = context.summarised_conversation("the task", "what happened", messages[cut:], upto_step=9)
        assert [m["role"] for m in new[:2]] == ["user", "assistant"]
        assert "what happened" in new[0]["content"][1]["text"]

    def test_transcript_is_bounded(self) -> None:
        transcript = context.render_transcript(self._conversation(50), max_chars=3000)
        assert len(transcript) <= 3000 and "earlier steps left out" in transcript


@pytest.mark.slow
class TestLongRunWithClaude:
    """A 300-step run of 8 KB tool outputs in a 32k-token window."""

    async def test_three_hundred_steps_fit_a_small_window(self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        window, steps = 32_000, 300
        with FakeAnthropic(context_window=window) as fake:
            _claude(fake, monkeypatch)
            job = LongJob(steps)
            fake.always(job)
            config = _config(context_window_tokens=window, continue_as_new_every=50)
            # A cached worker: 300 steps replayed from the start at every task would take minutes;
            # the replay of compaction is covered by the recorded history in tests/histories/.
            worker = create_worker(harness.client, config, task_queue=harness.task_queue, store=harness.store, max_cached_workflows=10)
            async with worker:
                handle = await harness.start({"task": "Read every report, then check one again.", "max_steps": steps + 5})
                result: AgentResult = await handle.result()
            assert result.status == "success", result.error
            assert result.steps == steps + 2
            assert result.tools_used[-1] == "read_result"
            # Never an over-long prompt: the largest one left room for the answer.
            assert 0 < fake.largest_prompt_tokens <= context.prompt_limit(window, 1024)
            records = _sink(harness.state, handle.id)
            assert sum(1 for r in records if r["action"]["tool"] == "report") == steps
            assert len({r["record_id"] for r in records}) == len(records)  # compaction records have ids of their own
            compactions = [r for r in records if r["action"]["type"] == "compaction"]
            assert len(compactions) >= 10
            assert all(r["observation"]["tokens_after"] < r["observation"]["tokens_before"] for r in compactions)
            tiers = {tier for r in compactions for tier in r["action"]["args"]["tiers"]}
            assert tiers == {"elide", "summary"} and job.summaries >= 1
            # The summaries are paid for, in the records and in the run's total.
            assert sum(r["cost"]["output_tokens"] for r in compactions) > 0
            assert result.total_cost == pytest.approx(sum(r["cost"]["estimated_cost"] for r in records), rel=1e-6)
            # The agent read an elided result back: the real text of that report.
            last = fake.requests[-1].body["messages"][-1]["content"][0]["content"]
            n = int(re.search(r"\[report result sha256:[0-9a-f]+, characters 100-300 of 8192\]\n", last) is not None)
            assert n == 1
            piece = last.split("\n", 1)[1]
            assert any(report_text(i, 8192)[100:300] == piece for i in range(steps))


class TestOverflowReportedByTheApi:
    """The API says the window is full: compact and retry once, never loop."""

    async def test_prompt_too_long_then_recovered(self, harness: Harness, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
        _claude(fake_anthropic, monkeypatch)
        fake_anthropic.script(error(400, "prompt is too long: 210000 tokens > 200000 maximum"), text("done"))
        async with harness.worker(_config()):
            handle = await harness.start({"task": "x"})
            result = await handle.result()
            trace = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "success" and result.answer == "done"
        assert [r.action.type for r in trace] == ["compaction", "final_answer"]
        assert len(fake_anthropic.requests) == 2

    async def test_window_exceeded_twice_fails_after_one_compaction(
        self, harness: Harness, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _claude(fake_anthropic, monkeypatch)
        full = text("partial", stop_reason="model_context_window_exceeded")
        fake_anthropic.script(full, full)
        async with harness.worker(_config()):
            handle = await harness.start({"task": "x"})
            with pytest.raises(WorkflowFailureError) as info:
                await handle.result()
            assert "still does not fit" in str(info.value.cause) or "CONTEXT_WINDOW" in str(info.value.cause)
            trace = await handle.query("trace", result_type=list[DecisionRecord])
        assert [r.action.type for r in trace] == ["compaction", "final_answer"]
        assert trace[-1].observation["status"] == "failed"
        assert len(fake_anthropic.requests) == 2  # one retry, no loop


class TestCompactionActivity:
    """The compaction activity on its own: tiers, determinism, and the offline model's summary."""

    async def _conversation(self, store: ContentStore, turns: int, size: int) -> str:
        head = await store.append(None, {"role": "user", "content": [{"type": "text", "text": "read the reports"}]})
        for n in range(turns):
            call = {"type": "tool_use", "id": f"t{n}", "name": "report", "input": {"n": n}}
            head = await store.append(head, {"role": "assistant", "content": [call]})
            ref = await store.put({"tool": "report", "output": report_text(n, size)})
            result = {"type": "tool_result", "tool_use_id": f"t{n}", "content": report_text(n, size), "_ref": ref}
            head = await store.append(head, {"role": "user", "content": [result]})
        return head

    async def test_offline_model_compacts_deterministically(self, tmp_path: Path) -> None:
        store = ContentStore(tmp_path / "content")
        activities = AgentActivities(make_config(), store)
        prompt_ref = await store.put({"system": "s", "tools": []})
        head = await self._conversation(store, turns=30, size=3000)
        request = CompactInput(session_id="s", agent="a", model="offline", prompt_ref=prompt_ref, head=head,
                               max_tokens=1024, context_window=8192, step=30)
        first = await ActivityEnvironment().run(activities.compact, request)
        again = await ActivityEnvironment().run(activities.compact, request)
        assert first.tiers == ["elide", "summary"] and first.fits
        assert first.tokens_after <= context.compaction_target(context.prompt_limit(8192, 1024)) < first.tokens_before
        assert first.head == again.head  # same conversation, same summary, same content-addressed head
        messages = await store.messages(first.head)
        assert "offline model" in messages[0]["content"][1]["text"]
        assert messages[-1]["content"][0]["content"] == report_text(29, 3000)  # the latest result, verbatim

    async def test_read_result_pages_through_a_stored_result(self, tmp_path: Path) -> None:
        store = ContentStore(tmp_path / "content")
        activities = AgentActivities(make_config(), store)
        ref = await store.put(results.tool_result("report", report_text(7, 8192), results.RunChain("wf-1", "run-1")))
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, workflow_id="wf-1", workflow_run_id="run-1")

        def read(args: dict[str, Any]) -> ToolCallInput:
            call = ToolCall(id="t", name="read_result", args=args)
            return ToolCallInput(session_id="wf-1", agent="long", call=call, idempotency_key="wf-1/run-1/9/0/t", step=9)

        out = await env.run(activities.run_tool, read({"ref": ref, "offset": 8000, "length": 500}))
        text_ = (await store.get(out.ref))["output"]
        assert out.status == "ok" and text_.endswith(report_text(7, 8192)[8000:])
        assert "characters 8000-8192 of 8192" in text_
        refused = await env.run(activities.run_tool, read({"ref": await store.put({"x": 1})}))
        assert refused.status == "error" and "no result of this run is kept" in (refused.error or "")
