"""A ticketing MCP server for the tests, written with the official SDK: ``python tests/mcp_servers.py stdio|http PORT``.

Every call is appended to ``$MCP_TEST_STATE/calls.jsonl`` (tool, arguments,
the idempotency key from ``_meta``, the process id), so a test can count what
the server really did, across processes and restarts. ``MCP_TEST_VARIANT=long_name``
adds a tool whose name is too long for the model (a schema that is not an object
the SDK refuses to send: see :mod:`tests.mcp_raw_server`). Over HTTP it
requires ``Authorization: Bearer $MCP_TEST_TOKEN`` when that variable is set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations

#: A 1x1 transparent PNG.
PIXEL = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")
).decode()

app = MCPServer("tickets")
STATE = Path(os.environ.get("MCP_TEST_STATE", "."))
TICKETS: dict[str, dict[str, Any]] = {"T-1": {"id": "T-1", "title": "Printer on fire", "status": "open"}}


def record(tool: str, args: dict[str, Any], ctx: Context | None) -> None:
    meta = ctx.request_context.meta if ctx is not None else None
    line = {"tool": tool, "args": args, "key": (meta or {}).get("durable-agent/idempotency-key"), "pid": os.getpid(), "at": time.time()}
    with (STATE / "calls.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")


def calls(state: Path, tool: str | None = None) -> list[dict[str, Any]]:
    """What the server at ``state`` was asked to do (for the tests)."""
    path = state / "calls.jsonl"
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [c for c in found if tool is None or c["tool"] == tool]


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def get_ticket(ticket_id: str, ctx: Context) -> dict[str, Any]:
    """Look a ticket up by id."""
    record("get_ticket", {"ticket_id": ticket_id}, ctx)
    return TICKETS.get(ticket_id, {"error": "no such ticket"})


@app.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
async def create_ticket(title: str, ctx: Context, wait_for: str = "") -> str:
    """Open a new ticket. (Tests: with wait_for, the call waits until that file exists.)"""
    record("create_ticket", {"title": title}, ctx)
    try:
        while wait_for and not Path(wait_for).exists():  # noqa: ASYNC110 - another process creates the file
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        record("create_ticket_cancelled", {"title": title}, ctx)
        raise
    return f"created T-{100 + len(calls(STATE, 'create_ticket'))}: {title}"


@app.tool(annotations=ToolAnnotations(destructive_hint=True))
def delete_ticket(ticket_id: str, ctx: Context) -> str:
    """Delete a ticket for good."""
    record("delete_ticket", {"ticket_id": ticket_id}, ctx)
    return f"deleted {ticket_id}"


@app.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
def refund_ticket(ticket_id: str, amount: float, ctx: Context) -> str:
    """Refund the customer of a ticket."""
    record("refund_ticket", {"ticket_id": ticket_id, "amount": amount}, ctx)
    return f"refunded {amount:g} on {ticket_id}"


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def broken_report(ctx: Context) -> CallToolResult:
    """A report the server cannot make (answers with isError)."""
    record("broken_report", {}, ctx)
    return CallToolResult(content=[TextContent(type="text", text="the report database is offline")], is_error=True)


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def snapshot(ctx: Context) -> CallToolResult:
    """A picture of the queue, with a caption and structured counts."""
    record("snapshot", {}, ctx)
    return CallToolResult(
        content=[TextContent(type="text", text="queue snapshot"), ImageContent(type="image", data=PIXEL, mime_type="image/png")],
        structured_content={"open": 1},
    )


IN_FLIGHT = {"now": 0, "peak": 0}


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
async def hang(seconds: float, ctx: Context) -> str:
    """Answer after a while."""
    record("hang", {"seconds": seconds}, ctx)
    IN_FLIGHT["now"] += 1
    IN_FLIGHT["peak"] = max(IN_FLIGHT["peak"], IN_FLIGHT["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        IN_FLIGHT["now"] -= 1
    return "done"


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def peak_concurrency() -> int:
    """The most hang calls this process ever ran at once."""
    return IN_FLIGHT["peak"]


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def huge(megabytes: int, ctx: Context) -> str:
    """Answer with this many megabytes of text."""
    record("huge", {"megabytes": megabytes}, ctx)
    return "x" * (megabytes * 1_000_000)


@app.tool(annotations=ToolAnnotations(destructive_hint=False))
def crash(ctx: Context) -> str:
    """The server process dies in the middle of this call."""
    record("crash", {}, ctx)
    os._exit(3)


@app.tool(annotations=ToolAnnotations(read_only_hint=True))
def whoami(ctx: Context) -> str:
    """Whether the request carried the expected credentials (never the credentials themselves)."""
    record("whoami", {}, ctx)
    expected = os.environ.get("MCP_TEST_TOKEN")
    got = (ctx.headers or {}).get("authorization")
    return "authenticated" if expected and got == f"Bearer {expected}" else "anonymous"


def misbehave(variant: str) -> None:
    """Break the tool list in the way ``variant`` names."""
    if variant == "long_name":

        @app.tool(name="summarise_every_ticket_of_the_quarter_by_team_and_priority")
        def long_named() -> str:
            """A tool whose model-facing name is over 64 characters."""
            return "ok"


def http_app(token: str | None) -> Any:
    """The streamable HTTP app, behind a bearer-token check when ``token`` is set."""
    inner = app.streamable_http_app()
    if not token:
        return inner

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await inner(scope, receive, send)

    return guarded


if __name__ == "__main__":
    misbehave(os.environ.get("MCP_TEST_VARIANT", ""))
    if sys.argv[1:2] == ["http"]:
        import uvicorn

        uvicorn.run(http_app(os.environ.get("MCP_TEST_TOKEN")), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        app.run()
