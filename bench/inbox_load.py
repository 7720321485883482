"""The reviewer inbox with many runs waiting: status queries per second while a page is open.

    python bench/inbox_load.py [--waiting 200] [--seconds 10]

On a throwaway dev server, ``--waiting`` runs of the demo profile each wait for an
approval (a cancelled order). A page open on the inbox looks once a second. It is
measured twice in one run: reading what waits from each run's memo (what the inbox
does), and asking each run for its ``status`` (what it did before, and still does for
a run begun before the memo). The worker keeps no run cached, as a busy worker would
have evicted them, so each query is a replay. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import bench_environment  # noqa: E402  (also puts the project on sys.path)

from durable_agent.activities import register_approval_index  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402
from durable_agent.inbox.listing import Approvals, Listing  # noqa: E402
from durable_agent.inbox.pages import InboxItem  # noqa: E402
from durable_agent.schemas import StatusView  # noqa: E402
from temporalio.client import WorkflowExecution  # noqa: E402
from tests.conftest import make_config  # noqa: E402


class QueryingApprovals(Approvals):
    """The inbox as it was: every marked run asked for its ``status`` on every look."""

    async def _waiting(self, run: WorkflowExecution) -> list[InboxItem]:
        return await self._asked(run)


async def page_open(approvals: Approvals, seconds: float) -> tuple[float, float, int]:
    """Look once a second for ``seconds``; queries per second, median ms per look, approvals seen."""
    looks: list[float] = []
    seen = 0
    before = approvals.queries
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        listing: Listing = await approvals.fetch()
        looks.append((time.monotonic() - tick) * 1000)
        seen = len(listing.items)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    elapsed = time.monotonic() - started
    return (approvals.queries - before) / elapsed, statistics.median(looks), seen


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.getLogger("durable_agent").setLevel(logging.ERROR)  # one notification line per waiting run otherwise
    async with bench_environment("inbox") as (env, state):
        client = env.client
        await register_approval_index(client)
        queue = f"bench-inbox-{uuid.uuid4().hex[:6]}"
        async with create_worker(client, make_config(), task_queue=queue, max_cached_workflows=0):
            handles = [
                await client.start_workflow("AgentWorkflow", {"task": "Cancel order ord-1001"}, id=f"inbox-{n}", task_queue=queue)
                for n in range(args.waiting)
            ]
            for handle in handles:
                while not (await handle.query("status", result_type=StatusView)).pending_approvals:  # noqa: ASYNC110 - polling a run
                    await asyncio.sleep(0.05)
            while len((await Approvals(client).fetch()).items) < args.waiting:  # noqa: ASYNC110 - visibility catches up
                await asyncio.sleep(0.2)
            print(f"{args.waiting} runs waiting for approval; a page looking once a second for {args.seconds:g} s; worker cache off")
            for label, approvals in (("memo (now)", Approvals(client)), ("status queries (before)", QueryingApprovals(client))):
                rate, look_ms, seen = await page_open(approvals, args.seconds)
                print(f"  {label:<24} {rate:8.1f} queries/s   {look_ms:8.1f} ms per look   {seen} approvals listed")
            for handle in handles:
                await handle.cancel()


if __name__ == "__main__":
    asyncio.run(main())
