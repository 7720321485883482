"""Tools used only by the tests: flaky, slow, failing and counting ones."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from durable_agent import ToolError, ToolTimeout, tool, tool_context


def _counter_file() -> Path:
    return Path(os.environ["AGENT_STATE_DIR"]) / "tool-calls.jsonl"


def _count(name: str, **extra: object) -> None:
    ctx = tool_context()
    with _counter_file().open("a") as fh:
        fh.write(json.dumps({"tool": name, "key": ctx.idempotency_key, "attempt": ctx.attempt, **extra}) + "\n")


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
async def not_found(query: str) -> str:
    """Always answers 'not found' (a final, non-retryable error)."""
    _count("not_found")
    raise ToolError(f"nothing found for {query!r}", retryable=False)


@tool(read_only=True)
async def big_output(size: int) -> str:
    """Returns `size` characters."""
    return "x" * size
