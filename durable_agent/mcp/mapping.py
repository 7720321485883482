"""From MCP to durable-agent: a server's tool becomes a :class:`ToolInfo`, its answer a tool result.

Pure functions over the MCP SDK's types. The annotations map onto the policy
(``readOnlyHint`` -> read-only, ``destructiveHint`` -> destructive,
``idempotentHint`` -> safe to send again), with MCP's own defaults: a tool that
says nothing is treated as one that may destroy something and must not be sent
twice, so under supervision it waits for a person.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durable_agent.mcp.config import MAX_TOOL_NAME, model_facing_name
from durable_agent.schemas import ToolInfo

if TYPE_CHECKING:  # the SDK's types are needed only once a server answers
    import mcp_types as mcp

#: Image types the Messages API reads; others are described in words.
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
#: Images passed to the model per result, and the largest one (base64 characters; the API's limit is 5 MB).
MAX_IMAGES = 4
MAX_IMAGE_BASE64 = 5_000_000
#: Longest tool description kept for the model.
MAX_DESCRIPTION = 10_000


@dataclass(frozen=True)
class McpTool:
    """One tool of one server, as listed: what the model sees and what the policy reads."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    read_only_hint: bool | None = None
    destructive_hint: bool | None = None
    idempotent_hint: bool | None = None

    @property
    def model_name(self) -> str:
        """``mcp__SERVER__TOOL``."""
        return model_facing_name(self.server, self.name)

    @property
    def entry(self) -> str:
        """``SERVER.TOOL``, as a profile names it."""
        return f"{self.server}.{self.name}"

    def info(self, timeout: float) -> ToolInfo:
        """The policy metadata the annotations give (before a profile's ``tool_policy``)."""
        read_only = self.read_only_hint is True
        # MCP's defaults: destructiveHint is true and idempotentHint false unless the server says otherwise.
        destructive = not read_only and self.destructive_hint is not False
        return ToolInfo(
            name=self.model_name,
            description=self.description,
            input_schema=self.input_schema,
            read_only=read_only,
            destructive=destructive,
            idempotent=read_only or self.idempotent_hint is True,
            risk="high" if destructive else "low",
            timeout_seconds=timeout,
        )

    def policy_text(self, info: ToolInfo) -> str:
        """The mapped policy in words, as ``durable-agent mcp list`` prints it."""
        return policy_text(info)


def policy_text(info: ToolInfo) -> str:
    """A tool's policy in words, as ``durable-agent mcp list`` prints it."""
    kind = "read-only" if info.read_only else ("destructive" if info.destructive else "writes")
    parts = [kind, "idempotent" if info.idempotent else "not idempotent", f"risk {info.risk}", f"timeout {info.timeout_seconds:g}s"]
    if info.protected:
        parts.append("protected")
    if info.amount_arg:
        parts.append(f"amount_arg {info.amount_arg}" + (f" ({info.currency_arg})" if info.currency_arg else ""))
    if info.rate_limit:
        parts.append(f"rate {info.rate_limit}")
    return ", ".join(parts)


def from_listing(server: str, tool: mcp.Tool) -> McpTool:
    """An :class:`McpTool` from a ``tools/list`` entry."""
    notes = tool.annotations
    description = tool.description or tool.title or (notes.title if notes else None) or tool.name
    schema = tool.input_schema if isinstance(tool.input_schema, dict) else {"__not_an_object__": repr(tool.input_schema)[:200]}
    return McpTool(
        server=server,
        name=tool.name,
        description=description[:MAX_DESCRIPTION],
        input_schema=dict(schema),
        read_only_hint=notes.read_only_hint if notes else None,
        destructive_hint=notes.destructive_hint if notes else None,
        idempotent_hint=notes.idempotent_hint if notes else None,
    )


def listing_problems(tools: list[McpTool]) -> dict[str, str]:
    """Tool name -> why the model cannot be given it: a bad schema, a name too long, two tools under one name."""
    problems: dict[str, str] = {}
    seen: dict[str, str] = {}
    for tool in tools:
        name = tool.model_name
        if not tool.name:
            problems[tool.name] = "a tool with an empty name"
        elif len(name) > MAX_TOOL_NAME:
            problems[tool.name] = f"the model-facing name {name} is {len(name)} characters, over the API's {MAX_TOOL_NAME}"
        elif tool.input_schema.get("type") != "object" or not isinstance(tool.input_schema.get("properties", {}), dict):
            problems[tool.name] = f"its inputSchema is not a JSON Schema object (type \"object\"): {json.dumps(tool.input_schema)[:200]}"
        elif name in seen:
            problems[tool.name] = f"it and {seen[name]!r} would both be called {name}"
            problems.setdefault(seen[name], f"it and {tool.name!r} would both be called {name}")
        seen.setdefault(name, tool.name)
    return problems


def shared_names(listings: dict[str, list[McpTool]]) -> dict[str, str]:
    """Server -> why, for tools of two servers that the model would see under one name (``a``'s ``_b``, ``a_``'s ``b``)."""
    seen: dict[str, McpTool] = {}
    found: dict[str, str] = {}
    for server, tools in listings.items():
        for tool in tools:
            other = seen.setdefault(tool.model_name, tool)
            if other is not tool:
                found[server] = f"its tool {tool.name!r} and {other.server!r}'s {other.name!r} would both be called {tool.model_name}"
    return found


@dataclass
class McpAnswer:
    """A ``tools/call`` result made into a tool result.

    ``output`` is what the model reads (text, or the structured content as JSON);
    ``images`` are content blocks the Messages API takes next to it.
    """

    output: Any
    is_error: bool
    images: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def answer_size(result: mcp.CallToolResult) -> int:
    """The answer's size in characters, roughly as it came over the wire."""
    import mcp_types as mcp

    size = len(json.dumps(result.structured_content, default=str)) if result.structured_content is not None else 0
    for block in result.content:
        if isinstance(block, mcp.TextContent):
            size += len(block.text)
        elif isinstance(block, mcp.ImageContent | mcp.AudioContent):
            size += len(block.data)
        elif isinstance(block, mcp.EmbeddedResource):
            resource = block.resource
            size += len(getattr(resource, "text", "") or getattr(resource, "blob", "") or "")
        else:
            size += 200
    return size


def convert(result: mcp.CallToolResult) -> McpAnswer:
    """Text, ``structuredContent`` and images of a result, as the model will see them."""
    import mcp_types as mcp

    texts: list[str] = []
    images: list[dict[str, Any]] = []
    notes: list[str] = []
    for block in result.content:
        if isinstance(block, mcp.TextContent):
            texts.append(block.text)
        elif isinstance(block, mcp.ImageContent):
            image, note = _image_block(block, len(images))
            if image is not None:
                images.append(image)
            else:
                texts.append(note)
                notes.append(note)
        elif isinstance(block, mcp.AudioContent):
            texts.append(f"[audio ({block.mime_type}, {len(block.data) * 3 // 4:,} bytes) not shown: the model cannot hear it]")
        elif isinstance(block, mcp.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            texts.append(text if isinstance(text, str) else f"[resource {resource.uri} ({resource.mime_type or 'binary'}) not shown]")
        elif isinstance(block, mcp.ResourceLink):
            texts.append(f"[resource link: {block.name} {block.uri}]")
    text = "\n".join(texts)
    output: Any = text
    structured = result.structured_content
    if structured is not None:
        if not texts:
            output = structured
        elif not _says_the_same(text, structured):
            output = f"{text}\n\nstructuredContent: {json.dumps(structured, ensure_ascii=False, default=str)}"
    if output == "" and not images:
        output = "(the tool returned no content)"
    return McpAnswer(output=output, is_error=bool(result.is_error), images=images, notes=notes)


def _says_the_same(text: str, structured: Any) -> bool:
    """The text is the structured content serialised (as the spec asks), or the value an SDK wrapped as ``{"result": ...}``."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    wrapped = structured.get("result") if isinstance(structured, dict) and len(structured) == 1 else None
    return parsed == structured or (wrapped is not None and (wrapped == text or wrapped == parsed))


def _image_block(block: mcp.ImageContent, count: int) -> tuple[dict[str, Any] | None, str]:
    size = len(block.data) * 3 // 4
    if block.mime_type not in IMAGE_TYPES:
        return None, f"[image ({block.mime_type}, {size:,} bytes) not shown: the model reads {', '.join(IMAGE_TYPES)}]"
    if count >= MAX_IMAGES:
        return None, f"[image ({block.mime_type}, {size:,} bytes) not shown: at most {MAX_IMAGES} images per result]"
    if len(block.data) > MAX_IMAGE_BASE64:
        return None, f"[image ({block.mime_type}, {size:,} bytes) not shown: over the API's 5 MB per image]"
    try:
        base64.b64decode(block.data, validate=True)
    except (binascii.Error, ValueError):
        return None, f"[image ({block.mime_type}) not shown: its data is not base64]"
    return {"type": "image", "source": {"type": "base64", "media_type": block.mime_type, "data": block.data}}, ""
