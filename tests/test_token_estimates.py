"""The local token estimate of a prompt: the same figure as a whole-request estimate, each message encoded once.

A run's think activity estimates its prompt at every step. Encoding the whole
conversation each time made the work grow with the square of the run's length;
the estimate is now kept per conversation head (see ``durable_agent.token_estimates``).
"""

from __future__ import annotations

from typing import Any

import pytest

from durable_agent import context
from durable_agent.testing import answer, tool_use
from durable_agent.token_estimates import ConversationEstimates
from tests.conftest import Harness, make_config

SYSTEM = "You help with orders."
TOOLS = [{"name": "lookup", "description": "Look an order up.", "input_schema": {"type": "object"}}]


def conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "Find order 7."}]}]
    for n in range(turns):
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "lookup", "input": {"n": n}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "x" * (100 * n)}]})
    return messages


class TestConversationEstimates:
    def test_a_growing_conversation_is_estimated_as_a_whole_request_would_be(self) -> None:
        messages, estimates = conversation(8), ConversationEstimates()
        earlier: str | None = None
        for end in range(1, len(messages) + 1, 2):  # a step: the user's turn, then the model's reply
            head = f"head-{end}"
            got = estimates.request_tokens("prompt", SYSTEM, TOOLS, head, messages[:end], since=earlier)
            assert got == context.estimate_request_tokens(SYSTEM, TOOLS, messages[:end])
            if end < len(messages):
                estimates.extended(head, f"head-{end + 1}", messages[end])
                earlier = f"head-{end + 1}"

    def test_an_unknown_earlier_head_means_the_whole_conversation_is_estimated(self) -> None:
        messages = conversation(3)
        got = ConversationEstimates().request_tokens("prompt", SYSTEM, TOOLS, "head", messages, since="never-seen")
        assert got == context.estimate_request_tokens(SYSTEM, TOOLS, messages)

    def test_only_the_least_recently_used_heads_are_forgotten(self, monkeypatch: pytest.MonkeyPatch) -> None:
        messages, estimates = conversation(1), ConversationEstimates(size=2)
        for head in ("a", "b", "c"):
            estimates.request_tokens("prompt", SYSTEM, TOOLS, head, messages)
        encoded = count_encodings(monkeypatch)
        estimates.request_tokens("prompt", SYSTEM, TOOLS, "c", messages)
        assert encoded == []  # remembered
        estimates.request_tokens("prompt", SYSTEM, TOOLS, "a", messages)
        assert len(encoded) == len(messages)  # forgotten: encoded afresh


def count_encodings(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every message the local estimate encodes from now on (system prompts and tool schemas left out)."""
    encoded: list[Any] = []
    original = context.estimate_tokens

    def counting(value: Any) -> int:
        if isinstance(value, dict) and "role" in value:
            encoded.append(value)
        return original(value)

    monkeypatch.setattr(context, "estimate_tokens", counting)
    return encoded


async def test_a_ten_step_run_encodes_each_message_once(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten steps: 20 messages, each encoded once (encoding the whole conversation every step took 100)."""
    encoded = count_encodings(monkeypatch)
    model, scripted = harness.scripted([tool_use("echo", {"text": f"hop {n}"}) for n in range(9)] + [answer("done")])
    async with harness.worker(make_config({"helper": {"tools": ["echo"], "model": model}})):
        result = await (await harness.start({"task": "hop nine times"})).result()
    assert result.status == "success" and result.steps == 10
    sent = [*scripted.requests[-1].messages, {"role": "assistant", "content": [{"type": "text", "text": "done"}]}]
    assert len(sent) == 20
    assert len(encoded) == len(sent)
