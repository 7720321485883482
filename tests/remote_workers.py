"""Another team's worker, in the test process: plain ``@activity.defn(name=...)`` functions on their own task queue.

They stand in for a Go or Java worker: nothing of durable-agent is imported, the
input is one JSON object and the result one JSON value. Each call is kept in
:data:`CALLS` (with the activity id the run gave it, the call's idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

#: (activity name, its input, its activity id), in the order they were served.
CALLS: list[tuple[str, dict[str, Any], str]] = []
#: Set to let SlowTransfer return (it waits at most 10 s).
RELEASE = asyncio.Event()
#: Called by LookupCustomer (a test may change the world between steps).
ON_LOOKUP: list[Callable[[], None]] = []


def _called(name: str, args: dict[str, Any]) -> None:
    CALLS.append((name, args, activity.info().activity_id))


def calls(name: str) -> list[tuple[dict[str, Any], str]]:
    """The inputs and activity ids of the calls of ``name`` so far."""
    return [(args, activity_id) for served, args, activity_id in CALLS if served == name]


@activity.defn(name="ChargeCard")
async def charge_card(args: dict[str, Any]) -> dict[str, Any]:
    _called("ChargeCard", args)
    return {"charge_id": f"ch-{len(CALLS)}", "amount": args["amount"], "currency": args["currency"], "status": "captured"}


@activity.defn(name="LookupCustomer")
async def lookup_customer(args: dict[str, Any]) -> dict[str, Any]:
    _called("LookupCustomer", args)
    for hook in ON_LOOKUP:
        hook()
    return {"customer_id": args["customer_id"], "name": "Ada Lovelace", "tier": "gold"}


@activity.defn(name="SlowTransfer")
async def slow_transfer(args: dict[str, Any]) -> str:
    _called("SlowTransfer", args)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(RELEASE.wait(), 10)
    return "transferred"


@activity.defn(name="RefuseRefund")
async def refuse_refund(args: dict[str, Any]) -> None:
    _called("RefuseRefund", args)
    raise ApplicationError(f"order {args['order_id']} was already refunded", type="AlreadyRefunded", non_retryable=True)


ACTIVITIES = [charge_card, lookup_customer, slow_transfer, refuse_refund]


@contextlib.asynccontextmanager
async def serving(client: Client, task_queue: str, data_converter: DataConverter | None = None) -> AsyncIterator[Worker]:
    """A plain worker on ``task_queue`` serving :data:`ACTIVITIES`: the SDK's default data converter, or ``data_converter``."""
    global RELEASE
    CALLS.clear()
    ON_LOOKUP.clear()
    RELEASE = asyncio.Event()
    plain = Client(client.service_client, namespace=client.namespace, data_converter=data_converter or DataConverter.default)
    worker = Worker(plain, task_queue=task_queue, activities=ACTIVITIES)
    try:
        async with worker:
            yield worker
    finally:
        RELEASE.set()
