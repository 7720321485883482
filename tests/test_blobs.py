"""The content store's two backends, the local directory and an S3 API (moto_server over HTTP)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable_agent.blobs import BlobBackend, DirectoryBackend, S3Backend, StoreUnavailable, backend_from_url
from tests.s3_server import create_bucket


@pytest.fixture(params=["directory", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobBackend]:
    if request.param == "directory":
        yield DirectoryBackend(tmp_path / "content")
        return
    endpoint = request.getfixturevalue("s3_env")
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    create_bucket(endpoint, bucket)
    s3 = backend_from_url(f"s3://{bucket}/agents/prod")
    try:
        yield s3
    finally:
        await s3.close()


class TestBackends:
    """Both backends keep the same promises."""

    async def test_write_read_and_missing(self, backend: BlobBackend) -> None:
        await backend.write("ab/abc.json", b'{"a":1}')
        assert await backend.read("ab/abc.json") == b'{"a":1}'
        assert await backend.read("ab/nothing.json") is None

    async def test_create_only_if_absent(self, backend: BlobBackend) -> None:
        results = await asyncio.gather(*(backend.create("named/records/r-1", f"writer {i}".encode()) for i in range(5)))
        assert sorted(results) == [False, False, False, False, True]
        winner = results.index(True)
        assert await backend.read("named/records/r-1") == f"writer {winner}".encode()

    async def test_list_by_prefix_and_delete(self, backend: BlobBackend) -> None:
        for key in ("ab/1.json", "ab/2.json", "named/x/1", "named/y/1"):
            await backend.write(key, b"v")
        listed = sorted([info.key async for info in backend.list("named/")])
        assert listed == ["named/x/1", "named/y/1"]
        everything = [info async for info in backend.list()]
        assert {i.key for i in everything} == {"ab/1.json", "ab/2.json", "named/x/1", "named/y/1"}
        assert all(i.size == 1 and i.modified.tzinfo is not None for i in everything)
        await backend.delete("named/x/1")
        await backend.delete("named/x/1")  # twice: not an error
        assert await backend.read("named/x/1") is None

    async def test_keys_cannot_escape(self, backend: BlobBackend) -> None:
        for bad in ("../etc/passwd", "/abs", "a//b", "a/./b", ""):
            with pytest.raises(ValueError):
                await backend.write(bad, b"x")


class TestS3Failures:
    """An S3 store that cannot be used says which bucket and where."""

    async def test_missing_bucket_is_named(self, s3_env: str) -> None:
        s3 = S3Backend("no-such-bucket-here", "p")
        try:
            with pytest.raises(StoreUnavailable, match="bucket 'no-such-bucket-here' does not exist"):
                await s3.write("k", b"v")
            with pytest.raises(StoreUnavailable, match="no-such-bucket-here"):
                await s3.read("k")
        finally:
            await s3.close()

    async def test_endpoint_from_standard_environment(self, s3_env: str) -> None:
        s3 = backend_from_url("s3://bucket/some/prefix/")
        assert isinstance(s3, S3Backend)
        assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bucket", "some/prefix/", s3_env)
        assert s3.location.startswith("s3://bucket/some/prefix/")


class TestStoreUrl:
    """AGENT_STORE_URL chooses the backend; a bad one is refused with the URL named."""

    def test_file_url_and_bare_path(self, tmp_path: Path) -> None:
        assert isinstance(backend_from_url((tmp_path / "c").as_uri()), DirectoryBackend)
        assert backend_from_url(str(tmp_path / "d")).location == str(tmp_path / "d")

    @pytest.mark.parametrize("url", ["s3://", "ftp://host/x", "file://otherhost/x"])
    def test_bad_urls(self, url: str) -> None:
        with pytest.raises(ValueError, match="AGENT_STORE_URL"):
            backend_from_url(url)
