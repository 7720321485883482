"""The ``@tool`` decorator and the one registry every part of the program reads.

A tool is a plain typed Python function. Its JSON schema (what the model sees)
comes from the type hints through pydantic, its description from the docstring,
and its policy metadata (read-only, idempotent, destructive, risk, money, rate limit, retry)
from the decorator. The name is typed once: the function's name, or ``name=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import math
import re
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict

from durable_agent.errors import InvalidToolArguments, ToolDefinitionError
from durable_agent.schemas import ToolInfo

Risk = Literal["low", "medium", "high"]

_RATE_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolContext:
    """What a running tool may know about its call.

    ``idempotency_key`` is the same on every retry of the same call, also after a
    worker crash: pass it to the system the tool changes, so that work done once
    is never done twice.
    """

    idempotency_key: str
    session_id: str
    agent: str
    step: int
    attempt: int
    heartbeat: Callable[..., None] = field(default=lambda *details: None)


_current_context: contextvars.ContextVar[ToolContext | None] = contextvars.ContextVar(
    "durable_agent_tool_context", default=None
)


def tool_context() -> ToolContext:
    """Return the context of the tool call in progress.

    Raises:
        RuntimeError: when called outside a tool call.
    """
    ctx = _current_context.get()
    if ctx is None:
        raise RuntimeError("tool_context() is only available while a tool runs")
    return ctx


@dataclass
class Tool:
    """A registered tool: the function, its argument model and its policy metadata."""

    fn: Callable[..., Any]
    info: ToolInfo
    args_model: type[BaseModel]

    @property
    def name(self) -> str:
        return self.info.name

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check ``args`` against the schema; return them coerced.

        Raises:
            InvalidToolArguments: with pydantic's description of each bad field.
        """
        try:
            model = self.args_model.model_validate(args)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidToolArguments(f"invalid arguments for {self.name}: {problems}") from None
        return {name: getattr(model, name) for name in self.args_model.model_fields}

    async def invoke(self, args: dict[str, Any], context: ToolContext, executor: Executor | None = None) -> Any:
        """Validate ``args`` and run the tool with ``context`` readable through :func:`tool_context`.

        A synchronous tool runs in ``executor`` (the worker's bounded pool; the loop's
        default pool without one). A thread cannot be interrupted, so when the call is
        cancelled while a tool that changes the world runs, the cancellation is raised
        only once the function has returned: nobody is told "cancelled" while a refund
        is still committing. A read-only tool's thread is left to finish on its own.
        """
        clean = self.validate(args)
        token = _current_context.set(context)
        try:
            if inspect.iscoroutinefunction(self.fn):
                return await self.fn(**clean)
            # Run in a copy of this context, so tool_context() works in sync tools too.
            call = functools.partial(contextvars.copy_context().run, self.fn, **clean)
            running = asyncio.get_running_loop().run_in_executor(executor, call)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                if not self.info.read_only:
                    with contextlib.suppress(Exception):
                        await running
                raise
        finally:
            _current_context.reset(token)


class ToolRegistry:
    """Name -> :class:`Tool`. One per process; ``@tool`` fills the default one."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, item: Tool) -> None:
        existing = self._tools.get(item.name)
        if existing is not None and existing.fn is not item.fn:
            same_origin = (
                getattr(existing.fn, "__module__", None) == getattr(item.fn, "__module__", None)
                and getattr(existing.fn, "__qualname__", None) == getattr(item.fn, "__qualname__", None)
            )
            if not same_origin:
                raise ToolDefinitionError(
                    f"tool name {item.name!r} is already taken by "
                    f"{existing.fn.__module__}.{existing.fn.__qualname__}"
                )
        self._tools[item.name] = item

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)


registry = ToolRegistry()


def parse_rate_limit(spec: str) -> tuple[int, float]:
    """Parse ``"10/min"`` into ``(10, 60.0)``: calls per period in seconds.

    The unit may carry a count: ``"2/10s"`` is two calls per ten seconds.

    Raises:
        ValueError: when the text is not ``N/unit`` or ``N/Kunit`` with unit s, min, hour or day.
    """
    match = _RATE_LIMIT.match(spec)
    if not match or int(match.group(1)) < 1 or (match.group(2) is not None and float(match.group(2)) <= 0):
        raise ValueError(
            f"rate limit {spec!r} is not of the form 'N/s', 'N/min', 'N/hour', 'N/day' or e.g. 'N/10s' (N >= 1)"
        )
    unit = match.group(3)
    period = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}.get(unit, 86400)
    return int(match.group(1)), float(match.group(2) or 1) * period


def _checked_rate_limit(spec: str) -> str:
    parse_rate_limit(spec)
    return spec


#: A rate limit as configuration writes it (``"10/min"``), refused at load when it does not parse.
RateLimitText = Annotated[str, AfterValidator(_checked_rate_limit)]


def _args_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    signature = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception as exc:  # a NameError in a string annotation, say
        raise ToolDefinitionError(f"tool {name!r}: cannot read its type hints: {exc}") from exc
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {name!r}: *args and **kwargs are not supported; name each argument")
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"tool {name!r}: positional-only argument {param.name!r} is not supported")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model_name = "".join(part.capitalize() for part in re.split(r"[_-]", name)) + "Args"
    # Infinity and NaN (also as the strings a model may send) would slip past every amount limit.
    return pydantic.create_model(model_name, __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **fields)


def _description(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    # The model sees the summary and the body; Google-style sections stay in.
    return doc.strip()


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    read_only: bool = False,
    destructive: bool = False,
    risk: Risk | None = None,
    amount_arg: str | None = None,
    currency_arg: str | None = None,
    protected: bool = False,
    timeout: float = 60.0,
    retry: str = "tool_default",
    rate_limit: str | None = None,
    rate_limit_wait: bool = True,
    heartbeat: float | None = None,
    idempotent: bool = False,
) -> Any:
    """Declare a function as a tool the agent may call.

    Usable bare (``@tool``) or with metadata (``@tool(read_only=True)``).

    Args:
        name: Tool name the model sees; the function's name by default.
        description: What the model reads; the docstring by default.
        read_only: The tool changes nothing (allowed in ``read_only`` autonomy).
        destructive: The tool destroys or cancels something (waits for approval when supervised).
        risk: ``low``, ``medium`` or ``high``; ``high`` for destructive tools by default.
        amount_arg: The argument that carries money, compared with the profile's ``max_amount``.
        currency_arg: The argument that carries the currency of ``amount_arg``.
        protected: Always waits for approval when supervised.
        timeout: Seconds one attempt may take.
        retry: Name of an error-kind retry policy (see :mod:`durable_agent.retry`).
        rate_limit: e.g. ``"10/min"``, shared by every run on every worker.
        rate_limit_wait: Over the limit, wait durably for a free slot (the default), or
            ``False``: tell the model at once that the tool is rate limited.
        heartbeat: Seconds between heartbeats (sent for the tool while it runs); a
            worker that dies mid-call is noticed after 3x this (at least 5 s).
        idempotent: Running the tool twice does what running it once does (it passes its
            idempotency key to what it changes). Only read-only and idempotent tools are
            run again after a timeout; any other tool that times out is not, and the model
            is told its outcome is unknown (it may have done its work).

    Raises:
        ToolDefinitionError: when the metadata or the signature is invalid.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or func.__name__
        if not _TOOL_NAME.match(tool_name):
            raise ToolDefinitionError(f"tool name {tool_name!r} must match {_TOOL_NAME.pattern}")
        if read_only and destructive:
            raise ToolDefinitionError(f"tool {tool_name!r} cannot be both read_only and destructive")
        if risk is not None and risk not in ("low", "medium", "high"):
            raise ToolDefinitionError(f"tool {tool_name!r}: risk must be low, medium or high, not {risk!r}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ToolDefinitionError(f"tool {tool_name!r}: timeout must be a positive finite number of seconds")
        if heartbeat is not None and not (math.isfinite(heartbeat) and heartbeat > 0):
            raise ToolDefinitionError(f"tool {tool_name!r}: heartbeat must be a positive finite number of seconds")
        if rate_limit is not None:
            try:
                parse_rate_limit(rate_limit)
            except ValueError as exc:
                raise ToolDefinitionError(f"tool {tool_name!r}: {exc}") from None
        from durable_agent.retry import TOOL_RETRY_POLICIES  # late: retry imports schemas only

        if retry not in TOOL_RETRY_POLICIES:
            raise ToolDefinitionError(
                f"tool {tool_name!r}: unknown retry policy {retry!r}; choose one of {sorted(TOOL_RETRY_POLICIES)}"
            )
        args_model = _args_model(func, tool_name)
        for arg in (amount_arg, currency_arg):
            if arg is not None and arg not in args_model.model_fields:
                raise ToolDefinitionError(f"tool {tool_name!r}: {arg!r} is not one of its arguments")
        schema = args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        info = ToolInfo(
            name=tool_name,
            description=description or _description(func) or tool_name,
            input_schema=schema,
            read_only=read_only,
            destructive=destructive,
            risk=risk or ("high" if destructive else "low"),
            amount_arg=amount_arg,
            currency_arg=currency_arg,
            protected=protected,
            timeout_seconds=float(timeout),
            retry=retry,
            rate_limit=rate_limit,
            rate_limit_wait=rate_limit_wait,
            heartbeat_seconds=heartbeat,
            idempotent=idempotent,
        )
        registry.register(Tool(fn=func, info=info, args_model=args_model))

        func.__durable_agent_tool__ = info  # type: ignore[attr-defined]
        return func

    if fn is not None:
        return decorate(fn)
    return decorate
