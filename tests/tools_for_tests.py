"""Tools used only by the tests: flaky, slow, failing and counting ones."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Awaitable, Callable

from durable_agent import ToolError, ToolRateLimited, ToolTimeout, tool, tool_context
from durable_agent.demo import shop


def _counter_file() -> Path:
    return Path(os.environ["AGENT_STATE_DIR"]) / "tool-calls.jsonl"


def _count(name: str, **extra: object) -> None:
    ctx = tool_context()
    with _counter_file().open("a") as fh:
        row = {"tool": name, "key": ctx.idempotency_key, "attempt": ctx.attempt, "at": time.time(), **extra}
        fh.write(json.dumps(row) + "\n")


def calls(name: str | None = None) -> list[dict]:
    """Every recorded call of the test tools (optionally of one tool)."""
    path = _counter_file()
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if name is None or r["tool"] == name]


@tool(read_only=True)
async def echo(text: str, times: int = 1) -> str:
    """Repeat text."""
    _count("echo")
    return " ".join([text] * times)


@tool(read_only=True, timeout=1.0)
async def always_slow(query: str) -> str:
    """A tool whose upstream never answers in time."""
    _count("always_slow")
    await asyncio.sleep(30)
    return "never"


@tool(read_only=True)
async def always_timeout(query: str) -> str:
    """A tool whose upstream always reports a timeout."""
    _count("always_timeout")
    raise ToolTimeout("upstream timed out")


@tool(read_only=True)
async def flaky_once(query: str) -> str:
    """Fails on the first attempt, works on the second."""
    _count("flaky_once")
    if tool_context().attempt == 1:
        raise RuntimeError("connection reset by peer")
    return f"ok: {query}"


@tool(read_only=True)
async def rate_limited_once(query: str) -> str:
    """Told to slow down for 1.5 s on the first attempt (longer than the plan's own first pause), works on the second."""
    _count("rate_limited_once")
    if tool_context().attempt == 1:
        raise ToolRateLimited("upstream says: slow down", retry_after=1.5)
    return f"ok: {query}"


@tool(read_only=True)
async def not_found(query: str) -> str:
    """Always answers 'not found' (a final, non-retryable error)."""
    _count("not_found")
    raise ToolError(f"nothing found for {query!r}", retryable=False)


@tool(read_only=True)
async def big_output(size: int) -> str:
    """Returns `size` characters."""
    return "x" * size


def report_text(n: int, size: int) -> str:
    """The text of report ``n``: numbered lines, ``size`` characters, different for every report."""
    lines, length = [], 0
    i = 0
    while length < size:
        line = f"report {n} line {i}: value {(n * 7919 + i * 104729) % 1000003}\n"
        lines.append(line)
        length += len(line)
        i += 1
    return "".join(lines)[:size]


@tool(read_only=True)
async def slow_lookup(key: str, seconds: float = 0.2) -> str:
    """Look ``key`` up in a slow upstream (``seconds`` a call); records when each call starts and ends."""
    _count("slow_lookup", event=f"start {key}")
    await asyncio.sleep(seconds)
    _count("slow_lookup", event=f"end {key}")
    return f"value of {key}"


@tool(read_only=True)
async def report(n: int, size: int = 8192) -> str:
    """Report number `n`, `size` characters of numbered lines."""
    return report_text(n, size)


@tool(read_only=True, heartbeat=1.0, timeout=120.0)
async def wait_for_cancel(seconds: float = 60.0) -> str:
    """Waits, heartbeating every second; records when it starts and when it is cancelled."""
    _count("wait_for_cancel", event="started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _count("wait_for_cancel", event="cancelled")
        raise
    return "waited"


@tool(amount_arg="amount", currency_arg="currency", heartbeat=1.0, timeout=120.0)
async def refund_then_wait(order_id: str, amount: float, currency: str = "USD") -> dict:
    """Refund through the demo shop (once per idempotency key), then wait when the refund is new.

    The wait is the window in which a crash test kills the worker: the money has
    moved, the result is not yet recorded, so the call will be retried.
    """
    # to_thread copies the context, so the shop's tool_context() sees this call.
    result = await asyncio.to_thread(shop.issue_refund, order_id, amount, currency)
    _count("refund_then_wait", replayed=bool(result.get("replayed")))
    if not result.get("replayed"):
        await asyncio.sleep(60)
    return result


@tool(read_only=True, rate_limit="2/10s")
async def limited_echo(text: str) -> str:
    """Echo, at most 2 calls in any 10 s across all runs (each call's start time is recorded)."""
    _count("limited_echo")
    return text


@tool(read_only=True, rate_limit="1/hour", rate_limit_wait=False)
async def limited_fail_fast(text: str) -> str:
    """Echo, once an hour; a call over the limit is refused at once instead of waiting."""
    _count("limited_fail_fast")
    return text


@tool(read_only=True)
async def tuple_keys(order_id: str) -> dict:
    """Returns a dict keyed by tuples, which JSON cannot hold (counted: it must run once)."""
    _count("tuple_keys")
    return {("order", order_id): "found", "ok": True}


@tool(read_only=True)
async def circular(size: int = 1) -> list:
    """Returns a list that contains itself (counted: it must run once)."""
    _count("circular")
    items: list = list(range(size))
    items.append(items)
    return items


#: What ``returns_given`` returns, by key: set by a test before the run (same process as the worker).
GIVEN_RESULTS: dict[str, object] = {}


@tool(read_only=True)
async def returns_given(key: str) -> object:
    """Returns whatever the test put under ``key`` in ``GIVEN_RESULTS`` (counted: it must run once)."""
    _count("returns_given", result_key=key)
    return GIVEN_RESULTS[key]


@tool(heartbeat=1.0, timeout=60.0)
def slow_transfer(account: str, amount: float, seconds: float = 4.0) -> dict:
    """A synchronous tool that changes the world slowly: records when it starts and when it ends."""
    _count("slow_transfer", event="started")
    time.sleep(seconds)
    _count("slow_transfer", event="finished")
    return {"account": account, "amount": amount, "status": "done", "note": "y" * int(os.environ.get("TRANSFER_NOTE_CHARS", "0"))}


@tool(heartbeat=1.0, timeout=60.0)
def failing_transfer(account: str, amount: float, seconds: float = 2.0) -> dict:
    """A synchronous tool that changes the world slowly, then crashes: the bank's link dropped as it finished."""
    _count("failing_transfer", event="started")
    time.sleep(seconds)
    _count("failing_transfer", event="crashed")
    raise ConnectionError(f"the link to the bank dropped while moving {amount} to {account}")


@tool(heartbeat=1.0, timeout=60.0)
async def slow_async_transfer(account: str, amount: float, seconds: float = 4.0) -> dict:
    """An async tool that changes the world slowly: records when it starts and when it ends (or is cut off)."""
    _count("slow_async_transfer", event="started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _count("slow_async_transfer", event="cut off")
        raise
    _count("slow_async_transfer", event="finished")
    return {"account": account, "amount": amount, "status": "done"}


#: What ``checkpoint`` awaits, by name: set by a test before the run (an attacker acting at that moment, say).
CHECKPOINTS: dict[str, Callable[[], Awaitable[None]]] = {}


@tool(read_only=True)
async def checkpoint(name: str) -> str:
    """Awaits the test's ``CHECKPOINTS[name]`` (if any) while the run waits on this call, then says so."""
    _count("checkpoint", checkpoint=name)
    hook = CHECKPOINTS.get(name)
    if hook is not None:
        await hook()
    return f"checkpoint {name} passed"


@tool(read_only=True)
async def customer_record(customer_id: str) -> dict:
    """A customer's record, with what must never leave the run that read it (an SSN and a card number)."""
    _count("customer_record", customer_id=customer_id)
    return {"customer_id": customer_id, "name": "Carol Example", "ssn": "078-05-1120", "card": "4111 1111 1111 1111"}


@tool(risk="medium", amount_arg="amount", currency_arg="currency")
async def pay(payee: str, amount: float, currency: str = "USD") -> dict:
    """Pays ``amount`` to ``payee`` (counted: every payment a run makes is in the counter file)."""
    _count("pay", payee=payee, amount=amount)
    return {"payee": payee, "amount": amount, "currency": currency, "status": "paid"}


@tool(risk="medium", amount_arg="amount", currency_arg="currency")
async def refund_order(order_id: str, amount: float | None = None, currency: str = "USD") -> dict:
    """Refunds ``amount`` of an order; without an amount, the whole order (counted, moves nothing)."""
    _count("refund_order", order_id=order_id, amount=amount)
    return {"order_id": order_id, "refunded": "the whole order" if amount is None else amount, "currency": currency}


@tool(amount_arg="amount", currency_arg="currency", protected=True)
async def send_payment(iban: str, amount: float, currency: str = "EUR") -> dict:
    """Pay an amount to a bank account (a stand-in for a payment API: it records the call and moves nothing)."""
    _count("send_payment", iban=iban, amount=amount)
    return {"paid": amount, "currency": currency}


@tool(timeout=2.0)
async def pay_slowly(account: str, amount: float) -> dict:
    """Pays at 1 s (counted), confirms at 3 s: past its 2 s timeout, after the money moved."""
    await asyncio.sleep(1.0)
    _count("pay_slowly", event="paid")
    await asyncio.sleep(2.0)
    return {"account": account, "amount": amount, "status": "paid"}


#: Payments ``pay_once_per_key`` made, by idempotency key (the same process as the worker).
PAID_BY_KEY: dict[str, dict] = {}


@tool(timeout=2.0, idempotent=True)
async def pay_once_per_key(account: str, amount: float) -> dict:
    """Pays once per idempotency key: the first attempt pays at 1 s and is slow to confirm; a retry finds the payment."""
    key = tool_context().idempotency_key
    if key in PAID_BY_KEY:
        _count("pay_once_per_key", event="found")
        return {**PAID_BY_KEY[key], "replayed": True}
    await asyncio.sleep(1.0)
    PAID_BY_KEY[key] = {"account": account, "amount": amount, "status": "paid"}
    _count("pay_once_per_key", event="paid")
    await asyncio.sleep(2.0)
    return PAID_BY_KEY[key]


@tool(timeout=1.0)
def transfer_then_hang(account: str, seconds: float) -> dict:
    """A synchronous transfer that moves the money at once, then hangs for `seconds` (past its activity's own limit)."""
    _count("transfer_then_hang", event="transferred")
    time.sleep(seconds)
    return {"account": account, "status": "done"}
