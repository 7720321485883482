"""The conversation, the thinker (stop reasons, compaction) and tool calls, without a server.

The model and the tools are scripted activities of a stand-in workflow
(:mod:`tests.workflow_host`): what each component asks for, and in what order, is
what a run on a server would record.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ActivityCancellationType

from durable_agent import context, contracts, inputs, pricing
from durable_agent.ratelimit import AcquireResult
from durable_agent.schemas import Autonomy, CompactOutput, ThinkOutput, ToolCall, ToolCallOutput, Usage
from durable_agent.workflows.approval_desk import ApprovalDesk
from durable_agent.workflows.conversation import Conversation
from durable_agent.workflows.delegation import Delegation
from durable_agent.workflows.progress import Progress
from durable_agent.workflows.records import RecordBook
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.spend import Spend
from durable_agent.workflows.thinking import Thinker
from durable_agent.workflows.tool_calls import ToolCalls
from tests.component_kit import settings
from tests.workflow_host import START, FakeHost, activity_failure


def reply(step_text: str = "", *calls: ToolCall, stop: str = "end_turn", **fields: Any) -> ThinkOutput:
    return ThinkOutput(head=f"sha256:{step_text or 'head'}", text=step_text, tool_calls=list(calls), stop_reason=stop, model="claude-haiku-4-5",
                       usage=Usage(input_tokens=100, output_tokens=20), **fields)


def scripted(*replies: ThinkOutput) -> Any:
    queue = list(replies)

    def think(_: Any) -> ThinkOutput:
        assert queue, "the script ran out"
        return queue.pop(0)

    return think


LOOKUP = ToolCall(id="toolu_1", name="lookup_order", args={"order_id": "ord-789"})


class TestConversation:
    """What each model call is told: the task once, then what the tools said."""

    async def test_the_task_first_then_tool_results(self) -> None:
        host = FakeHost({contracts.ACTIVITY_THINK: scripted(reply("", LOOKUP, stop="tool_use"), reply("Done."))})
        conversation = Conversation(host, settings())
        await conversation.think(1)
        conversation.add_result(LOOKUP.id, ToolCallOutput(status="ok", ref="sha256:r", preview="{...}", chars=1200))
        conversation.tell("toolu_2", "REFUSED: not allowed.")
        await conversation.think(2)
        first, second = (request for _, request, _ in host.calls)
        assert (first.user_text, first.tool_results, first.head) == ("Refund order ord-789", [], None)
        assert second.user_text is None and second.head == "sha256:head"
        assert [(p.ref, p.text, p.is_error) for p in second.tool_results] == [("sha256:r", None, False), (None, "REFUSED: not allowed.", True)]
        assert conversation.carry()["pending_results"] == []

    async def test_a_large_task_goes_by_reference(self) -> None:
        task = "x" * (inputs.TASK_INLINE_BYTES + 1)
        host = FakeHost({contracts.ACTIVITY_STORE_TASK: "sha256:task", contracts.ACTIVITY_THINK: scripted(reply("ok"))})
        conversation = Conversation(host, settings(task=task))
        await conversation.store_large_task()
        await conversation.think(1)
        request = host.calls[-1][1]
        assert (conversation.task_ref, request.user_ref, request.user_text) == ("sha256:task", "sha256:task", None)

    async def test_a_store_that_refuses_the_task_fails_the_run_naming_it(self) -> None:
        def refuse(_: Any) -> str:
            raise activity_failure("disk full", contracts.ACTIVITY_STORE_TASK)

        conversation = Conversation(FakeHost({contracts.ACTIVITY_STORE_TASK: refuse}), settings(task="x" * (inputs.TASK_INLINE_BYTES + 1)))
        with pytest.raises(ApplicationError, match="could not be put into the content store") as caught:
            await conversation.store_large_task()
        assert caught.value.type == "TaskNotStored" and caught.value.non_retryable

    async def test_the_next_call_is_estimated_from_the_prompt_it_resends(self) -> None:
        host = FakeHost({contracts.ACTIVITY_THINK: scripted(reply("", LOOKUP, stop="tool_use", prompt_tokens=2000))})
        run = settings()
        conversation = Conversation(host, run)
        price = pricing.find_price(run.profile.model, run.profile.prices)
        assert price is not None
        first = conversation.estimate_next_call(price)
        await conversation.think(1)
        host.clock += timedelta(seconds=10)  # the cache is warm
        second = conversation.estimate_next_call(price)
        expected = pricing.estimate_next_call_usd(price, prompt_tokens=2020, new_input_chars=0, max_tokens=1024, cached_tokens=0, cache_warm=True,
                                                  prompt_limit=pricing_limit(run))
        assert first > 0 and second == pytest.approx(expected)


def pricing_limit(run: RunSettings) -> int | None:
    """The prompt limit the estimate caps at, for the run's model."""
    window = context.known_window(run.profile.model, run.profile.context_window_tokens)
    return context.prompt_limit(window, run.profile.max_tokens) if window is not None else None


class Thinking:
    """A thinker wired as the workflow wires it."""

    def __init__(self, *replies: ThinkOutput, compact: CompactOutput | None = None, unpatched: tuple[str, ...] = ()) -> None:
        self.host = FakeHost({contracts.ACTIVITY_THINK: scripted(*replies), contracts.ACTIVITY_COMPACT: compact}, unpatched=unpatched)
        self.run = settings()
        self.progress = Progress()
        self.progress.phase.move("thinking")
        self.spend = Spend(self.host, self.run)
        self.book = RecordBook(self.host, self.run)
        self.shown: list[str] = []
        self.conversation = Conversation(self.host, self.run)
        self.thinker = Thinker(self.host, self.run, self.conversation, self.spend, self.book, self.progress.phase, self.shown.append)


class TestStopReasons:
    """A reply that cannot be acted on as it came is never acted on; the step thinks again."""

    async def test_a_plain_reply(self) -> None:
        t = Thinking(reply("Done.", request_id="req_1"))
        got = await t.thinker.think_through_stops(0)
        assert (got.out.text, got.move, got.warnings, got.request_ids) == ("Done.", None, [], ["req_1"])

    async def test_a_call_cut_by_max_tokens_is_retried_larger(self) -> None:
        cut = reply("", stop="max_tokens", cut_tool_calls=["issue_refund"], truncated=True, request_id="req_1")
        t = Thinking(cut, reply("", LOOKUP, stop="tool_use", request_id="req_2"))
        got = await t.thinker.think_through_stops(0)
        assert got.out.tool_calls == [LOOKUP] and got.out.usage.input_tokens == 200 and got.request_ids == ["req_1", "req_2"]
        assert got.move is not None and got.move.kind == "act"
        assert got.warnings[0].startswith("TRUNCATED: the reply hit max_tokens=1024 while writing a call to issue_refund")
        assert [request.max_tokens for _, request, _ in t.host.calls] == [1024, 4096]

    async def test_a_refusal_ends_the_step(self) -> None:
        t = Thinking(reply("I can't.", stop="refusal"))
        got = await t.thinker.think_through_stops(0)
        assert got.move is not None and got.move.kind == "refused"

    async def test_runs_before_stop_reasons_take_the_reply_as_it_came(self) -> None:
        t = Thinking(reply("half", stop="max_tokens"), unpatched=("stop-reasons",))
        got = await t.thinker.think_through_stops(0)
        assert (got.out.text, got.move) == ("half", None)

    async def test_a_full_window_is_compacted_as_a_recorded_step(self) -> None:
        compacted = CompactOutput(head="sha256:small", tokens_before=190_000, tokens_after=40_000, tiers=["elide"], elided_results=12, fits=True,
                                  usage=Usage(input_tokens=1000, output_tokens=100), request_id="req_c", duration_ms=900)
        t = Thinking(reply("", over_window=True, prompt_tokens=190_000), reply("Done."), compact=compacted)
        t.progress.next_step()  # step 1 done: this is step 2 thinking
        got = await t.thinker.think_through_stops(1)
        assert got.out.text == "Done." and got.out.usage.input_tokens == 200
        assert t.host.names() == [contracts.ACTIVITY_THINK, contracts.ACTIVITY_COMPACT, contracts.ACTIVITY_THINK]
        assert t.host.calls[-1][1].head == "sha256:small"
        assert t.shown == ["compacting the conversation (prompt of 190000 tokens over the limit)"]
        assert t.progress.phase.phase == "thinking"
        [record] = t.book.query()
        assert (record.step, record.record_id, record.action.type, record.action.args) == (2, "wf-1/first-run/2/0", "compaction", {"tiers": ["elide"]})
        assert record.observation["status"] == "compacted" and record.observation["request_ids"] == ["req_c"]
        assert record.cost.estimated_cost == t.spend.total_cost > 0


class Acting:
    """Tool calls wired as the workflow wires them."""

    def __init__(self, activities: dict[str, Any], run: RunSettings | None = None) -> None:
        self.host = FakeHost({contracts.ACTIVITY_NOTIFY_REVIEWER: None, **activities})
        self.run = run or settings()
        self.progress = Progress()
        self.progress.phase.move("thinking")
        self.progress.next_step()
        self.shown: list[str] = []
        self.warnings: list[str] = []
        self.spend = Spend(self.host, self.run)
        self.conversation = Conversation(self.host, self.run)
        self.desk = ApprovalDesk(self.host, self.run, self.progress.phase, self.warnings.append, lambda n: [], self.shown.append)
        self.tools = ToolCalls(
            self.host, self.run, self.progress, self.desk, self.spend, self.conversation, self.shown.append,
            Delegation(self.host, self.run, self.warnings.append),
        )

    def told(self) -> list[str | None]:
        """What the model will read of the workflow's own answers."""
        return [part.text for part in self.conversation.carry()["pending_results"]]


OK = ToolCallOutput(status="ok", ref="sha256:r", preview="p" * 500, duration_ms=30, chars=500)


class TestToolCalls:
    """Each call goes through every check that may hold or refuse it before the tool runs."""

    async def test_a_tool_that_runs(self) -> None:
        a = Acting({contracts.ACTIVITY_RUN_TOOL: OK})
        observation = await a.tools.act(LOOKUP, 0, [LOOKUP])
        [(name, request, options)] = a.host.calls
        assert (name, request.idempotency_key, request.step) == (contracts.ACTIVITY_RUN_TOOL, "wf-1/first-run/1/0/toolu_1", 1)
        assert options["cancellation_type"] == ActivityCancellationType.TRY_CANCEL  # read-only: not waited for
        assert (observation.status, len(observation.result_preview or ""), observation.result_ref) == ("ok", 300, "sha256:r")
        assert (a.progress.tools_used, a.progress.phase.phase, a.shown) == (["lookup_order"], "acting", ["step 1: calling lookup_order"])

    async def test_unknown_and_refused_calls_never_run(self) -> None:
        a = Acting({}, settings())
        a.run.autonomy = Autonomy.READ_ONLY
        unknown = await a.tools.act(ToolCall(id="t1", name="rm_rf", args={}), 0, [])
        refused = await a.tools.act(ToolCall(id="t2", name="cancel_order", args={"order_id": "ord-1"}), 1, [])
        assert (unknown.status, refused.status) == ("unknown_tool", "refused")
        assert a.host.calls == [] and a.told()[0].startswith("There is no tool named 'rm_rf'")  # type: ignore[union-attr]

    async def test_a_rejected_call_tells_the_model_who_and_why(self) -> None:
        a = Acting({})
        cancel = ToolCall(id="t2", name="cancel_order", args={"order_id": "ord-1"})

        def reject() -> None:
            [pending] = a.desk.pending()
            a.desk.decide(pending.approval_id, False, "bob", "keep it")

        asyncio.get_running_loop().call_soon(reject)
        observation = await a.tools.act(cancel, 0, [cancel])
        assert observation.status == "rejected" and observation.approval_id
        assert a.told() == ["REJECTED by bob: keep it. The action was not executed."]

    async def test_a_spent_budget_runs_nothing(self) -> None:
        a = Acting({})
        a.spend.set_budget(0.0)
        a.spend.charge_step(Usage(input_tokens=1000), a.spend.price())
        observation = await a.tools.act(LOOKUP, 0, [LOOKUP])
        assert observation.status == "budget_exceeded" and a.host.calls == []

    async def test_a_rate_limited_tool_waits_for_its_slot(self) -> None:
        slot = AcquireResult(granted=True, go_at=START + timedelta(seconds=3), wait_seconds=3.0)
        a = Acting({contracts.ACTIVITY_RATE_LIMIT_ACQUIRE: slot, contracts.ACTIVITY_RUN_TOOL: OK})
        limited = ToolCall(id="t3", name="limited", args={})
        observation = await a.tools.act(limited, 0, [limited])
        assert a.host.slept == [timedelta(seconds=3)]
        assert observation.rate_limit is not None and (observation.rate_limit.slot, observation.rate_limit.wait_ms) == ("2025-06-01T12:00:03+00:00", 3000)
        assert a.shown[0].startswith("**Waiting for the rate limit** of limited (2/min, shared by all runs)")

    async def test_an_unreachable_limiter_or_a_broken_tool_is_unavailable(self) -> None:
        def down(_: Any) -> Any:
            raise activity_failure("gone")

        a = Acting({contracts.ACTIVITY_RATE_LIMIT_ACQUIRE: down, contracts.ACTIVITY_RUN_TOOL: down})
        limited = await a.tools.act(ToolCall(id="t3", name="limited", args={}), 0, [])
        broken = await a.tools.act(LOOKUP, 1, [])
        assert (limited.status, broken.status) == ("unavailable", "unavailable")
        assert "rate limiter could not be reached" in (limited.message or "") and "Do not call it again" in (broken.message or "")

    async def test_a_world_changing_tool_is_waited_for_when_the_run_is_cancelled(self) -> None:
        refund = ToolCall(id="t4", name="issue_refund", args={"order_id": "ord-789", "amount": 20, "currency": "USD"})
        a = Acting({contracts.ACTIVITY_RUN_TOOL: OK})
        a.host.cancelled = True
        observation = await a.tools.act(refund, 0, [refund])
        assert a.host.calls[0][2]["cancellation_type"] == ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        assert observation.run_cancelled
