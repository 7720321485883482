"""The content store's cost: think latency and ms per step, local directory against S3.

    python bench/store_backends.py [--steps 10 200] [--tool-kb 8] [--encrypted]

For each backend (a local directory; ``moto_server`` on a loopback port as the
S3 API) and each run length, a scripted model calls a tool ``N`` times
(``--tool-kb`` KB of output each) then answers. Prints the median think
activity latency (from history: started to completed), wall time per step, and
a cold read: the whole conversation read by a worker that has not seen it (what a
think costs when it lands on another host).
Figures only; nothing is asserted. The S3 figures are a lower bound for a real
bucket, whose round trips are longer than loopback's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import bench_environment  # noqa: E402  (also puts the project on sys.path)

from temporalio.api.enums.v1 import EventType  # noqa: E402

from durable_agent.cli.worker import create_worker  # noqa: E402
from durable_agent.encryption import KeyRing  # noqa: E402
from durable_agent.models import register_provider, unregister_provider  # noqa: E402
from durable_agent.schemas import AgentResult  # noqa: E402
from durable_agent.store import ContentStore, open_store  # noqa: E402
from durable_agent.testing import ScriptedModel, answer, tool_use  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from tests.s3_server import aws_env, create_bucket, moto_server  # noqa: E402


def last_head(history) -> str:  # type: ignore[no-untyped-def]
    """The conversation head the run's last think returned."""
    head = ""
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            result = json.loads(e.activity_task_completed_event_attributes.result.payloads[0].data)
            if isinstance(result, dict) and "head" in result:
                head = result["head"]
    return head


def think_latencies_ms(history) -> list[float]:  # type: ignore[no-untyped-def]
    """Started-to-completed time of each think activity, from the history's own timestamps."""
    think_ids, started, out = set(), {}, []
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if e.activity_task_scheduled_event_attributes.activity_type.name == "think":
                think_ids.add(e.event_id)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[e.activity_task_started_event_attributes.scheduled_event_id] = e.event_time.ToDatetime()
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled = e.activity_task_completed_event_attributes.scheduled_event_id
            if scheduled in think_ids:
                out.append((e.event_time.ToDatetime() - started[scheduled]).total_seconds() * 1000)
    return out


async def measure(env, store: ContentStore, steps: int, size: int) -> tuple[float, float, str]:  # type: ignore[no-untyped-def]
    model = f"bench-store-{uuid.uuid4().hex[:6]}"
    register_provider(model, ScriptedModel(script=[tool_use("big_output", {"size": size}) for _ in range(steps)] + [answer("done")]))
    try:
        config = make_config({"bench": {"tools": ["big_output"], "model": model}})
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        async with create_worker(env.client, config, task_queue=queue, store=store):
            handle = await env.client.start_workflow(
                "AgentWorkflow", {"task": "store bench", "max_steps": steps + 1}, id=f"store-{uuid.uuid4().hex[:8]}",
                task_queue=queue, result_type=AgentResult,
            )
            result = await handle.result()
        elapsed = time.monotonic() - started
        assert result.status == "success", result
        history = await handle.fetch_history()
        return statistics.median(think_latencies_ms(history)), elapsed / (steps + 1) * 1000, last_head(history)
    finally:
        unregister_provider(model)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--tool-kb", type=float, default=8.0)
    parser.add_argument("--encrypted", action="store_true", help="store blobs AES-256-GCM encrypted")
    args = parser.parse_args()
    ring = KeyRing.parse(f"bench:{base64.b64encode(os.urandom(32)).decode()}") if args.encrypted else None
    size = int(args.tool_kb * 1024)
    rows = []
    async with bench_environment("store") as (env, state):
        with moto_server() as endpoint:
            os.environ.update(aws_env(endpoint))
            create_bucket(endpoint, "bench")
            for backend in ("local", "s3"):
                for steps in args.steps:
                    url = (state / f"content-{steps}").as_uri() if backend == "local" else f"s3://bench/run-{steps}"
                    store = open_store(ring, url=url)
                    with contextlib.suppress(Exception):
                        await store.check()
                    think, per_step, head = await measure(env, store, steps, size)
                    await store.close()
                    cold_store = open_store(ring, url=url)  # another host: nothing cached
                    await cold_store.backend.read("health/warm-up")  # its client connected, as a running worker's is
                    started = time.monotonic()
                    conversation = await cold_store.messages(head)
                    cold = (time.monotonic() - started) * 1000
                    await cold_store.close()
                    rows.append((backend, steps, think, per_step, cold))
                    print(f"  {backend:5} {steps:4} steps: think {think:6.1f} ms (median), {per_step:6.1f} ms per step, "
                          f"cold read of {len(conversation)} messages {cold:6.0f} ms", flush=True)
    print(f"\nbackend  steps  think ms  ms/step  cold read ms   ({args.tool_kb:g} KB tool output a step{', encrypted' if ring else ''})")
    local = {s: p for b, s, _t, p, _c in rows if b == "local"}
    for backend, steps, think, per_step, cold in rows:
        ratio = "" if backend == "local" else f"   x{per_step / local[steps]:.2f} of local per step"
        print(f"{backend:7} {steps:6} {think:9.1f} {per_step:8.1f} {cold:13.0f}{ratio}")


if __name__ == "__main__":
    asyncio.run(main())
