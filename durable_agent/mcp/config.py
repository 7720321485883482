"""MCP servers as configured: ``[mcp_servers.NAME]`` in ``agents.toml`` and the ``mcpServers`` of a ``.mcp.json``.

Pure: no connection is made here. ``${VAR}`` (or ``${VAR:-default}``) in a
command, an argument, an env value, a URL or a header names a variable of the
worker's environment; it is checked when the worker starts and expanded only at
connect time (:meth:`McpServerConfig.expanded`), so its value never reaches a
history, a record or a log. Every value of ``headers`` and ``env`` counts as a
secret: :func:`redactor` makes error texts safe to show.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field, PrivateAttr, model_validator

from durable_agent.errors import ConfigError
from durable_agent.schemas import StrictModel

#: The Messages API's limit on tool names, and the characters it allows.
MAX_TOOL_NAME = 64
_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
#: Longest server name, as the model sees it (the tool's own name needs room in the 64).
MAX_SERVER_NAME = 40
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: Keys of a ``.mcp.json`` server entry that durable-agent reads; other tools' own keys are ignored there.
MCP_JSON_KEYS = ("type", "command", "args", "env", "url", "headers")
#: Where a server's tools are listed in a profile: ``"SERVER.*"`` or ``"SERVER.TOOL"``.
WILDCARD = "*"


def normalize(name: str) -> str:
    """A name as the model sees it: every character outside ``[A-Za-z0-9_-]`` becomes ``_`` (Claude Code's rule)."""
    return _ALLOWED.sub("_", name)


def model_facing_name(server: str, tool: str) -> str:
    """``mcp__SERVER__TOOL``: the name the model calls an MCP tool by (Claude Code's naming)."""
    return f"mcp__{normalize(server)}__{normalize(tool)}"


def is_mcp_entry(entry: str) -> bool:
    """A profile's ``tools`` entry that names MCP tools (``"SERVER.*"``, ``"SERVER.TOOL"``); Python tool names have no dot."""
    return "." in entry


def split_entry(entry: str) -> tuple[str, str]:
    """``"tickets.create_ticket"`` -> ``("tickets", "create_ticket")``; the tool part may be ``*``."""
    server, _, tool = entry.partition(".")
    return server, tool


class McpSource(StrictModel):
    """Where a server was configured, for errors that name the file and key."""

    file: str
    key: str


class McpServerConfig(StrictModel):
    """One MCP server: streamable HTTP (``url``, ``headers``) or stdio (``command``, ``args``, ``env``)."""

    type: Literal["stdio", "http", "streamable-http"] | None = Field(
        default=None, description="Optional, as in .mcp.json: stdio with command, http with url."
    )
    command: str | None = Field(default=None, description="stdio: the program the worker starts and supervises.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="stdio: its environment, over PATH, HOME and a few more (nothing else of the worker's).",
    )
    url: str | None = Field(default=None, description="Streamable HTTP: the server's endpoint.")
    headers: dict[str, str] = Field(default_factory=dict, description="Streamable HTTP: sent with every request.")
    timeout: float = Field(default=60.0, gt=0, le=86_400, description="Seconds one tool call may take (tool_policy may say otherwise).")
    connect_timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds to start or reach the server and list its tools.")
    max_concurrent: int = Field(default=4, ge=1, le=1_000, description="Calls in flight at once from one worker.")
    max_result_bytes: int = Field(
        default=5_000_000, ge=1_000, le=200_000_000, description="A larger answer is dropped and reported as an error."
    )
    _source: McpSource = PrivateAttr(default_factory=lambda: McpSource(file="(in code)", key="mcp_servers"))

    @model_validator(mode="after")
    def _one_transport(self) -> "McpServerConfig":
        if (self.command is None) == (self.url is None):
            raise ValueError("set either command (a stdio server) or url (a streamable HTTP server)")
        if self.url is not None and (self.type == "stdio" or self.args or self.env):
            raise ValueError("a url server takes headers, not type stdio, args or env")
        if self.command is not None and (self.type in ("http", "streamable-http") or self.headers):
            raise ValueError("a command server takes args and env, not type http or headers")
        return self

    @property
    def source(self) -> McpSource:
        """The file and key this server came from."""
        return self._source

    @property
    def transport(self) -> str:
        """``stdio`` or ``http``."""
        return "stdio" if self.command is not None else "http"

    def describe(self) -> str:
        """The server as an operator reads it, with ``${VAR}`` left unexpanded and header and env values hidden."""
        if self.command is not None:
            return " ".join([self.command, *self.args]) + (f" (env: {', '.join(sorted(self.env))})" if self.env else "")
        headers = f" (headers: {', '.join(sorted(self.headers))})" if self.headers else ""
        return f"{self.url}{headers}"

    def variables(self) -> dict[str, list[tuple[str, str, str | None]]]:
        """Every ``${VAR}`` reference: the key path (``headers.Authorization``) -> ``[(name, text, default)]``."""
        found: dict[str, list[tuple[str, str, str | None]]] = {}
        for path, value in self._strings():
            refs = [(m.group(1), m.group(0), m.group(2)) for m in _VARIABLE.finditer(value)]
            if refs:
                found[path] = refs
        return found

    def missing_variables(self, environ: Mapping[str, str]) -> list[tuple[str, str]]:
        """``(key path, variable)`` for each reference to an unset variable that has no default."""
        return [
            (path, name)
            for path, refs in self.variables().items()
            for name, _text, default in refs
            if default is None and name not in environ
        ]

    def expanded(self, environ: Mapping[str, str]) -> "McpServerConfig":
        """A copy with every ``${VAR}`` replaced from ``environ``: kept in memory, never stored or logged.

        Raises:
            ConfigError: a variable is not set and has no default (naming the file, key and variable, not a value).
        """
        missing = self.missing_variables(environ)
        if missing:
            path, name = missing[0]
            raise ConfigError(self.source.file, f"{self.source.key}.{path}", f"${{{name}}} is not set in the worker's environment")

        def sub(text: str) -> str:
            return _VARIABLE.sub(lambda m: environ.get(m.group(1), m.group(2) or ""), text)

        copy = self.model_copy(
            update={
                "command": sub(self.command) if self.command is not None else None,
                "args": [sub(a) for a in self.args],
                "env": {k: sub(v) for k, v in self.env.items()},
                "url": sub(self.url) if self.url is not None else None,
                "headers": {k: sub(v) for k, v in self.headers.items()},
            }
        )
        copy._source = self._source
        return copy

    def secrets(self, environ: Mapping[str, str]) -> list[str]:
        """Values that must never be shown: every header and env value, and every referenced variable's value."""
        values = [environ.get(name, "") for refs in self.variables().values() for name, _text, _default in refs]
        shown = self.expanded(environ) if not self.missing_variables(environ) else self
        values.extend([*shown.headers.values(), *shown.env.values()])
        return [v for v in values if len(v) >= 4]

    def _strings(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.command is not None:
            out.append(("command", self.command))
        out.extend((f"args[{i}]", a) for i, a in enumerate(self.args))
        out.extend((f"env.{k}", v) for k, v in self.env.items())
        if self.url is not None:
            out.append(("url", self.url))
        out.extend((f"headers.{k}", v) for k, v in self.headers.items())
        return out

    def with_source(self, file: str, key: str) -> "McpServerConfig":
        """This server, marked as read from ``file`` under ``key``."""
        self._source = McpSource(file=file, key=key)
        return self


def redactor(secrets: list[str]) -> Callable[[str], str]:
    """A function that hides each of ``secrets`` in a text (longest first, so none shows in part)."""
    ordered = sorted(set(secrets), key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, "[hidden]")
        return text

    return redact


def read_mcp_json(path: Path) -> dict[str, McpServerConfig]:
    """The servers of a ``.mcp.json`` (Claude Code's and Claude Desktop's format), read as it is.

    Keys other tools add to an entry (``autoApprove``, ``description``...) are ignored;
    an entry with ``"disabled": true`` is left out.

    Raises:
        ConfigError: naming the file and key: not found, not JSON, no ``mcpServers`` object,
            a transport durable-agent does not speak (``sse``), a bad field.
    """
    file = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "not found (named by mcp_config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "(file)", f"cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(file, "(syntax)", f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("mcpServers"), dict):
        raise ConfigError(file, "mcpServers", "a .mcp.json is a JSON object with an mcpServers object")
    servers: dict[str, McpServerConfig] = {}
    for name, entry in raw["mcpServers"].items():
        key = f"mcpServers.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(file, key, "each server is a JSON object")
        if entry.get("disabled") is True:
            continue
        if entry.get("type") == "sse":
            raise ConfigError(file, f"{key}.type", "the SSE transport is not supported; use streamable HTTP (type \"http\")")
        fields = {k: v for k, v in entry.items() if k in MCP_JSON_KEYS}
        servers[name] = parse_server(fields, file, key)
    return servers


def parse_server(fields: dict[str, Any], file: str, key: str) -> McpServerConfig:
    """Validate one server's fields.

    Raises:
        ConfigError: naming the field at fault.
    """
    try:
        server = McpServerConfig.model_validate(fields)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(file, f"{key}.{where}" if where else key, err["msg"]) from None
    return server.with_source(file, key)


def merge_servers(
    toml_file: str, own: dict[str, McpServerConfig], mcp_json: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, McpServerConfig]:
    """The servers of ``agents.toml`` and of its ``.mcp.json``, checked together.

    Raises:
        ConfigError: a server named in both files, a server name the model cannot carry, or a
            ``${VAR}`` that is not set.
    """
    env = os.environ if environ is None else environ
    servers = {name: server.with_source(toml_file, f"mcp_servers.{name}") for name, server in own.items()}
    if mcp_json is not None:
        for name, server in read_mcp_json(mcp_json).items():
            if name in servers:
                raise ConfigError(
                    str(mcp_json), f"mcpServers.{name}", f"a server named {name!r} is also under [mcp_servers] in {toml_file}; rename one"
                )
            servers[name] = server
    prefixes: dict[str, str] = {}
    for name, server in servers.items():
        where = server.source
        if not name or "." in name or len(normalize(name)) > MAX_SERVER_NAME:
            # Profiles name its tools NAME.TOOL; the model sees them as mcp__NAME__TOOL.
            raise ConfigError(where.file, where.key, f"a server name is 1-{MAX_SERVER_NAME} characters without '.'")
        prefix = normalize(name)
        if prefix in prefixes:
            raise ConfigError(
                where.file, where.key, f"the model would see its tools as mcp__{prefix}__..., as those of the server {prefixes[prefix]!r}"
            )
        prefixes[prefix] = name
        missing = server.missing_variables(env)
        if missing:
            path, variable = missing[0]
            raise ConfigError(where.file, f"{where.key}.{path}", f"${{{variable}}} is not set in the worker's environment")
    return servers
