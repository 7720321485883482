"""The conversations the content store keeps in memory, bounded by runs and by bytes.

A run's next think needs its whole conversation; reading it back from the store on
every step would cost a round trip per segment (on S3, per request). So the store
keeps the newest conversation of each run the worker holds. Two bounds apply, the
least recently used conversation going first:

- *entries*: as many as the worker caches runs (``max_cached_workflows``), so a
  run that Temporal keeps in memory also keeps its conversation;
- *bytes*: the messages' JSON size in all (``AGENT_CONVERSATION_CACHE_MB``), so a
  worker with runs waiting hours for a person, each holding a long conversation,
  never grows without bound. The runs that wait are the least recently used:
  they give their memory to the runs that work, and read their conversation back
  once, when the person answers.

A conversation is cached under its newest head only: appending to a head replaces
it, so memory is counted once per run (the messages are shared, not copied).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: The bytes bound without ``AGENT_CONVERSATION_CACHE_MB``.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Chain:
    """A conversation as this process knows it: its messages, and its latest segment (covering the first ``segment_len``)."""

    messages: list[dict[str, Any]]
    segment: str | None
    segment_len: int
    #: The messages' JSON size, as stored.
    size: int = field(default=0, compare=False)


EMPTY = Chain([], None, 0)


class ConversationCache:
    """Conversations by head, least recently used first out; safe to share between threads.

    Args:
        entries: The most conversations kept.
        max_bytes: The most message bytes kept, over all conversations.
    """

    def __init__(self, entries: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._chains: OrderedDict[str, Chain] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """The message bytes kept now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._chains)

    def __contains__(self, head: object) -> bool:
        """Whether ``head``'s conversation is kept (without making it the most recently used)."""
        return head in self._chains

    def resize(self, entries: int, max_bytes: int) -> None:
        with self._lock:
            self.entries, self.max_bytes = entries, max_bytes
            self._shrink()

    def get(self, head: str) -> Chain | None:
        """The conversation ending at ``head``, if kept (it becomes the most recently used)."""
        with self._lock:
            chain = self._chains.get(head)
            if chain is not None:
                self._chains.move_to_end(head)
            return chain

    def put(self, head: str, chain: Chain, *, replaces: str | None = None) -> None:
        """Keep ``chain`` under ``head``; ``replaces`` (the head it was appended to) goes, its messages now counted here."""
        with self._lock:
            if replaces is not None and replaces != head:
                self._drop(replaces)
            self._drop(head)
            self._chains[head] = chain
            self._bytes += chain.size
            self._shrink()

    def clear(self) -> None:
        with self._lock:
            self._chains.clear()
            self._bytes = 0

    def _drop(self, head: str) -> None:
        old = self._chains.pop(head, None)
        if old is not None:
            self._bytes -= old.size

    def _shrink(self) -> None:
        while self._chains and (len(self._chains) > self.entries or self._bytes > self.max_bytes):
            _, old = self._chains.popitem(last=False)
            self._bytes -= old.size
