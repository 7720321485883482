"""Over a network: model calls per step, connections per 100 calls and ms per step, shared client vs fresh.

    python bench/network.py [--runs 3] [--steps 10] [--latency 0.05]

Agent runs on Claude, served by the fake Messages API (``tests/fake_anthropic.py``)
with ``--latency`` seconds of network round trip added to every request, on a
throwaway dev server with one worker process. Two ways side by side, interleaved:

- ``shared``: the worker as it is: one long-lived client (keep-alive), the prompt
  counted by the API only near the context window;
- ``fresh``: as before issue 22: a new client (a new connection) for every
  request, and a token count before every model call.

The fake speaks plain HTTP on the loopback: a real connection also pays a TLS
handshake (a few more round trips), which this does not show. Figures only;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import bench_environment  # noqa: E402  (also puts the project on sys.path)

import anthropic  # noqa: E402

from durable_agent.activities import context as context_activities  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402
from durable_agent.models import anthropic as anthropic_model  # noqa: E402
from durable_agent.store import ContentStore  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, Reply, text, tool_use  # noqa: E402

MODEL = "claude-haiku-4-5"


def fresh_client(api_key: str, base_url: str | None, timeout: float) -> anthropic.AsyncAnthropic:
    """A new client, and so a new connection, for every request (the worker before issue 22)."""
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)


class Mode:
    """Switch the worker between the shared client and a fresh one per request."""

    def __init__(self) -> None:
        self._shared = anthropic_model.shared_client
        self._near = context_activities.COUNT_NEAR_SHARE

    def use(self, mode: str) -> None:
        fresh = mode == "fresh"
        anthropic_model.shared_client = fresh_client if fresh else self._shared  # type: ignore[assignment]
        context_activities.COUNT_NEAR_SHARE = 0.0 if fresh else self._near  # counted before every call


async def one_run(client: Any, queue: str, fake: FakeAnthropic, steps: int) -> tuple[float, int, int, int]:
    """Seconds, model calls, token counts and connections of one run of ``steps`` steps."""
    fake.script(*[tool_use("big_output", {"size": 2048}) for _ in range(steps - 1)], text("done"))
    calls, counts, connections = len(fake.requests), len(fake.count_requests), fake.connections
    started = time.perf_counter()
    handle = await client.start_workflow(
        "AgentWorkflow", {"task": "bench", "max_steps": steps + 1}, id=f"bench-net-{uuid.uuid4().hex[:10]}", task_queue=queue
    )
    await handle.result()
    elapsed = time.perf_counter() - started
    return elapsed, len(fake.requests) - calls, len(fake.count_requests) - counts, fake.connections - connections


async def lookups(client: Any, queue: str, fake: FakeAnthropic, parallel: bool, count: int = 5) -> tuple[float, int]:
    """Seconds and model calls of a run whose model wants ``count`` independent lookups of 200 ms each."""
    calls = [tool_use("slow_lookup", {"key": f"k{n}", "seconds": 0.2}).content[0] for n in range(count)]
    if parallel:
        fake.script(Reply(content=calls), text("done"))
    else:
        fake.script(*[Reply(content=[call]) for call in calls], text("done"))
    before = len(fake.requests)
    started = time.perf_counter()
    agent = "parallel" if parallel else "serial"
    handle = await client.start_workflow(
        "AgentWorkflow", {"task": "look up five keys", "agent": agent}, id=f"bench-look-{uuid.uuid4().hex[:10]}", task_queue=queue
    )
    await handle.result()
    return time.perf_counter() - started, len(fake.requests) - before


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per way (median)")
    parser.add_argument("--steps", type=int, default=10, help="steps per run")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds of network round trip per request")
    args = parser.parse_args()
    logging.getLogger("durable_agent").setLevel(logging.ERROR)
    async with bench_environment("network") as (env, state):
        with FakeAnthropic() as fake:
            fake.latency = args.latency
            os.environ.update(fake.environ())
            profile = {"model": MODEL, "tools": ["big_output", "slow_lookup"], "autonomy": "autonomous", "max_tokens": 1024}
            config = make_config({
                "claude": profile, "parallel": {**profile, "parallel_tool_calls": True}, "serial": {**profile, "parallel_tool_calls": False},
            })
            queue = f"bench-{uuid.uuid4().hex[:6]}"
            mode = Mode()
            async with create_worker(env.client, config, task_queue=queue, store=ContentStore(state / "content")):
                mode.use("shared")
                warm_up = await one_run(env.client, queue, fake, 2)
                figures: dict[str, list[tuple[float, int, int, int]]] = {"fresh": [], "shared": []}
                for _ in range(args.runs):
                    for way in figures:
                        mode.use(way)
                        figures[way].append(await one_run(env.client, queue, fake, args.steps))
                mode.use("shared")
                looked: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
                for _ in range(args.runs):
                    for parallel in looked:
                        looked[parallel].append(await lookups(env.client, queue, fake, parallel))
    print(f"{args.steps}-step runs on Claude (the fake), {args.latency * 1000:.0f} ms of latency a request, median of {args.runs}")
    print(f"{'way':<44} {'requests/step':>14} {'model calls/step':>17} {'connections/100 calls':>22} {'ms/step':>9}")
    for way, label in (("fresh", "fresh client per request, count every step"), ("shared", "one client per worker, count near window")):
        runs = figures[way]
        seconds = statistics.median(r[0] for r in runs)
        calls = sum(r[1] for r in runs)
        counts = sum(r[2] for r in runs)
        connections = sum(r[3] for r in runs)
        steps = args.steps * len(runs)
        if way == "shared":
            shared_connections = connections + warm_up[3]
            shared_requests = calls + counts + warm_up[1] + warm_up[2]
        print(f"{label:<44} {(calls + counts) / steps:>14.2f} {calls / steps:>17.2f} {100 * connections / max(1, calls + counts):>22.1f} "
              f"{seconds / args.steps * 1000:>9.1f}")

    print(f"5 independent lookups of 200 ms each, {args.latency * 1000:.0f} ms of latency a request, median of {args.runs}:")
    for parallel, label in ((False, "parallel_tool_calls = false"), (True, "parallel_tool_calls = true")):
        seconds = statistics.median(r[0] for r in looked[parallel])
        print(f"  {label:<30} model calls {statistics.median(r[1] for r in looked[parallel]):>4.0f}   wall {seconds * 1000:>7.0f} ms")
    print(f"the shared client opened {shared_connections} connection(s) in all, for {shared_requests} requests (warm-up run included)")


if __name__ == "__main__":
    asyncio.run(main())
