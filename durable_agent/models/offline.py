"""The offline model: deterministic, no network, no key.

It is what a newcomer gets without ``ANTHROPIC_API_KEY``, and it says so. It does
not understand language; it follows a fixed playbook that exercises the whole
machinery for real: for a support task it looks the order up, reads the
knowledge base, acts (refund or cancel, through the approval policy) and answers,
reacting to what the tools returned (an unknown order, a rejection, a timeout).
For any other agent it calls each read-only tool whose arguments it can fill
from the task, then answers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from durable_agent.context import estimate_request_tokens
from durable_agent.contracts import TOOL_READ_RESULT
from durable_agent.models.base import ModelRequest, ModelResponse
from durable_agent.schemas import Usage

OFFLINE_NOTICE = "[offline model: deterministic playbook, no LLM; set ANTHROPIC_API_KEY to use Claude]"

_ORDER = re.compile(r"\bord-[A-Za-z0-9_-]+", re.IGNORECASE)
_AMOUNT = re.compile(r"(?:\$\s*(\d[\d,]*(?:\.\d+)?))|(?:(\d[\d,]*(?:\.\d+)?)\s*(?:usd|dollars|eur|gbp)\b)", re.IGNORECASE)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class _Transcript:
    """What happened so far, read back from the conversation."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.task = _text_of(messages[0]["content"]) if messages else ""
        self.calls: list[dict[str, Any]] = []
        by_id: dict[str, dict[str, Any]] = {}
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if block.get("type") == "tool_use":
                    call = {"name": block["name"], "args": block.get("input", {}), "result": None, "is_error": False}
                    by_id[block["id"]] = call
                    self.calls.append(call)
                elif block.get("type") == "tool_result" and block.get("tool_use_id") in by_id:
                    call = by_id[block["tool_use_id"]]
                    call["result"] = _text_of(block.get("content"))
                    call["is_error"] = bool(block.get("is_error"))
        self.turns = sum(1 for m in messages if m.get("role") == "assistant")

    def last(self, name: str) -> dict[str, Any] | None:
        for call in reversed(self.calls):
            if call["name"] == name:
                return call
        return None


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class OfflineModel:
    """A deterministic stand-in for Claude (see the module docstring)."""

    async def count_tokens(self, request: ModelRequest) -> int:
        """The offline model's own count: the agent's local estimate, so it is always consistent."""
        return estimate_request_tokens(request.system, request.tools, request.messages)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if request.purpose == "summary":
            return self._summary(request)
        transcript = _Transcript(request.messages)
        # read_result is for reading back elided results; the playbook never needs it.
        tools = {t["name"]: t for t in request.tools if t["name"] != TOOL_READ_RESULT}
        reasoning, call = self._decide(transcript, tools)
        content: list[dict[str, Any]] = [{"type": "text", "text": reasoning}]
        if call is not None:
            name, args = call
            content.append({"type": "tool_use", "id": f"toolu_offline_{transcript.turns + 1:04d}", "name": name, "input": args})
        prompt_chars = len(request.system) + len(json.dumps(request.tools)) + sum(len(json.dumps(m)) for m in request.messages)
        return ModelResponse(
            content=content,
            usage=Usage(input_tokens=_tokens("x" * prompt_chars), output_tokens=_tokens(json.dumps(content))),
            stop_reason="tool_use" if call else "end_turn",
            model="offline",
        )

    @staticmethod
    def _summary(request: ModelRequest) -> ModelResponse:
        """A deterministic summary for compaction: the tool lines of the transcript, shortened."""
        transcript = _text_of(request.messages[-1]["content"]) if request.messages else ""
        lines = [line for line in transcript.splitlines() if line.startswith(("tool call", "tool result", "user:"))]
        kept = [line if len(line) <= 200 else line[:197] + "..." for line in lines[-40:]]
        summary = f"{OFFLINE_NOTICE} Summary of {len(lines)} transcript lines (the latest {len(kept)}):\n" + "\n".join(kept)
        content = [{"type": "text", "text": summary}]
        return ModelResponse(
            content=content,
            usage=Usage(input_tokens=_tokens(transcript), output_tokens=_tokens(summary)),
            stop_reason="end_turn",
            model="offline",
        )

    # The playbook ------------------------------------------------------------------

    def _decide(self, t: _Transcript, tools: dict[str, Any]) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        task_lower = t.task.lower()
        order = _ORDER.search(t.task)
        order_id = order.group(0).lower() if order else None
        wants_refund = "refund" in task_lower
        wants_cancel = "cancel" in task_lower

        if order_id and "lookup_order" in tools:
            looked = t.last("lookup_order")
            if looked is None:
                return f"{OFFLINE_NOTICE} First I look up order {order_id}.", ("lookup_order", {"order_id": order_id})
            if looked["is_error"]:
                return self._answer(t, f"I could not look up order {order_id}: {looked['result']}")
        if "search_kb" in tools and t.last("search_kb") is None and (wants_refund or wants_cancel or order_id):
            query = "refund policy" if wants_refund else ("cancellation policy" if wants_cancel else t.task[:80])
            return f"{OFFLINE_NOTICE} Next I check the knowledge base for the {query}.", ("search_kb", {"query": query})
        last_lookup = t.last("lookup_order")
        order_info = _json(last_lookup["result"]) if last_lookup else {}
        if wants_refund and order_id and "issue_refund" in tools and t.last("issue_refund") is None:
            amount_match = _AMOUNT.search(t.task)
            if amount_match:
                amount = float((amount_match.group(1) or amount_match.group(2)).replace(",", ""))
            else:
                amount = float(order_info.get("total", 0) or 0) - float(order_info.get("refunded", 0) or 0)
            currency = str(order_info.get("currency") or "USD")
            if amount <= 0:
                return self._answer(
                    t,
                    f"Order {order_id} is already fully refunded; there is nothing left to refund. "
                    "(The bundled demo shop keeps its refunds between runs: `durable-agent demo reset` restores its orders.)",
                )
            return (
                f"{OFFLINE_NOTICE} The policy allows it, so I refund {amount:g} {currency} on {order_id}.",
                ("issue_refund", {"order_id": order_id, "amount": amount, "currency": currency}),
            )
        if wants_cancel and order_id and "cancel_order" in tools and t.last("cancel_order") is None:
            return f"{OFFLINE_NOTICE} I cancel order {order_id} as asked.", ("cancel_order", {"order_id": order_id})
        if not t.calls:
            for name, spec in tools.items():
                args = self._fill_args(spec, t.task, order_id)
                if args is not None:
                    return f"{OFFLINE_NOTICE} I try the tool {name}.", (name, args)
        return self._answer(t, None)

    @staticmethod
    def _fill_args(spec: dict[str, Any], task: str, order_id: str | None) -> dict[str, Any] | None:
        schema = spec.get("input_schema", {})
        args: dict[str, Any] = {}
        for field in schema.get("required", []):
            prop = schema.get("properties", {}).get(field, {})
            if prop.get("type") != "string":
                return None
            args[field] = order_id if (order_id and "order" in field) else task
        return args

    @staticmethod
    def _answer(t: _Transcript, problem: str | None) -> tuple[str, None]:
        lines = [OFFLINE_NOTICE]
        if problem:
            lines.append(problem)
        summary = [_summarise(call) for call in t.calls if call["name"] in ("issue_refund", "cancel_order")]
        summary += [_delegated(call) for call in t.calls]
        lines.extend(s for s in summary if s)
        if t.calls:
            lines.append("Steps taken:")
        for call in t.calls:
            outcome = (call["result"] or "").strip().replace("\n", " ")
            if len(outcome) > 160:
                outcome = outcome[:157] + "..."
            status = "failed" if call["is_error"] else "done"
            lines.append(f"- {call['name']}({json.dumps(call['args'], sort_keys=True)}): {status}: {outcome}")
        if not t.calls and not problem:
            lines.append(f"I cannot reason about this task without a model: {t.task[:200]}")
        return "\n".join(lines), None


#: How a sub-agent's answer is introduced in what its parent's model reads (durable_agent.subagents.outcome_text).
_SUBAGENT_ANSWER = "\nIts answer:\n"


def _delegated(call: dict[str, Any]) -> str | None:
    """What a sub-agent answered, for the parent's answer (its lines without the offline notice)."""
    result = call["result"] or ""
    if _SUBAGENT_ANSWER not in result:
        return None
    said = result.split(_SUBAGENT_ANSWER, 1)[1].replace(OFFLINE_NOTICE, "").strip()
    kept = [line for line in said.splitlines() if line.strip() and not line.startswith(("Steps taken:", "- "))]
    return f"The {call['name']} agent reports: " + " ".join(kept)[:600]


def _summarise(call: dict[str, Any]) -> str | None:
    """One sentence for the customer about an action that changes something."""
    args = call["args"]
    order = args.get("order_id", "the order")
    result = call["result"] or ""
    if call["name"] == "issue_refund":
        what = f"the refund of {args.get('amount', 0):g} {args.get('currency', '')} on order {order}".replace("  ", " ")
        if not call["is_error"]:
            refund_id = _json(result).get("refund_id")
            return f"Done: refunded {args.get('amount', 0):g} {args.get('currency', '')} on order {order}" + (
                f" (refund #{refund_id})." if refund_id else "."
            )
        return f"Not done: {what} did not go through: {result}"
    if call["name"] == "cancel_order":
        if not call["is_error"]:
            return f"Done: order {order} is cancelled."
        return f"Not done: order {order} was not cancelled: {result}"
    return None
