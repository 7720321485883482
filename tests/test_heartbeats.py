"""Activities heartbeat for their whole body, and only when the body lasts long enough to need it."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.testing import ActivityEnvironment

from durable_agent.activities.common import heartbeating


def counted() -> tuple[ActivityEnvironment, list[tuple[object, ...]]]:
    env, beats = ActivityEnvironment(), []
    env.on_heartbeat = lambda *details: beats.append(details)
    return env, beats


async def test_a_body_shorter_than_the_pace_sends_no_heartbeat() -> None:
    """Each heartbeat is a call to the server that writes the attempt's state: a quick step makes none."""
    env, beats = counted()

    @activity.defn
    async def quick() -> str:
        async with heartbeating(every=0.5):
            await asyncio.sleep(0.01)
        return "done"

    assert await env.run(quick) == "done"
    assert beats == []


async def test_a_long_body_beats_at_its_pace_from_start_to_end() -> None:
    """A body that outlasts the pace beats all along, so the server's heartbeat timeout never fails it."""
    env, beats = counted()

    @activity.defn
    async def slow() -> None:
        async with heartbeating(every=0.05):
            await asyncio.sleep(0.4)

    await env.run(slow)
    assert len(beats) >= 3  # about one per 0.05 s of a 0.4 s body
