"""How a call to an MCP server can fail, as the worker tells them apart.

Kept apart from :mod:`.client` so that what only catches these (the catalog, the
activities, the CLI) does not import the MCP SDK, which a worker without MCP
servers never needs: it is most of a process's start-up time.
"""

from __future__ import annotations

#: JSON-RPC 2.0's error codes the worker acts on (MCP uses JSON-RPC's own).
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class McpUnavailable(Exception):
    """The server could not be reached, or had no free slot in time (``busy``): nothing was sent."""

    def __init__(self, message: str, *, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


class McpCallLost(Exception):
    """The request was sent, but no answer came back (a timeout, a closed connection): its outcome is unknown."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class McpErrorResponse(Exception):
    """The server answered with a JSON-RPC error (or an answer that is not valid MCP)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
