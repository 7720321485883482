"""The content store over both backends: content, named records, encryption, the start check, retention."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durable_agent.blobs import StoreUnavailable
from durable_agent.encryption import DecryptionError, KeyRing
from durable_agent.store import SEGMENT_MESSAGES, ContentIntegrityError, ContentStore, MissingContent, stored_json, open_store
from tests.s3_server import create_bucket

MARKER = "MARKER-store-5b1e"


def key_spec(kid: str) -> str:
    """One ``kid:base64key`` entry of AGENT_ENCRYPTION_KEYS, with a fresh key."""
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return (tmp_path / "content").as_uri()
    endpoint = request.getfixturevalue("s3_env")
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    create_bucket(endpoint, bucket)
    return f"s3://{bucket}/agents"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[ContentStore]:
    s = open_store(url=store_url)
    try:
        yield s
    finally:
        await s.close()


async def raw_objects(s: ContentStore) -> dict[str, bytes]:
    out = {}
    async for info in s.backend.list(""):
        data = await s.backend.read(info.key)
        assert data is not None
        out[info.key] = data
    return out


class TestContent:
    """Content round-trips on either backend; a missing reference names itself and the store."""

    async def test_round_trip_and_missing(self, store: ContentStore, store_url: str) -> None:
        head = await store.append(None, {"role": "user", "content": MARKER})
        head = await store.append(head, {"role": "assistant", "content": "ok"})
        fresh = open_store(url=store_url)  # another worker: nothing cached
        try:
            assert [m["content"] for m in await fresh.messages(head)] == [MARKER, "ok"]
        finally:
            await fresh.close()
        with pytest.raises(MissingContent) as caught:
            await store.get("sha256:" + "1" * 64)
        assert "sha256:" + "1" * 64 in str(caught.value) and store.location in str(caught.value)


class TestNamedRecords:
    """Named records are written once, listed by prefix, deleted, and never collected."""

    async def test_write_once_under_races(self, store: ContentStore) -> None:
        name = "decisions/run-1/r-0001"
        won = await asyncio.gather(*(store.create_named(name, {"writer": i}) for i in range(6)))
        assert won.count(True) == 1
        assert await store.read_named(name) == {"writer": won.index(True)}
        assert await store.create_named(name, {"writer": "late"}) is False
        assert await store.read_named("decisions/run-1/absent") is None

    async def test_list_and_delete(self, store: ContentStore) -> None:
        for name in ("decisions/run-1/r-1", "decisions/run-1/r-2", "decisions/run-2/r-1"):
            assert await store.create_named(name, {"n": name})
        assert sorted([n async for n in store.list_named("decisions/run-1/")]) == ["decisions/run-1/r-1", "decisions/run-1/r-2"]
        await store.delete_named("decisions/run-1/r-1")
        assert await store.read_named("decisions/run-1/r-1") is None
        assert await store.create_named("decisions/run-1/r-1", {"again": True})  # deletable, then writable again

    @pytest.mark.parametrize("name", ["", "/abs", "a//b", "../x", "a/../b", "sp ace", "a/./b"])
    async def test_bad_names(self, store: ContentStore, name: str) -> None:
        with pytest.raises(ValueError, match="not a record name"):
            await store.create_named(name, {})


class TestEncryptedStore:
    """With keys, no object holds plaintext; rotation keeps old content readable; a missing key is named."""

    async def test_no_plaintext_and_rotation(self, store_url: str) -> None:
        old, new = key_spec("k1"), key_spec("k2")
        s = open_store(KeyRing.parse(old), url=store_url)
        head = await s.append(None, {"role": "user", "content": f"refund {MARKER}"})
        await s.create_named("decisions/r-1", {"args": MARKER})
        objects = await raw_objects(s)
        assert objects and all(MARKER.encode() not in data for data in objects.values())
        await s.close()

        rotated = open_store(KeyRing.parse(f"{new},{old}"), url=store_url)
        assert (await rotated.messages(head))[0]["content"] == f"refund {MARKER}"
        assert await rotated.read_named("decisions/r-1") == {"args": MARKER}
        await rotated.close()

        without = open_store(KeyRing.parse(new), url=store_url)
        with pytest.raises(DecryptionError, match="'k1'"):
            await without.get(head)
        await without.close()
        plain = open_store(url=store_url)
        with pytest.raises(DecryptionError, match="AGENT_ENCRYPTION_KEYS is not set"):
            await plain.get(head)
        await plain.close()


def key_of(ref: str) -> str:
    digest = ref.removeprefix("sha256:")
    return f"{digest[:2]}/{digest}.json"


async def overwrite(s: ContentStore, key: str, data: bytes | None) -> None:
    """Write ``data`` under ``key`` as someone with write access to the store would (the directory backend only
    refreshes a key that exists, so write its file directly)."""
    assert data is not None
    root = getattr(s.backend, "root", None)
    if root is not None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    else:
        await s.backend.write(key, data)


class TestVerifiedReads:
    """Every read is checked against its ref or name: what someone with bucket access wrote or copied is refused."""

    async def test_altered_content_is_refused_without_keys(self, store: ContentStore, store_url: str) -> None:
        head = await store.append(None, {"role": "user", "content": "refund 20 USD"})
        await overwrite(store, key_of(head), stored_json({"prev": None, "message": {"role": "user", "content": "refund 2000 USD"}}))
        cold = open_store(url=store_url)  # a worker that has not seen the conversation
        try:
            with pytest.raises(ContentIntegrityError, match="does not hash to its ref") as caught:
                await cold.messages(head)
        finally:
            await cold.close()
        assert head in str(caught.value) and store.location in str(caught.value)

    async def test_plaintext_is_refused_with_keys(self, store_url: str) -> None:
        s = open_store(KeyRing.parse(key_spec("k1")), url=store_url)
        value = {"prev": None, "message": {"role": "user", "content": "refund 20 USD"}}
        ref = await s.put(value)
        await overwrite(s, key_of(ref), stored_json(value))  # even the very content, unsealed
        with pytest.raises(ContentIntegrityError, match="plaintext is refused") as caught:
            await s.get(ref)
        assert ref in str(caught.value)
        await s.close()

    async def test_a_sealed_blob_copied_onto_another_ref_is_refused(self, store_url: str) -> None:
        s = open_store(KeyRing.parse(key_spec("k1")), url=store_url)
        mine, theirs = await s.put({"pay": "alice", "amount": 20}), await s.put({"pay": "mallory", "amount": 999})
        await overwrite(s, key_of(mine), await s.backend.read(key_of(theirs)))
        with pytest.raises(ContentIntegrityError, match="does not verify") as caught:
            await s.get(mine)
        assert mine in str(caught.value)
        assert await s.get(theirs) == {"pay": "mallory", "amount": 999}
        await s.close()

    async def test_refs_are_keyed_and_survive_rotation(self, store_url: str) -> None:
        value = {"role": "user", "content": "Refund order ord-789"}
        predictable = "sha256:" + hashlib.sha256(stored_json(value)).hexdigest()
        plain = open_store(url=store_url)
        assert await plain.put(value) == predictable  # without keys: the SHA-256, verified on read
        await plain.close()
        old, new = key_spec("k1"), key_spec("k2")
        s = open_store(KeyRing.parse(old), url=store_url)
        keyed = await s.put(value)
        assert keyed != predictable  # nobody without the keys can compute it, or confirm a guess with it
        await s.close()
        rotated = open_store(KeyRing.parse(f"{new},{old}"), url=store_url)
        assert await rotated.get(keyed) == value  # refs recorded before the rotation still read
        again = await rotated.put(value)
        assert again not in (keyed, predictable) and await rotated.get(again) == value
        await rotated.close()

    async def test_blobs_sealed_before_refs_were_bound_still_read_and_stay_bound(self, store_url: str) -> None:
        """Runs in flight at the upgrade: their DAE1 blobs under plain SHA-256 refs are bound by that hash."""
        ring = KeyRing.parse(key_spec("k1"))
        s = open_store(ring, url=store_url)
        refs = []
        for value in ({"amount": 20}, {"amount": 999}):
            data = stored_json(value)
            ref = "sha256:" + hashlib.sha256(data).hexdigest()
            await s.backend.write(key_of(ref), ring.seal_blob(data))  # as the store sealed them before
            refs.append(ref)
        assert await s.get(refs[0]) == {"amount": 20}
        await overwrite(s, key_of(refs[0]), await s.backend.read(key_of(refs[1])))
        with pytest.raises(ContentIntegrityError, match="does not hash to its ref"):
            await s.get(refs[0])
        await s.close()

    async def test_named_records_are_bound_to_their_name(self, store_url: str) -> None:
        ring = KeyRing.parse(key_spec("k1"))
        s = open_store(ring, url=store_url)
        await s.create_named("records/run-a/1", {"status": "approved"})
        await s.create_named("records/run-b/1", {"status": "rejected"})
        await overwrite(s, "named/records/run-b/1", await s.backend.read("named/records/run-a/1"))
        with pytest.raises(ContentIntegrityError, match="does not verify") as caught:
            await s.read_named("records/run-b/1")
        assert "records/run-b/1" in str(caught.value)
        await overwrite(s, "named/records/run-b/1", stored_json({"status": "approved"}))
        with pytest.raises(ContentIntegrityError, match="plaintext is refused"):
            await s.read_named("records/run-b/1")
        await s.backend.write("named/records/run-c/1", ring.seal_blob(stored_json({"old": True})))  # written before
        assert await s.read_named("records/run-c/1") == {"old": True}
        await s.close()

    async def test_a_decision_record_copied_under_another_run_is_refused(self, store: ContentStore) -> None:
        from durable_agent import trace
        from durable_agent.schemas import ActionRecord, CostRecord, DecisionRecord

        record = DecisionRecord(
            record_id="run-a/r1/1/0", timestamp=datetime.now(UTC), agent_id="support", session_id="run-a", step=1,
            action=ActionRecord(type="tool_call", tool="issue_refund"), observation={"status": "ok"}, cost=CostRecord(),
        )
        await store.create_named(trace.record_name(record), record.model_dump(mode="json"))
        assert [r.record_id for r in await trace.read_records(store, "run-a")] == ["run-a/r1/1/0"]
        await overwrite(store, "named/records/run-b/r1/000000001-0000", await store.backend.read("named/" + trace.record_name(record)))
        with pytest.raises(ContentIntegrityError, match="holds the record 'run-a/r1/1/0'"):
            await trace.read_records(store, "run-b")


class TestCheckAndGc:
    """The start check proves write and read; gc deletes only old content."""

    async def test_check_leaves_nothing(self, store: ContentStore) -> None:
        await store.check()
        assert await raw_objects(store) == {}

    async def test_gc_by_age(self, store: ContentStore) -> None:
        old_ref = await store.put({"old": True})
        await store.create_named("decisions/keep", {"k": 1})
        later = datetime.now(UTC) + timedelta(days=40)
        report = await store.collect_garbage(timedelta(days=30), now=later, dry_run=True)
        assert (report.deleted, report.kept) == (1, 0)
        assert await store.get(old_ref) == {"old": True}  # dry run deletes nothing
        report = await store.collect_garbage(timedelta(days=30), now=later)
        assert report.deleted == 1
        with pytest.raises(MissingContent):
            await store.get(old_ref)
        assert await store.read_named("decisions/keep") == {"k": 1}
        young = await store.put({"young": True})
        assert (await store.collect_garbage(timedelta(days=30))).deleted == 0
        assert await store.get(young) == {"young": True}


class TestMissingBucket:
    """A store whose bucket does not exist fails the start check naming the bucket."""

    async def test_check_names_the_bucket(self, s3_env: str) -> None:
        s = open_store(url="s3://bucket-that-is-not-there/agents")
        with pytest.raises(StoreUnavailable, match="bucket 'bucket-that-is-not-there' does not exist"):
            await s.check()
        await s.close()


class TestGcCommand:
    """`durable-agent store gc --older-than DAYS` deletes old content from the store AGENT_STORE_URL names."""

    async def test_deletes_only_what_is_old(self, tmp_path: Path) -> None:
        import subprocess
        import sys
        import time

        root = tmp_path / "content"
        s = open_store(url=root.as_uri())
        old, young = await s.put({"old": 1}), await s.put({"young": 1})
        await s.create_named("decisions/r-1", {"kept": True})
        ten_days_ago = time.time() - 10 * 86400
        for path in root.rglob("*"):
            if path.is_file() and (old[len("sha256:") :] in path.name or path.parts[-3:-1] == ("named", "decisions")):
                os.utime(path, (ten_days_ago, ten_days_ago))
        env = {**os.environ, "AGENT_STORE_URL": root.as_uri()}
        argv = [sys.executable, "-c", "from durable_agent.cli import entry; entry()", "store", "gc", "--older-than", "5"]
        def run(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*argv, *extra], env=env, capture_output=True, text=True, timeout=60, check=False)

        dry = await asyncio.to_thread(run, "--dry-run")
        assert dry.returncode == 0 and "would delete 1 objects" in dry.stdout, dry.stderr
        done = await asyncio.to_thread(run)
        assert done.returncode == 0 and "deleted 1 objects" in done.stdout and "kept 1" in done.stdout, done.stderr
        with pytest.raises(MissingContent):
            await s.get(old)
        assert await s.get(young) == {"young": 1}
        assert await s.read_named("decisions/r-1") == {"kept": True}


class CountingReads:
    """A backend wrapper that counts reads (a cold read's cost is its number of requests)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.location = backend.location
        self.reads = 0

    async def read(self, key: str) -> bytes | None:
        self.reads += 1
        return await self.backend.read(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


class TestSegments:
    """A worker that has not seen a conversation reads it in a few requests, not one per message."""

    async def test_cold_read_is_whole_and_cheap(self, store: ContentStore, store_url: str) -> None:
        head = None
        written = [{"role": "user" if i % 2 else "assistant", "content": f"m{i}"} for i in range(150)]
        for message in written:
            head = await store.append(head, message)
        cold = open_store(url=store_url)
        counting = CountingReads(cold.backend)
        cold.backend = counting  # type: ignore[assignment]
        try:
            assert await cold.messages(head) == written
            assert counting.reads <= SEGMENT_MESSAGES + 150 // SEGMENT_MESSAGES + 1, counting.reads
            # It goes on from there, writing segments of its own.
            for message in written[:40]:
                head = await cold.append(head, message)
        finally:
            await cold.close()
        again = open_store(url=store_url)
        try:
            assert await again.messages(head) == written + written[:40]
        finally:
            await again.close()

    async def test_chains_without_segments_still_read(self, store: ContentStore, store_url: str) -> None:
        """Conversations written before segments (or by a worker without the chain cached)."""
        head = None
        for i in range(70):
            head = await store.put({"prev": head, "message": {"role": "user", "content": f"old {i}"}})
        cold = open_store(url=store_url)
        try:
            assert [m["content"] for m in await cold.messages(head)] == [f"old {i}" for i in range(70)]
            head = await cold.append(head, {"role": "assistant", "content": "new"})
        finally:
            await cold.close()
        fresh = open_store(url=store_url)
        try:
            assert [m["content"] for m in await fresh.messages(head)][-2:] == ["old 69", "new"]
        finally:
            await fresh.close()


class TestConversationCache:
    """A worker keeps in memory the conversation of every run it keeps cached, so no step reads one back."""

    async def test_a_worker_of_1000_runs_reads_no_conversation_back(self, tmp_path: Path) -> None:
        from durable_agent.cli.worker import SDK_MAX_CACHED_WORKFLOWS

        store = ContentStore(tmp_path / "content")
        store.hold_conversations(SDK_MAX_CACHED_WORKFLOWS)
        counting = CountingReads(store.backend)
        store.backend = counting  # type: ignore[assignment]
        heads: list[str | None] = [None] * SDK_MAX_CACHED_WORKFLOWS
        for step in range(3):  # every run takes a step in turn: tool results in, a reply out, as a think does
            for run in range(SDK_MAX_CACHED_WORKFLOWS):
                head = await store.append(heads[run], {"role": "user", "content": f"run {run} step {step}"})
                await store.messages(head)
                heads[run] = await store.append(head, {"role": "assistant", "content": f"reply {step}"})
        assert counting.reads == 0

    async def test_a_step_keeps_one_conversation_per_run(self, tmp_path: Path) -> None:
        store = ContentStore(tmp_path / "content")
        store.hold_conversations(10)
        heads: list[str | None] = [None] * 10
        for step in range(4):
            for run in range(10):
                heads[run] = await store.append(heads[run], {"role": "user", "content": f"run {run} step {step}"})
                heads[run] = await store.append(heads[run], {"role": "assistant", "content": f"reply {step}"})
        # Appending replaces the head appended to: memory is one conversation per run, each counted once.
        assert len(store.conversations) == 10
        messages = sum(len(stored_json(m)) for m in await store.messages(heads[0]))
        assert 10 * messages < store.conversations.bytes < 10 * (messages + 8 * 100)  # a node: its message and a ref

    async def test_runs_that_wait_give_their_memory_to_runs_that_work(self, tmp_path: Path) -> None:
        store = ContentStore(tmp_path / "content")
        store.hold_conversations(1000, max_bytes=200_000)
        counting = CountingReads(store.backend)
        store.backend = counting  # type: ignore[assignment]
        waiting: str | None = None
        for step in range(5):  # a run that then waits for a person, holding a long conversation
            waiting = await store.append(waiting, {"role": "user", "content": f"tool output {step} " + "w" * 10_000})
        working: list[str | None] = [None] * 20
        for step in range(5):  # twenty runs at work, 160 KB in all: with the waiting run's 50 KB, more than may be held
            for run in range(20):
                working[run] = await store.append(working[run], {"role": "user", "content": f"{run}/{step} " + "x" * 1_500})
                await store.messages(working[run])
        assert store.conversations.bytes <= 200_000
        assert counting.reads == 0  # the runs at work read nothing back...
        assert working[-1] in store.conversations and waiting not in store.conversations
        # ...and the waiting run, when the person answers, reads its conversation back, whole.
        messages = await store.messages(waiting)
        assert [m["content"][:13] for m in messages] == [f"tool output {s}" for s in range(5)] and counting.reads > 0
