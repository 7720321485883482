"""Local token estimates of prompts, kept per conversation head so a step estimates only what it added.

Before each model call the think activity estimates the prompt's tokens
(:func:`durable_agent.context.estimate_request_tokens`) to decide whether it fits
the window and whether the API should count it. That estimate JSON-encodes every
message, so a run's estimates grew with the square of its length: at six steps
they were a tenth of a think's CPU in ``bench/profile_steps.py``.

A conversation head names all of the conversation (each node is content-addressed
and names the one before), so its estimate never changes. :class:`ConversationEstimates`
keeps one per head, and the prompt's (system and tools) per prompt ref: a step
encodes only the messages added since a head it knows. The sum is the one
``estimate_request_tokens`` gives, message for message.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from durable_agent import context

#: Heads (and prompts) remembered per worker; an entry is a few dozen bytes.
ESTIMATES_KEPT = 4096


class ConversationEstimates:
    """Token estimates by conversation head and by prompt ref, the least recently used forgotten first."""

    def __init__(self, size: int = ESTIMATES_KEPT) -> None:
        self._size = size
        #: head -> (messages in the conversation, their estimated tokens)
        self._heads: OrderedDict[str, tuple[int, int]] = OrderedDict()
        #: prompt ref -> estimated tokens of its system prompt and tool schemas
        self._prompts: OrderedDict[str, int] = OrderedDict()

    def request_tokens(
        self, prompt_ref: str, system: str, tools: list[dict[str, Any]], head: str, messages: list[dict[str, Any]],
        *, since: str | None = None,
    ) -> int:
        """``estimate_request_tokens(system, tools, messages)``, for the prompt ``prompt_ref`` and conversation ``head``.

        ``messages`` are the conversation's messages as sent (private keys dropped).
        ``since`` is an earlier head of the same conversation: when its estimate is
        known, only the messages after it are encoded.
        """
        prompt = self._remembered(self._prompts, prompt_ref)
        if prompt is None:
            prompt = context.estimate_tokens(system) + sum(context.estimate_tokens(t) for t in tools)
            self._remember(self._prompts, prompt_ref, prompt)
        return prompt + self._messages_tokens(head, messages, since)

    def extended(self, head: str, new_head: str, message: dict[str, Any]) -> None:
        """``new_head`` is ``head`` with ``message`` (as sent) appended: know its estimate too, if ``head``'s is known."""
        known = self._remembered(self._heads, head)
        if known is not None:
            count, tokens = known
            self._remember(self._heads, new_head, (count + 1, tokens + context.estimate_tokens(message)))

    def _messages_tokens(self, head: str, messages: list[dict[str, Any]], since: str | None) -> int:
        known = self._remembered(self._heads, head)
        if known is not None and known[0] == len(messages):
            return known[1]
        count, tokens = 0, 0
        earlier = self._remembered(self._heads, since) if since is not None else None
        if earlier is not None and earlier[0] <= len(messages):
            count, tokens = earlier
        tokens += sum(context.estimate_tokens(m) for m in messages[count:])
        self._remember(self._heads, head, (len(messages), tokens))
        return tokens

    @staticmethod
    def _remembered(cache: OrderedDict[str, Any], key: str) -> Any:
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
        return value

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._size:
            cache.popitem(last=False)
