"""Remote tools: ``[remote_tools.NAME]``, activities that other workers serve on their own task queues.

A remote tool is another team's activity (Go, Java, TypeScript or Python) that an
agent may call: the workflow schedules activity ``activity`` on ``task_queue``
with the model's arguments (one JSON object) and takes its result (one JSON
value). Nothing of that code is imported here; what durable-agent knows of the
tool is this configuration: its description and JSON Schema (what the model
sees, and what the arguments are checked against before anything is scheduled)
and the policy keys every tool has.

Pure: validated when the worker starts (a bad schema or name stops it, naming
the file and key), turned into a :class:`~durable_agent.schemas.ToolInfo` when a
run starts, and checked in the workflow (:func:`argument_problem`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jsonschema
from pydantic import Field, field_validator, model_validator

from durable_agent import contracts
from durable_agent.errors import ConfigError
from durable_agent.mcp.config import MAX_TOOL_NAME
from durable_agent.retry import TOOL_RETRY_POLICIES
from durable_agent.schemas import RemoteTarget, StrictModel, ToolInfo
from durable_agent.tools import RateLimitText

#: The names the model may call a tool by (the Messages API's rule).
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Longest error text about arguments shown to the model.
PROBLEM_CHARS = 600


class RemoteToolConfig(StrictModel):
    """``[remote_tools.NAME]``: an activity served by another worker, and the policy that gates it."""

    task_queue: str = Field(min_length=1, description="The task queue the other team's worker polls.")
    activity: str = Field(min_length=1, description="The activity type to schedule there (its registered name).")
    description: str = Field(min_length=1, description="What the tool does, as the model reads it.")
    input_schema: dict[str, Any] = Field(description="A JSON Schema object: the arguments the model gives, checked before the call.")
    read_only: bool = Field(default=False, description="The tool changes nothing (allowed in read_only autonomy; retried after a timeout).")
    destructive: bool = Field(default=False, description="Waits for approval when supervised.")
    idempotent: bool = Field(default=False, description="Safe to run again after a timeout (the activity id is its idempotency key).")
    risk: Literal["low", "medium", "high"] = "low"
    amount_arg: str | None = Field(default=None, description="The argument that carries money (compared with max_amount).")
    currency_arg: str | None = Field(default=None, description="The argument that carries its currency.")
    protected: bool = Field(default=False, description="Always waits for approval when supervised.")
    rate_limit: RateLimitText | None = Field(default=None, description="'N/unit', shared by every run and worker.")
    rate_limit_wait: bool = Field(default=True, description="Over the limit: wait for a slot, or tell the model at once.")
    timeout: float = Field(default=60.0, gt=0, le=86_400, description="Seconds one attempt may run (start-to-close).")
    retry: str = Field(default="tool_default", description="An error-kind retry plan: tool_default, no_retry or patient.")
    schedule_to_start: float | None = Field(
        default=None, gt=0, le=86_400,
        description="Seconds a call may wait for a worker of task_queue to pick it up (default: timeout); then the tool is unavailable.",
    )
    heartbeat: float | None = Field(
        default=None, gt=0, le=86_400,
        description="Heartbeat timeout in seconds, only for activities that heartbeat; unset: none (a dead worker is found by timeout).",
    )

    @field_validator("input_schema")
    @classmethod
    def _schema_is_an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON Schema object: type = "object", with its properties')
        try:
            jsonschema.validators.validator_for(value, default=jsonschema.Draft202012Validator).check_schema(value)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) or "(top)"
            raise ValueError(f"is not a valid JSON Schema at {where}: {exc.message}") from None
        properties = value.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError("properties must be a table of argument name -> schema")
        for ref in _refs(value):
            if not ref.startswith("#"):
                raise ValueError(f"$ref {ref!r}: a $ref may only point inside the schema ('#/...'); nothing is fetched when a call is checked")
            if not _points_somewhere(value, ref[1:]):
                raise ValueError(f"$ref {ref!r} points to nothing in the schema")
        return value

    @field_validator("retry")
    @classmethod
    def _retry_plan_known(cls, value: str) -> str:
        if value not in TOOL_RETRY_POLICIES:
            raise ValueError(f"no retry plan named {value!r} (known: {', '.join(sorted(TOOL_RETRY_POLICIES))})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "RemoteToolConfig":
        if self.read_only and self.destructive:
            raise ValueError("a tool cannot be both read_only and destructive")
        properties = self.input_schema.get("properties", {})
        for key in ("amount_arg", "currency_arg"):
            arg = getattr(self, key)
            if arg is not None and arg not in properties:
                raise ValueError(f"{key} {arg!r} is not one of the properties of input_schema ({', '.join(sorted(properties)) or 'none'})")
        return self

    def argument_names(self) -> list[str]:
        """The arguments its schema declares."""
        return list(self.input_schema.get("properties", {}))


def _refs(node: Any) -> list[str]:
    """Every ``$ref`` in a schema."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for child in node.values() for ref in _refs(child)]
    if isinstance(node, list):
        return [ref for child in node for ref in _refs(child)]
    return []


def _points_somewhere(schema: dict[str, Any], pointer: str) -> bool:
    """Whether the JSON pointer (``/$defs/name``) names a part of ``schema``."""
    node: Any = schema
    for part in [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]] if pointer else []:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def tool_info(name: str, config: RemoteToolConfig) -> ToolInfo:
    """What the workflow knows of remote tool ``name``: its policy, schema and where it is served."""
    return ToolInfo(
        name=name,
        description=config.description,
        input_schema=config.input_schema,
        read_only=config.read_only,
        destructive=config.destructive,
        # As with a profile's tool_policy: destructive means high risk unless said otherwise.
        risk="high" if config.destructive and config.risk == "low" else config.risk,
        amount_arg=config.amount_arg,
        currency_arg=config.currency_arg,
        protected=config.protected,
        timeout_seconds=config.timeout,
        retry=config.retry,
        rate_limit=config.rate_limit,
        rate_limit_wait=config.rate_limit_wait,
        idempotent=config.idempotent,
        remote=RemoteTarget(
            task_queue=config.task_queue,
            activity=config.activity,
            schedule_to_start_seconds=config.schedule_to_start or config.timeout,
            heartbeat_timeout_seconds=config.heartbeat,
        ),
    )


def argument_problem(schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    """Why ``args`` do not fit ``schema`` (the first problems, for the model), or ``None``.

    Deterministic and free of I/O: the workflow calls it before it schedules anything.
    """
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        errors = sorted(validator_class(schema).iter_errors(args), key=lambda e: list(e.absolute_path))
    except Exception as exc:  # noqa: BLE001 - a $ref nothing resolves: refuse the call, never fail the workflow task
        return f"its input_schema cannot be applied ({type(exc).__name__}: {str(exc)[:200]}); tell the operator"
    if not errors:
        return None
    lines = []
    for error in errors[:3]:
        where = ".".join(str(part) for part in error.absolute_path)
        lines.append(f"{where}: {error.message}" if where else error.message)
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return ("; ".join(lines) + more)[:PROBLEM_CHARS]


def check_remote_tools(file: str, tools: Mapping[str, RemoteToolConfig], is_python_tool: Callable[[str], bool]) -> None:
    """The names of ``[remote_tools]``, checked when the worker starts.

    Raises:
        ConfigError: a name the model cannot be given (over 64 characters, characters outside
            ``[A-Za-z0-9_-]``), one an MCP tool's or the built-in ``read_result`` would shadow,
            or one a Python ``@tool`` already has.
    """
    for name in tools:
        key = f"remote_tools.{name}"
        if len(name) > MAX_TOOL_NAME:
            raise ConfigError(file, key, f"the name is {len(name)} characters, over the API's {MAX_TOOL_NAME}")
        if not _TOOL_NAME.match(name):
            raise ConfigError(file, key, "a tool name may only have letters, digits, '_' and '-'")
        if name.startswith("mcp__"):
            raise ConfigError(file, key, "names starting with 'mcp__' are the MCP servers' tools; choose another name")
        if name == contracts.TOOL_READ_RESULT:
            raise ConfigError(file, key, "read_result is a built-in tool; choose another name")
        if is_python_tool(name):
            raise ConfigError(file, key, f"a Python @tool is named {name!r} too; rename one of them")
