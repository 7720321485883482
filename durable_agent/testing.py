"""A test kit for agents built on durable-agent.

:class:`ScriptedModel` stands in for Claude: it returns the replies you script,
in order, checks what it was sent, and fails loudly when the script runs out.
Register it for a model name (``register_provider("scripted", model)``) and use
``model = "scripted"`` in a profile or the run input; the worker must run in the
same process (as in tests).

:class:`PlanFollowingModel` plays a prompt-injected Claude: it follows the plan
written in the conversation (``CALL tool {...}`` lines), whoever wrote it, which
is the simplest way to test what a run does when its model does what it is told.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from durable_agent.models.base import ModelError, ModelRequest, ModelResponse
from durable_agent.retry import ErrorKind
from durable_agent.schemas import Usage


def tool_use(name: str, args: dict[str, Any] | None = None, *, text: str = "", id: str | None = None) -> dict[str, Any]:
    """A scripted reply that calls ``name`` with ``args``."""
    return {"text": text, "tool": name, "args": args or {}, "id": id}


def tool_uses(*calls: dict[str, Any], text: str = "") -> dict[str, Any]:
    """A scripted reply with several tool calls in one turn, each made with :func:`tool_use`."""
    return {"text": text, "tools": list(calls)}


def answer(text: str) -> dict[str, Any]:
    """A scripted final answer."""
    return {"text": text}


def fail(kind: ErrorKind, message: str = "scripted failure", retry_after: float | None = None) -> dict[str, Any]:
    """A scripted model failure of ``kind``."""
    return {"error": kind, "message": message, "retry_after": retry_after}


class ScriptExhausted(AssertionError):
    """The agent asked the scripted model for more replies than were scripted."""


@dataclass
class ScriptedModel:
    """Replies from a script, in order. ``requests`` keeps every request it was sent."""

    script: list[dict[str, Any]]
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=1000, output_tokens=100))
    delay: float = 0.0
    on_request: Callable[[ModelRequest], None] | None = None
    requests: list[ModelRequest] = field(default_factory=list)
    summary_requests: list[ModelRequest] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if request.purpose == "summary":
            # Compaction's summaries do not take replies from the script: a fixed text, kept for checks.
            self.summary_requests.append(request)
            return ModelResponse(
                content=[{"type": "text", "text": f"summary #{len(self.summary_requests)} of the work so far"}],
                usage=self.usage.model_copy(),
                stop_reason="end_turn",
                model=request.model,
            )
        self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.script:
            raise ScriptExhausted(f"scripted model ran out of replies after {len(self.requests) - 1} calls")
        item = self.script.pop(0)
        if "error" in item:
            raise ModelError(item["error"], item["message"], retry_after=item.get("retry_after"))
        content: list[dict[str, Any]] = []
        if item.get("text"):
            content.append({"type": "text", "text": item["text"]})
        calls = item.get("tools") or ([item] if item.get("tool") else [])
        for n, call in enumerate(calls):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_scripted_{len(self.requests):04d}" + (f"_{n}" if n else ""),
                    "name": call["tool"],
                    "input": call.get("args") or {},
                }
            )
        return ModelResponse(
            content=content,
            usage=self.usage.model_copy(),
            stop_reason="tool_use" if calls else "end_turn",
            model=request.model,
        )

    def last_tool_result(self) -> dict[str, Any] | None:
        """The last tool_result block the model was sent (what the agent observed)."""
        for request in reversed(self.requests):
            for message in reversed(request.messages):
                for block in reversed(message.get("content") or []):
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        return block
        return None

    def tool_results(self) -> list[dict[str, Any]]:
        """Every tool_result block in the latest request, oldest first."""
        if not self.requests:
            return []
        out = []
        for message in self.requests[-1].messages:
            for block in message.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append(block)
        return out


#: A step of a plan written in a conversation: ``CALL tool_name {"json": "arguments"}`` on a line of its own.
PLAN_STEP = re.compile(r"^CALL ([A-Za-z0-9_.-]+) (\{.*\})[ \t]*$", re.MULTILINE)
#: A plan's closing words: ``ANSWER text`` on a line of its own.
PLAN_ANSWER = re.compile(r"^ANSWER (.+)$", re.MULTILINE)
#: In a plan step's arguments: the first ref named by an elision note in the conversation.
ELIDED = "$ELIDED"
_ELIDED_REF = re.compile(r"Call read_result with ref \"(sha256:[0-9a-f]{64})\"")


@dataclass
class PlanFollowingModel:
    """Stands in for a prompt-injected Claude: it does whatever the conversation tells it to.

    Every line ``CALL tool {"arg": ...}`` in the conversation (the task, and any tool result
    too: a prompt injection) is a step of the plan, taken in order. A step is done once the
    conversation holds a call of that tool with those arguments (as many times as the plan
    lists it), so the plan is re-read from whatever the conversation says at each call:
    change the conversation, and the model follows the new plan. Once every step is done,
    it answers with the plan's ``ANSWER`` line, else with the last tool result it saw (so
    what a run could read shows up in its answer). ``$ELIDED`` in a step's arguments is the
    first ref an elision note names, as a model reading a result back would use it.
    """

    usage: Usage = field(default_factory=lambda: Usage(input_tokens=1000, output_tokens=100))
    requests: list[ModelRequest] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if request.purpose == "summary":
            return ModelResponse(content=[{"type": "text", "text": "summary of the work so far"}], usage=self.usage.model_copy(),
                                 stop_reason="end_turn", model=request.model)
        self.requests.append(request)
        texts: list[str] = []
        done: dict[str, int] = {}
        last_result = ""
        for message in request.messages:
            content = message.get("content")
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            for block in blocks:
                kind = block.get("type")
                if kind == "text":
                    texts.append(str(block.get("text", "")))
                elif kind == "tool_result":
                    result = block.get("content")
                    last_result = result if isinstance(result, str) else "\n".join(str(b.get("text", "")) for b in result or [])
                    texts.append(last_result)
                elif kind == "tool_use":
                    key = _step_key(block["name"], block.get("input") or {})
                    done[key] = done.get(key, 0) + 1
        text = "\n".join(texts)
        elided = _ELIDED_REF.findall(text)
        for name, raw in PLAN_STEP.findall(text):
            args = json.loads(raw.replace(ELIDED, elided[0] if elided else ELIDED))
            key = _step_key(name, args)
            if done.get(key, 0) > 0:
                done[key] -= 1
                continue
            call = {"type": "tool_use", "id": f"toolu_plan_{len(self.requests):04d}", "name": name, "input": args}
            return ModelResponse(content=[call], usage=self.usage.model_copy(), stop_reason="tool_use", model=request.model)
        closing = PLAN_ANSWER.findall(text)
        answer_text = closing[-1] if closing else last_result or "done"
        return ModelResponse(content=[{"type": "text", "text": answer_text}], usage=self.usage.model_copy(),
                             stop_reason="end_turn", model=request.model)


def _step_key(name: str, args: dict[str, Any]) -> str:
    return name + json.dumps(args, sort_keys=True)
