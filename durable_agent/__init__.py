"""durable-agent: production AI agents on Temporal.

Declare tools with :func:`tool`; read the current call's idempotency key with
:func:`tool_context`. Everything else is configured in ``agents.toml`` and run by
``worker.py``.
"""

from durable_agent.errors import ConfigError, ToolAuthError, ToolError, ToolRateLimited, ToolTimeout
from durable_agent.schemas import AgentInput, AgentResult, Autonomy
from durable_agent.tools import ToolContext, registry, tool, tool_context

__all__ = [
    "AgentInput",
    "AgentResult",
    "Autonomy",
    "ConfigError",
    "ToolAuthError",
    "ToolContext",
    "ToolError",
    "ToolRateLimited",
    "ToolTimeout",
    "registry",
    "tool",
    "tool_context",
]
