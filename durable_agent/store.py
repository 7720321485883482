"""Content kept out of the event history, referenced by key.

The conversation of a run grows with every step; copying it into each model
activity's input would make history grow with the square of the run length. So
content lives here, addressed by the SHA-256 of its canonical JSON, and the
workflow carries only references: a conversation is a chain of nodes
``{"prev": ref, "message": {...}}`` and its head reference names it all.

Writing the same content twice yields the same key, which is what makes
activity retries harmless. All of it is async: activities await the store and
never block their event loop. Where the bytes live is a :class:`BlobBackend`;
the default is a local directory, which every worker of a deployment must see
(a shared volume) unless an object-store backend is plugged in.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import asyncio
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

REF_PREFIX = "sha256:"


def state_dir() -> Path:
    """Where durable-agent keeps its local state (``AGENT_STATE_DIR``, default ``./.durable-agent``)."""
    return Path(os.environ.get("AGENT_STATE_DIR") or ".durable-agent").resolve()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


class BlobBackend(Protocol):
    """Where a :class:`ContentStore` keeps its bytes."""

    #: Where it is, for messages (a path or a URL, never a credential).
    location: str

    async def read(self, key: str) -> bytes | None:
        """The bytes under ``key``, or ``None`` when nothing is there."""
        ...

    async def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (atomically: never half-written under a valid key)."""
        ...


class DirectoryBackend:
    """Blobs as files under a local directory, written then renamed."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    async def read(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._read, key)

    async def write(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, key, data)

    def _read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a crash never leaves a half-written blob under a valid key.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)


class ContentStore:
    """A content-addressed JSON store over a :class:`BlobBackend`, safe for concurrent writers."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, backend: BlobBackend | None = None, cache_size: int = 256) -> None:
        self.backend: BlobBackend = backend or DirectoryBackend(root if root is not None else state_dir() / "content")
        self._chains: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return self.backend.location

    @staticmethod
    def _key(ref: str) -> str:
        if not ref.startswith(REF_PREFIX) or len(ref) != len(REF_PREFIX) + 64 or not all(c in "0123456789abcdef" for c in ref[len(REF_PREFIX) :]):
            raise KeyError(f"not a content reference: {ref!r}")
        digest = ref[len(REF_PREFIX) :]
        return f"{digest[:2]}/{digest}.json"

    async def put(self, value: Any) -> str:
        """Store ``value`` (JSON-serialisable); return its reference."""
        data = canonical_json(value)
        ref = REF_PREFIX + hashlib.sha256(data).hexdigest()
        await self.backend.write(self._key(ref), data)
        return ref

    async def get(self, ref: str) -> Any:
        """The value stored under ``ref``.

        Raises:
            KeyError: when nothing is stored under it (a worker that does not share the store).
        """
        data = await self.backend.read(self._key(ref))
        if data is None:
            raise KeyError(f"content {ref} is not in the store at {self.location}")
        return json.loads(data)

    async def append(self, head: str | None, message: dict[str, Any]) -> str:
        """Append ``message`` to the conversation ``head``; return the new head."""
        new_head = await self.put({"prev": head, "message": message})
        with self._lock:
            cached = self._chains.get(head) if head is not None else []
            if cached is not None:
                self._remember(new_head, [*cached, message])
        return new_head

    async def messages(self, head: str | None) -> list[dict[str, Any]]:
        """The conversation ending at ``head``, oldest message first."""
        if head is None:
            return []
        with self._lock:
            cached = self._chains.get(head)
            if cached is not None:
                self._chains.move_to_end(head)
                return list(cached)
        out: list[dict[str, Any]] = []
        ref: str | None = head
        while ref is not None:
            with self._lock:
                cached = self._chains.get(ref)
            if cached is not None:
                out.extend(reversed(cached))
                break
            node = await self.get(ref)
            out.append(node["message"])
            ref = node["prev"]
        out.reverse()
        with self._lock:
            self._remember(head, out)
        return list(out)

    def _remember(self, head: str, messages: list[dict[str, Any]]) -> None:
        self._chains[head] = messages
        self._chains.move_to_end(head)
        while len(self._chains) > self._cache_size:
            self._chains.popitem(last=False)
