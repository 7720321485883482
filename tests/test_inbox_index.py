"""The inbox lists what waits from each run's memo: one visibility call, no query per run (issue 22).

Asking each marked run for its ``status`` every second is a query per run per look,
and a replay for every run its worker no longer caches: with 200 runs waiting that
is 200 replays a second while a page is open. The runs keep what waits in their memo
(encrypted like every payload when keys are set), and the inbox reads it from the list.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from durable_agent import contracts
from durable_agent.connection import connect
from durable_agent.encryption import KeyRing
from durable_agent.inbox.listing import Approvals, Listing
from durable_agent.store import open_store
from tests.conftest import Harness
from tests.test_approvals import CANCEL_1001, wait_pending
from tests.test_inbox import wait_listed


async def listing_of(approvals: Approvals, ids: set[str], count: int) -> Listing:
    """Look until the runs ``ids`` show ``count`` waiting approvals (visibility follows the runs closely, not at once)."""
    for _ in range(200):
        listing = await approvals.fetch()
        if len([item for item in listing.items if item.workflow_id in ids]) == count:
            return listing
        await asyncio.sleep(0.1)
    raise AssertionError(f"the inbox never listed {count} approvals of {sorted(ids)}: {listing}")


async def cancel_all(handles: list[WorkflowHandle[Any, Any]]) -> None:
    for handle in handles:
        await handle.cancel()
    for handle in handles:  # ended while their worker runs: none is left marked as waiting for later tests' inboxes
        await handle.result()


async def encrypting(server_address: str, state_dir: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Client, Harness]:
    """A client and a harness whose payloads and store are encrypted with a fresh key."""
    monkeypatch.setenv("AGENT_ENCRYPTION_KEYS", "k1:" + base64.b64encode(os.urandom(32)).decode())
    client = await connect(server_address)  # encrypts with the keys
    harness = Harness(client, state_dir)
    harness.store = open_store(KeyRing.from_env())
    return client, harness


class TestPendingInMemo:
    async def test_waiting_runs_are_listed_without_one_query(self, harness: Harness) -> None:
        async with harness.worker():
            handles = [await harness.start(CANCEL_1001) for _ in range(3)]
            pending = {h.id: (await wait_pending(h)).pending_approvals[0] for h in handles}
            approvals = Approvals(harness.client)
            try:
                listing = await listing_of(approvals, set(pending), 3)
                mine = {item.workflow_id: item for item in listing.items if item.workflow_id in pending}
                assert {wid: item.approval.approval_id for wid, item in mine.items()} == {wid: p.approval_id for wid, p in pending.items()}
                assert all(item.agent == "support" and item.approval.args == {"order_id": "ord-1001"} for item in mine.values())
                assert approvals.queries == 0

                # A decision takes the approval off the memo with the search attribute.
                first = handles[0]
                await first.signal("approve", {"approval_id": pending[first.id].approval_id, "reviewer": "alice"})
                await first.result()
                await listing_of(approvals, set(pending), 2)
                assert approvals.queries == 0
            finally:
                await cancel_all(handles[1:])


class TestMemoEncrypted:
    async def test_with_keys_the_memo_holds_no_plaintext(self, server_address: str, state_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        client, harness = await encrypting(server_address, state_dir, monkeypatch)
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            try:
                await wait_pending(handle)
                listing = await listing_of(Approvals(client), {handle.id}, 1)  # the key holder reads it
                assert [item.approval.args for item in listing.items if item.workflow_id == handle.id] == [{"order_id": "ord-1001"}]
                raw = await Client.connect(server_address)  # no keys: what anyone with visibility access sees
                memo = (await raw.get_workflow_handle(handle.id).describe()).raw_description.workflow_execution_info.memo
                payload = memo.fields[contracts.MEMO_PENDING_APPROVALS]
                assert payload.metadata["encoding"] == b"binary/encrypted" and b"ord-1001" not in payload.data
            finally:
                await cancel_all([handle])


class TestRunsThatCannotAnswer:
    """A run the inbox cannot read, or that nobody serves, never holds up the list for everyone else.

    Found in the suite: a run left waiting by a worker that had stopped, its memo encrypted
    with keys the inbox lacks, made every look at the namespace wait 10 s for its query,
    so each reviewer's page took 10 s to show a new approval or to sign in.
    """

    async def test_a_memo_this_inbox_cannot_open_is_not_asked_about(self, server_address: str, state_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        client, harness = await encrypting(server_address, state_dir, monkeypatch)
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            try:
                await wait_pending(handle)
                await listing_of(Approvals(client), {handle.id}, 1)  # indexed
                keyless = Approvals(await Client.connect(server_address))
                listing = await keyless.fetch()
                # Its query would answer encrypted too: asking is a wait for nothing.
                assert handle.id not in {item.workflow_id for item in listing.items}
                assert keyless.queries == 0
            finally:
                await cancel_all([handle])

    async def test_a_run_nobody_serves_is_left_out_until_it_answers(self, harness: Harness) -> None:
        # Marked as waiting, with no memo (a run begun before the memo existed), on a queue no worker polls.
        marked = SearchAttributeKey.for_bool(contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL)
        orphan = await harness.client.start_workflow(
            "AgentWorkflow", CANCEL_1001, id=f"orphan-{uuid.uuid4().hex[:8]}", task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
            search_attributes=TypedSearchAttributes([SearchAttributePair(marked, True)]),
        )
        async with harness.worker():
            handle = await harness.start(CANCEL_1001)
            try:
                await wait_pending(handle)
                approvals = Approvals(harness.client)
                await wait_listed(harness.client, orphan)
                # The orphan's query waits up to 10 s for a worker: the look does not wait with it.
                listing = await asyncio.wait_for(listing_of(approvals, {handle.id}, 1), timeout=5)
                assert orphan.id not in {item.workflow_id for item in listing.items}
                assert approvals.queries == 1, "not asked again while its first question is unanswered"
            finally:
                await orphan.terminate()
                await cancel_all([handle])
