"""Activities for approvals: the reviewer keyring as the worker's configuration says now, and the approval index.

Signed decisions are checked in the workflow, which may not read files; this
activity hands it the allow-list, delegates and public keys of one agent as
``agents.toml`` says *at decision time* (the file is re-read when it changes),
so adding or revoking a reviewer reaches runs that are already waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from durable_agent import contracts
from durable_agent.activities.live_config import ConfigUnreadable, LiveConfig
from durable_agent.profiles import AgentsConfig
from durable_agent.schemas import KeyringRequest, ReviewerKeyring

log = logging.getLogger("durable_agent.activities")

#: How often a worker that found no approval index looks again (an operator may register it meanwhile).
INDEX_RECHECK_SECONDS = 60.0


class ApprovalIndex:
    """Whether the namespace has the search attribute that marks runs awaiting approval.

    The workflow sets it only when the worker found it registered (an unregistered
    search attribute would fail every workflow task of the run), so each run
    learns it once, in its resolved profile.
    """

    def __init__(self, client: Client, name: str = contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL) -> None:
        self.client = client
        self.name = name
        self._found: bool | None = None
        self._checked_at = 0.0
        self._warned = False

    async def available(self) -> str | None:
        """The attribute's name when the namespace has it (as a Bool), else ``None``."""
        if self._found or (self._found is False and time.monotonic() - self._checked_at < INDEX_RECHECK_SECONDS):
            return self.name if self._found else None
        try:
            response = await self.client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=self.client.namespace)
            )
            self._found = response.custom_attributes.get(self.name) == IndexedValueType.INDEXED_VALUE_TYPE_BOOL
        except Exception as exc:  # noqa: BLE001 - no permission, Cloud, an old server: all mean "cannot tell"
            log.debug("cannot list search attributes: %s", exc)
            self._found = False
        self._checked_at = time.monotonic()
        if not self._found and not self._warned:
            self._warned = True
            log.warning(
                "search attribute %s is not registered in namespace %s: the reviewer inbox will not list this worker's "
                "approvals. Register it once: %s",
                self.name, self.client.namespace, index_command(self.client.namespace, self.name),
            )
        return self.name if self._found else None


async def register_approval_index(client: Client, name: str = contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL) -> None:
    """Register the approval search attribute (a dev server, or a cluster where this client may; not Temporal Cloud)."""
    response = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
    if name in response.custom_attributes:
        return
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace=client.namespace, search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_BOOL})
    )


def index_command(namespace: str, name: str = contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL) -> str:
    """The one command that registers the approval search attribute."""
    where = f" --namespace {namespace}" if namespace != "default" else ""
    return f"temporal operator search-attribute create{where} --name {name} --type Bool"


async def ensure_approval_index(client: Client, *, register: bool, name: str = contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL) -> str | None:
    """Make sure the namespace has the approval search attribute: ``None`` when it has, else what is missing and the fix.

    With ``register``, a missing attribute is registered where this client may (a dev
    server, a self-hosted cluster); Temporal Cloud and clients without operator rights
    refuse, and the message says so with the command for someone who may.
    """
    fix = f"the reviewer inbox cannot list this namespace's approvals (a link to one still works). Register it once: {index_command(client.namespace, name)}"
    try:
        response = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
    except RPCError as exc:
        return f"cannot tell whether search attribute {name} is registered in namespace {client.namespace} ({exc.message}); without it {fix}"
    kind = response.custom_attributes.get(name)
    if kind == IndexedValueType.INDEXED_VALUE_TYPE_BOOL:
        return None
    if kind is not None:
        return f"search attribute {name} is registered in namespace {client.namespace} as {IndexedValueType.Name(kind)}, not Bool: {fix}"
    refused = ""
    if register:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_BOOL})
            )
            log.info("registered search attribute %s (Bool) in namespace %s, for the reviewer inbox", name, client.namespace)
            return None
        except RPCError as exc:
            refused = f", and this worker may not register it ({exc.message})"
    return f"search attribute {name} is not registered in namespace {client.namespace}{refused}: {fix}"


class ApprovalActivities:
    """The keyring read at decision time, from the worker's ``agents.toml`` as it is now."""

    def __init__(self, config: AgentsConfig | LiveConfig) -> None:
        self.live = config if isinstance(config, LiveConfig) else LiveConfig(config)

    def _current(self) -> AgentsConfig:
        """The configuration, re-read when its file changed since it was last read."""
        try:
            return self.live.current()
        except ConfigUnreadable as exc:
            raise ApplicationError(
                f"{exc} (no reviewer can be trusted, so no decision is accepted until it is fixed)", type="KeyringUnavailable", non_retryable=True
            ) from None

    @activity.defn(name=contracts.ACTIVITY_REVIEWER_KEYRING)
    async def reviewer_keyring(self, request: KeyringRequest) -> ReviewerKeyring:
        """The allow-list, delegates and public keys of ``request.agent`` by the configuration as it is now."""
        config = await asyncio.to_thread(self._current)
        return config.keyring(request.agent)

    def all(self) -> list[object]:
        """Every activity of this object, for ``Worker(activities=...)``."""
        return [self.reviewer_keyring]
