"""The bare Temporal floor for bench/scale.py: a plain workflow doing the same activities as an agent run.

``BareAgent`` loops: one ``bare_think`` activity (sleeping the model's latency,
returning a small tool call), then one ``bare_tool`` activity returning the same
bytes a tool returns; the last think answers. No policy, no records, no store:
what Temporal itself costs per step on this machine.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

BARE_WORKFLOW = "BenchBareAgent"


class BareInput(BaseModel):
    steps: int
    tool_chars: int
    latency: float = 0.0
    wait_for_signal: bool = False


@activity.defn(name="bench_bare_think")
async def bare_think(latency: float) -> dict[str, str]:
    if latency:
        await asyncio.sleep(latency)
    return {"tool": "big_output", "id": "toolu_bare"}


@activity.defn(name="bench_bare_tool")
async def bare_tool(size: int) -> str:
    return "x" * size


@workflow.defn(name=BARE_WORKFLOW)
class BareAgent:
    def __init__(self) -> None:
        self.released = False

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.run
    async def run(self, request: BareInput) -> int:
        if request.wait_for_signal:  # the floor of a run waiting for a person
            await workflow.wait_condition(lambda: self.released)
        for step in range(request.steps):
            await workflow.execute_activity(bare_think, request.latency, start_to_close_timeout=timedelta(minutes=5))
            if step < request.steps - 1:
                await workflow.execute_activity(bare_tool, request.tool_chars, start_to_close_timeout=timedelta(minutes=1))
        return request.steps
