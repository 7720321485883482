"""A long run with a real-sized context window: what compaction costs and what it saves.

    python bench/long_context.py [--steps 500] [--tool-kb 8] [--window 200000] [--model claude-haiku-4-5]

The agent calls a tool ``--steps`` times (``--tool-kb`` KB of output each) and
answers, talking to the fake Messages API of the tests (``tests/fake_anthropic.py``)
over HTTP through the real ``anthropic`` client; the fake enforces the window as
the API does, counts tokens as its counting endpoint does and imitates prompt
caching (five-minute entries, breakpoints, a 20-block lookback). Prints, per step:
tokens sent, cost, cache-read share; the compactions; history bytes per step; and,
for the same run without compaction (every step resends the whole conversation,
as before), the step at which the prompt no longer fits. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import bench_environment  # noqa: E402  (also puts the project on sys.path)

from durable_agent import context  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402
from durable_agent.pricing import DEFAULT_PRICES, cost_usd  # noqa: E402
from durable_agent.schemas import AgentResult, Usage  # noqa: E402
from durable_agent.store import ContentStore  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, text, tool_use  # noqa: E402
from tests.fake_tokens import count_tokens  # noqa: E402
from tests.tools_for_tests import report_text  # noqa: E402


def scripted_job(steps: int, size: int):  # noqa: ANN201 - a closure the fake calls
    turns = {"n": 0}

    def reply(request: RecordedRequest) -> Reply:
        if not request.body.get("tools"):
            return text("Summary: reports read so far were routine; nothing is pending.")
        turn = turns["n"]
        turns["n"] += 1
        if turn < steps:
            return tool_use("report", {"n": turn, "size": size}, say=f"Reading report {turn}.")
        return text(f"Read {steps} reports.")

    return reply


def overflow_without_compaction(steps: int, size: int, window: int, max_tokens: int, system_and_tools: dict) -> int | None:
    """The step whose prompt no longer fits when the whole conversation is resent every time."""
    messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": "Read every report."}]}]
    for step in range(1, steps + 1):
        body = {**system_and_tools, "messages": messages}
        if count_tokens(body) > window - max_tokens:
            return step
        call = {"type": "tool_use", "id": f"t{step}", "name": "report", "input": {"n": step, "size": size}}
        messages = [*messages, {"role": "assistant", "content": [{"type": "text", "text": f"Reading report {step}."}, call]}]
        result = {"type": "tool_result", "tool_use_id": f"t{step}", "content": report_text(step, size)}
        messages = [*messages, {"role": "user", "content": [result]}]
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--tool-kb", type=float, default=8.0)
    parser.add_argument("--window", type=int, default=200_000)
    parser.add_argument("--model", default="claude-haiku-4-5")
    args = parser.parse_args()
    size, max_tokens = int(args.tool_kb * 1024), 1024
    async with bench_environment("context") as (env, state):
        import os

        with FakeAnthropic(context_window=args.window) as fake:
            os.environ.update(fake.environ())
            fake.always(scripted_job(args.steps, size))
            config = make_config({"bench": {"model": args.model, "tools": ["report"], "autonomy": "autonomous",
                                            "max_tokens": max_tokens, "context_window_tokens": args.window}})
            queue, workflow_id = f"bench-{uuid.uuid4().hex[:6]}", f"context-{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            async with create_worker(env.client, config, task_queue=queue, store=ContentStore(state / "content")):
                handle = await env.client.start_workflow(
                    "AgentWorkflow", {"task": "Read every report.", "max_steps": args.steps + 2}, id=workflow_id,
                    task_queue=queue, result_type=AgentResult,
                )
                result = await handle.result()
            elapsed = time.monotonic() - started
            step_bodies = [r.body for r in fake.requests if r.body.get("tools")]
            system_and_tools = {k: step_bodies[0][k] for k in ("system", "tools") if k in step_bodies[0]}
        records = [json.loads(line) for line in (state / "trace.jsonl").read_text().splitlines()]
        records = [r for r in records if r["session_id"] == workflow_id]
        runs = [w async for w in env.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        history_bytes = 0
        for run in runs:
            history = await env.client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
            history_bytes += sum(e.ByteSize() for e in history.events)

    price = DEFAULT_PRICES[args.model]
    step_records = [r for r in records if r["action"]["type"] != "compaction"]
    compactions = [r for r in records if r["action"]["type"] == "compaction"]
    usage = Usage()
    for r in records:
        usage = usage + Usage(**{k: r["cost"][k] for k in Usage.model_fields})
    read_share = usage.cache_read_input_tokens / max(1, usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens)
    print(f"status {result.status}, {result.steps} steps, {len(compactions)} compactions, {len(runs)} workflow runs, {elapsed:.0f} s")
    print(f"largest prompt sent: {fake.largest_prompt_tokens:,} tokens (limit {context.prompt_limit(args.window, max_tokens):,} of a {args.window:,} window)")
    print("step   tokens sent   cost of the step")
    checkpoints = sorted({1, *range(50, len(step_bodies) + 1, 50), len(step_bodies)})
    costs = {r["step"]: r["cost"]["estimated_cost"] for r in step_records}
    for step in checkpoints:
        print(f"{step:>4}   {count_tokens(step_bodies[step - 1]):>11,}   ${costs.get(step, 0.0):.5f}")
    tiers = [t for r in compactions for t in r["action"]["args"]["tiers"]]
    print(f"compactions: {len(compactions)} ({tiers.count('elide')} elided old results, {tiers.count('summary')} summarised), "
          f"${sum(r['cost']['estimated_cost'] for r in compactions):.4f} in all")
    print(f"cost: ${result.total_cost:.4f} in all, ${result.total_cost / result.steps:.5f} per step; cache-read share of input tokens {read_share:.0%}")
    print(f"history: {history_bytes / result.steps:,.0f} bytes per step over {len(runs)} runs")
    overflow = overflow_without_compaction(args.steps, size, args.window, max_tokens, system_and_tools)
    full_cost = cost_usd(Usage(input_tokens=count_tokens({**system_and_tools, "messages": []})), price)
    where = f"step {overflow}" if overflow else "never"
    print(f"without compaction: the prompt outgrows the window at {where} (the API would answer 400 'prompt is too long'); "
          f"first-call input alone ${full_cost:.5f}")


if __name__ == "__main__":
    asyncio.run(main())
