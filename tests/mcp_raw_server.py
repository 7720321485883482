"""A deliberately broken MCP server over stdio, written without the SDK (which refuses to send what it sends).

It speaks the 2025-06-18 handshake and lists one tool whose ``inputSchema`` is
``{"type": "string"}``, not the JSON Schema object MCP requires: what a buggy
third-party server might send. ``python tests/mcp_raw_server.py``.
"""

from __future__ import annotations

import json
import sys

TOOLS = [{"name": "odd_tool", "description": "A tool with a string for a schema.", "inputSchema": {"type": "string"}}]


def answer(request_id: object, result: dict[str, object] | None = None, error: dict[str, object] | None = None) -> None:
    reply: dict[str, object] = {"jsonrpc": "2.0", "id": request_id}
    reply.update({"error": error} if error is not None else {"result": result or {}})
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        if "id" not in message:
            continue  # a notification
        method = message.get("method")
        if method == "initialize":
            answer(message["id"], {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "raw", "version": "0"}})
        elif method == "tools/list":
            answer(message["id"], {"tools": TOOLS})
        elif method == "ping":
            answer(message["id"])
        else:
            answer(message["id"], error={"code": -32601, "message": f"method not found: {method}"})


if __name__ == "__main__":
    main()
