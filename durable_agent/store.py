"""Content kept out of the event history, referenced by key.

The conversation of a run grows with every step; copying it into each model
activity's input would make history grow with the square of the run length. So
content lives here, addressed by a digest of its canonical JSON, and the
workflow carries only references: a conversation is a chain of nodes
``{"prev": ref, "message": {...}}`` and its head reference names it all.
Writing the same content twice yields the same key, which is what makes
activity retries harmless. Every 32 messages a node also names a *segment*
holding the messages since the previous one, so a worker that has not seen a
conversation (a think landing on another host) reads it in a few requests
instead of one per message; the cost is storing each message twice.

Where the bytes live is a :class:`~durable_agent.blobs.BlobBackend`, chosen by
``AGENT_STORE_URL`` (:func:`open_store`): a local directory (``file:///path``;
the default is ``<AGENT_STATE_DIR>/content``) or an S3-API bucket
(``s3://bucket/prefix``). Workers on different hosts must share it: use S3 (or
a shared volume) for more than one host. With ``AGENT_ENCRYPTION_KEYS`` set,
every blob is stored AES-256-GCM encrypted (:mod:`durable_agent.encryption`).
All of it is async: activities await the store and never block their event loop.

Every read is checked against its ref (or record name), so that whoever can
write to the bucket cannot make a run read anything but what its history names;
with keys, refs are keyed digests nobody else can compute. What is accepted, and
why, is in :mod:`durable_agent.sealing`.

Named records
-------------
Besides content, the store keeps **named records**: JSON values under a name
you choose (``decisions/run-1/r-0007``), written once. Use them for facts that
must be recorded exactly once even when several workers race or a worker is
killed and its activity retried (decision records under their ``record_id``)::

    created = await store.create_named("decisions/run-1/r-0007", record)  # False: already there
    record = await store.read_named("decisions/run-1/r-0007")             # None when absent
    async for name in store.list_named("decisions/run-1/"):                # names under a prefix
        ...
    await store.delete_named("decisions/run-1/r-0007")

``create_named`` is atomic on both backends (a hard link on a directory, a
conditional ``If-None-Match: *`` write on S3): of concurrent creators exactly one
gets True and its value is the one kept. Names are ``/``-separated segments of
letters, digits, ``.``, ``_``, ``-`` and ``:``. Named records are encrypted like
content (sealed to their name), and garbage collection never deletes them.

Retention
---------
:meth:`ContentStore.collect_garbage` (``durable-agent store gc --older-than DAYS``)
deletes content not written for that many days. Writing content that is already
stored refreshes its age, so content that runs still use stays young; choose a
number of days above the namespace's retention plus the longest run. On S3 an
object lifecycle rule expiring the prefix's objects after as many days does the
same without the command (exclude ``named/`` from it).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from durable_agent import sealing
from durable_agent.blobs import BlobBackend, DirectoryBackend, StoreUnavailable, backend_from_url
from durable_agent.encryption import KeyRing
from durable_agent.sealing import REF_PREFIX, ContentIntegrityError
from durable_agent.store_cache import DEFAULT_MAX_BYTES, EMPTY, Chain, ConversationCache

__all__ = [
    "REF_PREFIX",
    "BlobBackend",
    "ContentIntegrityError",
    "ContentStore",
    "DirectoryBackend",
    "GarbageReport",
    "MissingContent",
    "StoreUnavailable",
    "stored_json",
    "open_store",
    "state_dir",
]

NAMED_PREFIX = "named/"
PROBE_PREFIX = "health/"
#: Messages between segments: a conversation's cold read takes at most this many node reads, plus one per segment.
SEGMENT_MESSAGES = 32
_NAME = re.compile(r"[A-Za-z0-9._:-]+(/[A-Za-z0-9._:-]+)*")


def state_dir() -> Path:
    """Where durable-agent keeps its local state (``AGENT_STATE_DIR``, default ``./.durable-agent``)."""
    return Path(os.environ.get("AGENT_STATE_DIR") or ".durable-agent").resolve()


def stored_json(value: Any) -> bytes:
    """The bytes a JSON value is stored as (its reference is their SHA-256): sorted keys, no spaces, UTF-8, other values as text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


class MissingContent(KeyError):
    """A reference whose content is not in the store (a worker that does not share it, or content collected)."""

    def __init__(self, ref: str, location: str) -> None:
        super().__init__(ref)
        self.ref = ref
        self.location = location

    def __str__(self) -> str:
        return (
            f"content {self.ref} is not in the store at {self.location}: every worker must share one store "
            "(AGENT_STORE_URL=s3://... or a shared volume), and gc must not collect content of live runs"
        )


@dataclass(frozen=True)
class GarbageReport:
    """What a garbage collection found and removed."""

    deleted: int
    deleted_bytes: int
    kept: int


class ContentStore:
    """A content-addressed JSON store (plus write-once named records) over a blob backend."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        backend: BlobBackend | None = None,
        ring: KeyRing | None = None,
        cache_size: int = 256,
    ) -> None:
        """Args:
        root: A local directory (the default backend; ``<AGENT_STATE_DIR>/content`` when neither is given).
        backend: Any backend instead (S3, ...).
        ring: Encrypts what is written and decrypts what is read; None stores plaintext.
        cache_size: Conversations kept in memory, so a run's next think reads only what is new.
        """
        self.backend: BlobBackend = backend or DirectoryBackend(root if root is not None else state_dir() / "content")
        self.ring = ring
        self.conversations = ConversationCache(cache_size)

    def hold_conversations(self, runs: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """Keep the conversations of ``runs`` runs in memory (a worker's ``max_cached_workflows``), within ``max_bytes``.

        Each cached run's next think then reads nothing back from the store, unless
        the bytes bound pushed its conversation out (see :mod:`durable_agent.store_cache`).
        Never fewer runs than the default.
        """
        self.conversations.resize(max(self.conversations.entries, runs + 16), max_bytes)

    def forget_conversations(self) -> None:
        """Drop the conversations kept in memory: the next read of each comes from the backend, checked, as on a
        worker that has just started (or that another worker's run has just moved to)."""
        self.conversations.clear()

    @property
    def location(self) -> str:
        """Where the content lives (a path or URL, never a credential)."""
        return self.backend.location

    # ---------------------------------------------------------------- encoding

    def ref_of(self, data: bytes) -> str:
        """The ref of canonical JSON ``data``: its SHA-256, or with keys its HMAC (see :mod:`durable_agent.sealing`)."""
        return sealing.content_ref(self.ring, data)

    @staticmethod
    def _key(ref: str) -> str:
        digest = ref[len(REF_PREFIX) :]
        if not ref.startswith(REF_PREFIX) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise KeyError(f"not a content reference: {ref!r}")
        return f"{digest[:2]}/{digest}.json"

    # ----------------------------------------------------------------- content

    async def put(self, value: Any) -> str:
        """Store ``value`` (JSON-serialisable); return its reference."""
        return await self._put_bytes(stored_json(value))

    async def _put_bytes(self, data: bytes) -> str:
        ref = self.ref_of(data)
        await self.backend.write(self._key(ref), sealing.seal(self.ring, data, sealing.content_binding(ref)))
        return ref

    async def get(self, ref: str) -> Any:
        """The value stored under ``ref``, checked against it.

        Raises:
            MissingContent: when nothing is stored under it.
            DecryptionError: when it is encrypted under a key this process does not have.
            ContentIntegrityError: when what is stored is not the content ``ref`` names.
        """
        data = await self.backend.read(self._key(ref))
        if data is None:
            raise MissingContent(ref, self.location)
        return sealing.open_content(self.ring, self.location, ref, data)

    async def append(self, head: str | None, message: dict[str, Any]) -> str:
        """Append ``message`` to the conversation ``head``; return the new head.

        Every :data:`SEGMENT_MESSAGES` messages the node also names a *segment*, a blob
        with the messages since the previous segment, so a worker that has not seen the
        conversation reads it in a few requests rather than one per message (on S3 each
        request is a round trip). A worker that has not cached the conversation appends
        plain nodes; the next worker that has writes the segment.
        """
        cached = self.conversations.get(head) if head is not None else EMPTY
        node: dict[str, Any] = {"prev": head, "message": message}
        if cached is not None:
            messages = [*cached.messages, message]
            segment, segment_len = cached.segment, cached.segment_len
            if len(messages) - segment_len >= SEGMENT_MESSAGES:
                segment = await self.put({"prev": segment, "messages": messages[segment_len:]})
                node["segment"], segment_len = segment, len(messages)
        data = stored_json(node)
        new_head = await self._put_bytes(data)
        if cached is not None:
            # The node's bytes stand for the message's: the cache bounds memory, it need not be exact.
            self.conversations.put(new_head, Chain(messages, segment, segment_len, cached.size + len(data)), replaces=head)
        return new_head

    async def messages(self, head: str | None) -> list[dict[str, Any]]:
        """The conversation ending at ``head``, oldest message first."""
        if head is None:
            return []
        cached = self.conversations.get(head)
        if cached is not None:
            return list(cached.messages)
        newest_first: list[dict[str, Any]] = []
        earlier: Chain = EMPTY
        ref: str | None = head
        while ref is not None:
            cached = self.conversations.get(ref)
            if cached is not None:
                earlier = cached
                break
            node = await self.get(ref)
            if node.get("segment"):
                # This node's message is the segment's last: the segments hold all up to here.
                earlier = await self._segments(node["segment"])
                break
            newest_first.append(node["message"])
            ref = node["prev"]
        size = earlier.size + sum(len(stored_json(m)) for m in newest_first)
        chain = Chain([*earlier.messages, *reversed(newest_first)], earlier.segment, earlier.segment_len, size)
        self.conversations.put(head, chain)
        return list(chain.messages)

    async def _segments(self, last: str) -> Chain:
        """Every message up to the end of segment ``last``, following the segments back."""
        parts: list[list[dict[str, Any]]] = []
        ref: str | None = last
        while ref is not None:
            segment = await self.get(ref)
            parts.append(segment["messages"])
            ref = segment["prev"]
        messages = [m for part in reversed(parts) for m in part]
        return Chain(messages, last, len(messages), sum(len(stored_json(m)) for m in messages))

    # ----------------------------------------------------------- named records

    @staticmethod
    def _named_key(name: str) -> str:
        if not _NAME.fullmatch(name) or any(part in (".", "..") for part in name.split("/")):
            raise ValueError(f"not a record name: {name!r} (segments of letters, digits, '.', '_', '-', ':', separated by '/')")
        return NAMED_PREFIX + name

    async def create_named(self, name: str, value: Any) -> bool:
        """Write ``value`` under ``name`` unless something is there; True if this call wrote it."""
        key = self._named_key(name)
        return await self.backend.create(key, sealing.seal(self.ring, stored_json(value), sealing.named_binding(name)))

    async def read_named(self, name: str) -> Any | None:
        """The value under ``name``, or None.

        Raises:
            ContentIntegrityError: with keys set, a record that is plaintext or was sealed under another name.
        """
        data = await self.backend.read(self._named_key(name))
        return None if data is None else sealing.open_named(self.ring, self.location, name, data)

    async def list_named(self, prefix: str = "") -> AsyncIterator[str]:
        """The names that start with ``prefix``, in no promised order."""
        async for info in self.backend.list(NAMED_PREFIX + prefix):
            yield info.key[len(NAMED_PREFIX) :]

    async def delete_named(self, name: str) -> None:
        """Remove the record ``name`` (absent is fine)."""
        await self.backend.delete(self._named_key(name))

    # -------------------------------------------------------------- operations

    async def check(self) -> None:
        """Write, read back and delete a probe object: the store works for this process.

        Raises:
            StoreUnavailable: (or the client's own error) naming the store and what failed.
        """
        key = f"{PROBE_PREFIX}{socket.gethostname()}-{uuid.uuid4().hex}"
        probe = os.urandom(16)
        binding = b"durable-agent/probe/" + key.encode()
        await self.backend.write(key, sealing.seal(self.ring, probe, binding))
        try:
            back = await self.backend.read(key)
            if back is None or (self.ring.open_blob(back, binding) if self.ring else back) != probe:
                raise StoreUnavailable(f"the store at {self.location} did not give back what was written to {key}")
        finally:
            await self.backend.delete(key)

    async def collect_garbage(self, older_than: timedelta, *, now: datetime | None = None, dry_run: bool = False) -> GarbageReport:
        """Delete content not written for ``older_than``; named records and probes are kept."""
        cutoff = (now or datetime.now(UTC)) - older_than
        deleted = deleted_bytes = kept = 0
        async for info in self.backend.list(""):
            if info.key.startswith((NAMED_PREFIX, PROBE_PREFIX)):
                continue
            if info.modified < cutoff:
                if not dry_run:
                    await self.backend.delete(info.key)
                deleted += 1
                deleted_bytes += info.size
            else:
                kept += 1
        return GarbageReport(deleted, deleted_bytes, kept)

    async def close(self) -> None:
        """Release the backend's connections."""
        await self.backend.close()


def open_store(ring: KeyRing | None = None, url: str | None = None) -> ContentStore:
    """The store ``AGENT_STORE_URL`` names (default ``<AGENT_STATE_DIR>/content``), encrypting with ``ring``.

    Raises:
        ValueError: for a URL that names no usable backend (the message names it).
    """
    url = url or os.environ.get("AGENT_STORE_URL", "").strip() or str(state_dir() / "content")
    return ContentStore(backend=backend_from_url(url), ring=ring)
