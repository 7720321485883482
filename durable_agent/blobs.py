"""Where the content store's bytes live: a local directory or an S3-API bucket.

A backend stores opaque bytes under string keys (``ab/abcdef....json``,
``named/records/r-1``). Every method is async and never blocks the event loop:
the directory backend does its file I/O in a worker thread, the S3 backend uses
``aioboto3``. Choose one with :func:`backend_from_url`:

- ``file:///var/lib/agent/content`` (or a bare path): a local directory. Fine for
  one host; several workers need a shared volume.
- ``s3://bucket/prefix``: AWS S3 or any S3-API store (MinIO, Cloudflare R2, GCS
  interoperability), configured by the standard AWS environment
  (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``AWS_DEFAULT_REGION``/``AWS_REGION``, profiles and instance roles as boto reads them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class StoreUnavailable(RuntimeError):
    """The store cannot be used at all (missing bucket, refused credentials, unreachable endpoint)."""


@dataclass(frozen=True)
class BlobInfo:
    """One stored object, as listed."""

    key: str
    modified: datetime
    size: int


class BlobBackend(ABC):
    """Bytes under keys. Keys are relative, ``/``-separated, without ``..``."""

    #: Where the bytes live, for messages (a path or a URL, never a credential).
    location: str

    @abstractmethod
    async def write(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``, atomically (never half-written under a valid key).

        Writing a key that exists refreshes its modification time, which :meth:`list`
        reports and garbage collection goes by: content still in use stays young.
        """

    @abstractmethod
    async def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` under ``key`` only if nothing is there. True if this call created it."""

    @abstractmethod
    async def read(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None when nothing is there."""

    @abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every object whose key starts with ``prefix``, in no promised order."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``; removing what is not there is not an error."""

    async def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing to release
        """Release connections."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a store key: {key!r}")
    return key


class DirectoryBackend(BlobBackend):
    """A local directory; writes go to a temporary file first, then are renamed (or linked) into place."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _write_temp(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return tmp

    async def write(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            try:
                os.utime(path)  # content-addressed: the same key holds the same bytes; keep it young
            except FileNotFoundError:
                os.replace(self._write_temp(path, data), path)

        await asyncio.to_thread(write)

    async def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)

        def create() -> bool:
            tmp = self._write_temp(path, data)
            try:
                os.link(tmp, path)  # atomic, and fails if the name exists: create-if-absent
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)

        return await asyncio.to_thread(create)

    async def read(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        # Walk only the folder the prefix names (a trace read lists one run's records, not the store).
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(folder) if folder else self.root

        def scan() -> list[BlobInfo]:
            found = []
            for dirpath, _dirs, files in os.walk(start):
                for name in files:
                    if name.startswith(".tmp-"):
                        continue
                    full = Path(dirpath) / name
                    key = full.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        with contextlib.suppress(FileNotFoundError):
                            st = full.stat()
                            found.append(BlobInfo(key, datetime.fromtimestamp(st.st_mtime, UTC), st.st_size))
            return found

        for info in await asyncio.to_thread(scan):
            yield info

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(lambda: path.unlink(missing_ok=True))


class S3Backend(BlobBackend):
    """An S3-API bucket, under an optional key prefix, through one long-lived aioboto3 client."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self.location = f"s3://{bucket}/{self.prefix}" + (f" (endpoint {self.endpoint_url})" if self.endpoint_url else "")
        self._client: Any = None
        self._client_cm: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    import aioboto3  # type: ignore[import-untyped]  # no stubs published
                    from botocore.config import Config  # type: ignore[import-untyped]

                    # Temporal owns retries of activities; a few quick ones here cover dropped connections.
                    config = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=64)
                    self._client_cm = aioboto3.Session().client("s3", endpoint_url=self.endpoint_url, config=config)
                    self._client = await self._client_cm.__aenter__()
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _unavailable(self, exc: Exception) -> Exception:
        code = _error_code(exc)
        if code == "NoSuchBucket":
            return StoreUnavailable(f"bucket {self.bucket!r} does not exist at {self.location}")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StoreUnavailable(f"access to {self.location} refused ({code}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the policy")
        return exc

    async def write(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        try:
            await s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._unavailable(exc) from exc

    async def create(self, key: str, data: bytes) -> bool:
        s3 = await self._s3()
        try:
            # A conditional write (S3, MinIO, R2 support If-None-Match: *): one creator wins, atomically.
            await s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except Exception as exc:
            if _error_code(exc) in ("PreconditionFailed", "412"):
                return False
            raise self._unavailable(exc) from exc

    async def read(self, key: str) -> bytes | None:
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
            async with response["Body"] as body:
                return bytes(await body.read())
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._unavailable(exc) from exc

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield BlobInfo(item["Key"][len(self.prefix) :], item["LastModified"], int(item.get("Size", 0)))
        except Exception as exc:
            raise self._unavailable(exc) from exc

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        try:
            await s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        if self._client_cm is not None:
            cm, self._client_cm, self._client = self._client_cm, None, None
            await cm.__aexit__(None, None, None)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def backend_from_url(url: str) -> BlobBackend:
    """The backend an ``AGENT_STORE_URL`` names: ``file:///path``, a bare path, or ``s3://bucket/prefix``.

    Raises:
        ValueError: for another scheme or an ``s3://`` URL without a bucket.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"AGENT_STORE_URL {url!r} names no bucket (expected s3://bucket/prefix)")
        return S3Backend(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"AGENT_STORE_URL {url!r}: a file URL names a local path (file:///path)")
        return DirectoryBackend(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return DirectoryBackend(url)
    raise ValueError(f"AGENT_STORE_URL {url!r}: unknown scheme {parsed.scheme!r} (use file:///path or s3://bucket/prefix)")
