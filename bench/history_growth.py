"""History bytes per step: this design against passing the conversation to each model call.

    python bench/history_growth.py [--steps 25 50 100 200] [--tool-kb 8]

Runs scripted agents on a throwaway dev server, each step returning ``--tool-kb``
KB of tool output, and prints the event-history size of each run next to what
the history would hold if every think activity carried the whole conversation
(the sum, over steps, of the conversation's size at that step, measured from the
content store). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import bench_environment  # noqa: E402  (also puts the project on sys.path)

from durable_agent.models import register_provider  # noqa: E402
from durable_agent.store import ContentStore  # noqa: E402
from durable_agent.testing import ScriptedModel, answer, tool_use  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402

HISTORY_LIMIT = 50 * 1024 * 1024


async def measure(env: WorkflowEnvironment, store: ContentStore, steps: int, tool_chars: int) -> dict[str, float]:
    model = f"bench-{uuid.uuid4().hex[:6]}"
    scripted = ScriptedModel(script=[tool_use("big_output", {"size": tool_chars}) for _ in range(steps)] + [answer("done")])
    register_provider(model, scripted)
    config = make_config({"bench": {"tools": ["big_output"], "model": model, "continue_as_new_every": 100_000}})
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    async with create_worker(env.client, config, task_queue=queue, store=store):
        handle = await env.client.start_workflow(
            "AgentWorkflow", {"task": "grow", "max_steps": steps + 1}, id=f"bench-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        await handle.result()
        history = await handle.fetch_history()
    actual = sum(event.ByteSize() for event in history.events)
    # What each think would have carried: the conversation as the model saw it at that step.
    naive = sum(len(json.dumps(request.messages)) for request in scripted.requests)
    return {"steps": steps, "actual": actual, "naive": naive}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--tool-kb", type=float, default=8.0)
    args = parser.parse_args()
    async with bench_environment("history") as (env, state):
        store = ContentStore(state / "content")
        print(f"tool output per step: {args.tool_kb:g} KB")
        print(f"{'steps':>6} {'history':>12} {'per step':>10} {'naive':>14} {'naive/actual':>13}")
        rows = []
        for steps in args.steps:
            row = await measure(env, store, steps, int(args.tool_kb * 1024))
            rows.append(row)
            print(
                f"{steps:>6} {row['actual'] / 1024:>10.1f}KB {row['actual'] / steps / 1024:>8.2f}KB "
                f"{row['naive'] / 1024 / 1024:>12.2f}MB {row['naive'] / row['actual']:>12.1f}x"
            )
        last = rows[-1]
        per_step = last["actual"] / last["steps"]
        print(f"\nsteps to Temporal's 50 MB history limit without continue-as-new: ~{HISTORY_LIMIT / per_step:,.0f} (flat);")
        # Naive growth is quadratic: bytes(n) ~ c * n^2, so n_limit = sqrt(limit / c).
        c = last["naive"] / last["steps"] ** 2
        print(f"passing the conversation instead: ~{(HISTORY_LIMIT / c) ** 0.5:,.0f} steps")


if __name__ == "__main__":
    asyncio.run(main())
