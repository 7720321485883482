"""How the fake Messages API counts tokens and caches prompts, the same way for every endpoint.

One count serves ``POST /v1/messages/count_tokens``, the context-window check of
``POST /v1/messages`` ("prompt is too long" above the window) and the usage it
reports, so an agent that trusts the counting endpoint never sees a 400.

:class:`PromptCache` imitates prompt caching: a request's blocks are hashed in
order (tools, system, then each message's blocks); a ``cache_control`` breakpoint
writes the prefix ending there, and a later request reads the longest written
prefix found at a breakpoint or up to 20 blocks before one, as the API looks back.
Entries live five minutes from their last use.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

#: Characters per token in the fake's count (the local estimate of the agent assumes fewer: it over-counts).
CHARS_PER_TOKEN = 4
#: Tokens of framing per message (role, separators).
PER_MESSAGE = 4
LOOKBACK_BLOCKS = 20
CACHE_TTL_SECONDS = 300.0


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict):
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def request_blocks(body: dict[str, Any]) -> list[tuple[Any, bool, int]]:
    """The request as (block, has a breakpoint, tokens) in the order the API reads it."""
    out: list[tuple[Any, bool, int]] = []

    def add(block: Any, extra: int = 0) -> None:
        marked = isinstance(block, dict) and "cache_control" in block
        plain = _without_cache_control(block)
        tokens = len(json.dumps(plain, sort_keys=True)) // CHARS_PER_TOKEN + 1 + extra
        out.append((plain, marked, tokens))

    for tool in body.get("tools") or []:
        add(tool)
    system = body.get("system")
    if isinstance(system, str):
        add({"type": "text", "text": system})
    else:
        for block in system or []:
            add(block)
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        for index, block in enumerate(blocks):
            add({"role": message.get("role"), **block} if isinstance(block, dict) else block, PER_MESSAGE if index == 0 else 0)
    return out


def count_tokens(body: dict[str, Any]) -> int:
    """The fake's token count of a request's input (tools, system, messages)."""
    return sum(tokens for _, _, tokens in request_blocks(body))


class PromptCache:
    """Prefix hashes written by breakpoints, read back by later requests (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expires: dict[str, float] = {}

    def usage(self, body: dict[str, Any]) -> dict[str, int]:
        """``input_tokens``, ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` of ``body``."""
        blocks = request_blocks(body)
        hashes: list[str] = []
        prefix_tokens: list[int] = []
        digest, total = hashlib.sha256(), 0
        for block, _, tokens in blocks:
            digest.update(json.dumps(block, sort_keys=True).encode())
            hashes.append(digest.copy().hexdigest())
            total += tokens
            prefix_tokens.append(total)
        breakpoints = [i for i, (_, marked, _) in enumerate(blocks) if marked]
        now = time.monotonic()
        read_upto = -1
        with self._lock:
            for point in breakpoints:
                for i in range(point, max(-1, point - LOOKBACK_BLOCKS), -1):
                    if self._expires.get(hashes[i], 0.0) > now:
                        read_upto = max(read_upto, i)
                        break
            if read_upto >= 0:
                self._expires[hashes[read_upto]] = now + CACHE_TTL_SECONDS
            written_upto = max(breakpoints, default=-1)
            for point in breakpoints:
                self._expires[hashes[point]] = now + CACHE_TTL_SECONDS
        read = prefix_tokens[read_upto] if read_upto >= 0 else 0
        written = prefix_tokens[written_upto] - read if written_upto > read_upto else 0
        return {
            "input_tokens": total - read - written,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
        }
