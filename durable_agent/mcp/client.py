"""Connections to MCP servers: one session per server per worker, through the official MCP SDK.

A stdio server's process is started on first use, replaced when it dies, and
stopped when the worker shuts down; a streamable HTTP session is reused by every
call. Each connection is owned by one task from connect to close (the SDK's
context must be entered and left in the same task), and calls from activities
share it, at most ``max_concurrent`` at a time.

A call either never reached the server (:class:`McpUnavailable`: safe to try
again), came back (a result, or :class:`McpErrorResponse`), or was sent and its
answer lost (:class:`McpCallLost`: a timeout, a closed connection). Only the
caller knows whether the last may be sent again. Error texts never carry a
header, an env value or a ``${VAR}``'s value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import httpx2
import mcp_types as mcp
import pydantic
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from durable_agent.mcp.config import McpServerConfig, redactor
from durable_agent.mcp.errors import McpCallLost, McpErrorResponse, McpUnavailable

log = logging.getLogger("durable_agent.mcp")

#: Pages of ``tools/list`` followed before giving up on a server that never stops paginating.
MAX_LIST_PAGES = 100
#: How long a closing connection may take (a stdio server that ignores its closed stdin is killed).
CLOSE_TIMEOUT = 10.0
#: Calls on a connection idle for longer than this probe it first when they must not be sent twice.
PROBE_AFTER_IDLE = 1.0
CLIENT_INFO = mcp.Implementation(name="durable-agent", version="0.1.0")


class _RedactingFilter(logging.Filter):
    """Hides every MCP secret (header and env values, ``${VAR}`` values) in the SDK's and its HTTP client's log lines.

    A URL may carry a ``${VAR}`` (``?key=${API_KEY}``), and the HTTP client logs each request's URL.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            hidden = redactor(list(self.secrets))(message)
            if hidden != message:
                record.msg, record.args = hidden, None
        return True


_LOG_FILTER = _RedactingFilter()


def _guard_logs(secrets: list[str]) -> None:
    """Add ``secrets`` to what the MCP SDK's and HTTP client's loggers never show."""
    _LOG_FILTER.secrets.update(secrets)
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in ("mcp", "mcp_types", "httpx2", "httpcore2")]
    for name in ("mcp", "httpx2", *names):
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


# One line per HTTP request (with its URL) is noise in a worker's log, and a URL may carry a secret.
logging.getLogger("httpx2").setLevel(logging.WARNING)


class _Session:
    """One live connection, owned by one task from connect to close."""

    def __init__(self, make_client: Callable[[], Client]) -> None:
        self._ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._own(make_client))
        self.in_flight = 0
        self.retired = False
        self.closing = False
        self.used_at = time.monotonic()

    async def _own(self, make_client: Callable[[], Client]) -> None:
        try:
            async with make_client() as client:
                self._ready.set_result(client)
                await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - the connection's end, whatever it was, is reported to its users
            if not self._ready.done():
                self._ready.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def client(self, timeout: float) -> Client:
        return await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    @property
    def usable(self) -> bool:
        return not self.retired and not self._task.done()

    async def close(self) -> None:
        self._stop.set()
        if not self._ready.done():
            self._task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            self._task.cancel()
        except BaseException:  # noqa: BLE001 - a connection that failed has nothing more to say here
            pass
        if self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # retrieved: no "exception never retrieved" noise


class McpConnection:
    """One server, from one worker: its session, its slots, and the texts it may show."""

    def __init__(self, name: str, config: McpServerConfig, environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.config = config
        self._environ = environ
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self._closing: set[asyncio.Task[None]] = set()
        #: Sessions started so far (a stdio server's processes): one for a server that never fails.
        self.connects = 0
        self.redact = redactor(config.secrets(self.environ))

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def _make_client(self) -> Client:
        server = self.config.expanded(self.environ)  # here, and only here, ${VAR}s take their values
        secrets = server.secrets(self.environ) + self.config.secrets(self.environ)
        self.redact = redactor(secrets)
        _guard_logs(secrets)
        if server.command is not None:
            params = StdioServerParameters(command=server.command, args=server.args, env=server.env or None)
            return Client(params, cache=None, client_info=CLIENT_INFO)
        assert server.url is not None
        return Client(cast(Any, _http_transport(server.url, server.headers, server.connect_timeout)), cache=None, client_info=CLIENT_INFO)

    async def _live(self, timeout: float) -> tuple[_Session, Client]:
        """The current session, connected now if there is none or it died."""
        async with self._lock:
            session = self._session
            if session is None or not session.usable:
                if session is not None:
                    self._retire(session)
                session = self._session = _Session(self._make_client)
                self.connects += 1
            try:
                client = await session.client(min(timeout, self.config.connect_timeout))
            except BaseException as exc:
                self._retire(session)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                raise McpUnavailable(self._why(exc, f"could not connect within {self.config.connect_timeout:g}s")) from None
        return session, client

    def _retire(self, session: _Session) -> None:
        """No new call uses ``session``; it closes once its calls in flight have ended."""
        session.retired = True
        if self._session is session:
            self._session = None
        if session.in_flight == 0 and not session.closing:
            session.closing = True
            task = asyncio.create_task(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _release(self, session: _Session) -> None:
        session.in_flight -= 1
        if session.retired and session.in_flight == 0:
            self._retire(session)

    def _why(self, exc: BaseException, timed_out: str) -> str:
        if isinstance(exc, asyncio.TimeoutError | TimeoutError):
            return f"MCP server {self.name!r} {timed_out}"
        while isinstance(exc, BaseExceptionGroup):  # the SDK's task groups nest them
            exc = exc.exceptions[0]
        return self.redact(f"MCP server {self.name!r}: {type(exc).__name__}: {exc}")[:1_000]

    async def list_tools(self) -> list[mcp.Tool]:
        """Every tool the server offers (all pages), within ``connect_timeout``.

        Raises:
            McpUnavailable: the server could not be reached or did not answer in time.
            McpErrorResponse: it answered, but not with a valid tool list.
        """
        deadline = time.monotonic() + self.config.connect_timeout
        session, client = await self._live(self.config.connect_timeout)
        session.in_flight += 1
        tools: list[mcp.Tool] = []
        try:
            cursor: str | None = None
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                for _ in range(MAX_LIST_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except MCPError as exc:
            if exc.code == mcp.CONNECTION_CLOSED:
                session.retired = True
                raise McpUnavailable(self._why(exc, "")) from None
            raise McpErrorResponse(self.redact(f"MCP server {self.name!r} refused tools/list: {exc}"), exc.code) from None
        except pydantic.ValidationError as exc:
            raise McpErrorResponse(f"MCP server {self.name!r} answered tools/list with something that is not MCP ({_first_problem(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - any transport failure: the server is unavailable for now
            session.retired = True
            raise McpUnavailable(self._why(exc, f"did not list its tools within {self.config.connect_timeout:g}s")) from None
        finally:
            session.used_at = time.monotonic()
            self._release(session)
        return tools

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        meta: dict[str, Any],
        timeout: float,
        probe: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> mcp.CallToolResult:
        """Call tool ``name`` once, within ``timeout`` seconds (waiting for a slot included).

        Args:
            meta: The request's ``_meta`` (the idempotency key travels there).
            probe: First check that a connection idle for a while still answers (``tools/list``),
                and start a new one if not: for calls that must not be sent into a dead connection.
            before_send: Awaited when everything is ready, right before the request is sent; what it
                raises is raised as is, and nothing is sent.

        Raises:
            McpUnavailable: nothing was sent (no connection, no free slot in time).
            McpCallLost: sent, but no answer came back in time or the connection closed.
            McpErrorResponse: the server answered with an error that is not a tool result.
        """
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise McpUnavailable(f"MCP server {self.name!r}: all {self.config.max_concurrent} call slots stayed busy for {timeout:g}s", busy=True) from None
        try:
            connecting = time.monotonic()
            session, client = await self._live(self.config.connect_timeout)
            deadline += time.monotonic() - connecting  # starting the server is not the call's time
            if probe and time.monotonic() - session.used_at > PROBE_AFTER_IDLE:
                session, client = await self._probed(session, client, deadline)
            if before_send is not None:
                await before_send()
            session.in_flight += 1
            try:
                return await self._send(session, client, name, arguments, meta, deadline, timeout)
            finally:
                session.used_at = time.monotonic()
                self._release(session)
        finally:
            self._slots.release()

    async def _probed(self, session: _Session, client: Client, deadline: float) -> tuple[_Session, Client]:
        """``session`` if it still answers, else a new one (a stdio server that died is started again)."""
        try:
            async with asyncio.timeout(max(0.1, min(deadline - time.monotonic(), self.config.connect_timeout))):
                await client.list_tools()
            return session, client
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: BLE001 - any failure means: not this connection
            log.info("MCP server %r did not answer a probe; connecting again", self.name)
            async with self._lock:
                self._retire(session)
            return await self._live(max(0.1, deadline - time.monotonic()))

    async def _send(
        self, session: _Session, client: Client, name: str, arguments: dict[str, Any], meta: dict[str, Any], deadline: float, timeout: float
    ) -> mcp.CallToolResult:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                return await client.call_tool(name, arguments, meta=cast(Any, meta))
        except TimeoutError:
            # A server that hangs, or one still sending a huge answer: this connection is not trusted again.
            session.retired = True
            raise McpCallLost(f"MCP server {self.name!r} did not answer {name} within {timeout:g}s", timed_out=True) from None
        except MCPError as exc:
            if exc.code in (mcp.CONNECTION_CLOSED, mcp.REQUEST_TIMEOUT):
                session.retired = True
                raise McpCallLost(self._why(exc, ""), timed_out=exc.code == mcp.REQUEST_TIMEOUT) from None
            raise McpErrorResponse(self.redact(f"MCP server {self.name!r} answered {name} with error {exc.code}: {exc}"), exc.code) from None
        except pydantic.ValidationError as exc:
            raise McpErrorResponse(f"MCP server {self.name!r} answered {name} with a result that is not valid ({self.redact(_first_problem(exc))})") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a transport failure after the request left: its outcome is unknown
            session.retired = True
            raise McpCallLost(self._why(exc, ""), timed_out=False) from None

    async def close(self) -> None:
        """Close the session (a stdio server is stopped) and wait for those closing."""
        async with self._lock:
            if self._session is not None:
                session, self._session = self._session, None
                session.retired = session.closing = True
                await session.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _first_problem(exc: pydantic.ValidationError) -> str:
    """Where and what the first validation problem is, without the value (it may be anything the server sent)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f"; {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"[:500]


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str], connect_timeout: float) -> AsyncIterator[Any]:
    """Streamable HTTP with the server's headers, over an HTTP client this connection owns."""
    # No read timeout of its own: every call is bounded by its tool's timeout, which may be longer.
    timeout = httpx2.Timeout(30.0, connect=connect_timeout, read=None)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            yield streams
