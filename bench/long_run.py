"""One very long run: does a 10,000-step agent finish, and what does each step cost?

    python bench/long_run.py [--steps 10000] [--tool-kb 8] [--every 250]

A scripted model calls a tool ``--steps`` times (``--tool-kb`` KB of output each)
then answers, on a throwaway dev server, continuing as new every ``--every``
steps. Prints wall time per step, the number of workflow runs in the chain and
the largest history among them. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import bench_environment  # noqa: E402  (also puts the project on sys.path)

from durable_agent.models import register_provider  # noqa: E402
from durable_agent.schemas import AgentResult  # noqa: E402
from durable_agent.store import ContentStore  # noqa: E402
from durable_agent.testing import ScriptedModel, answer, tool_use  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--tool-kb", type=float, default=8.0)
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    async with bench_environment("long") as (env, state):
        model = "bench-long"
        size = int(args.tool_kb * 1024)
        register_provider(model, ScriptedModel(script=[tool_use("big_output", {"size": size}) for _ in range(args.steps)] + [answer("done")]))
        config = make_config({"bench": {"tools": ["big_output"], "model": model, "continue_as_new_every": args.every}})
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        workflow_id = f"long-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        async with create_worker(env.client, config, task_queue=queue, store=ContentStore(state / "content")):
            handle = await env.client.start_workflow(
                "AgentWorkflow", {"task": "a very long job", "max_steps": args.steps + 1}, id=workflow_id,
                task_queue=queue, result_type=AgentResult,
            )
            result = await handle.result()
        elapsed = time.monotonic() - started
        runs = [w async for w in env.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        largest = 0
        for run in runs:
            history = await env.client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
            largest = max(largest, sum(e.ByteSize() for e in history.events))
        print(f"status {result.status}, {result.steps} steps, {len(result.tools_used)} tool calls, {len(runs)} workflow runs")
        print(f"wall time {elapsed:.1f} s = {elapsed / result.steps * 1000:.1f} ms per step (think + tool activities, dev server, 2 cores)")
        print(f"largest history of one run: {largest / 1024:.0f} KB (Temporal's limit: 51,200 KB)")


if __name__ == "__main__":
    asyncio.run(main())
