"""The workflow APIs a run's components use, behind one narrow seam.

The components of ``AgentWorkflow`` (approval desk, spend, record book...) call
Temporal through a :class:`Host` rather than ``temporalio.workflow`` itself, so each
is unit-tested without a server: the tests hand them a stand-in
(``tests/workflow_host.py``) with a clock they move and activities they script.
:class:`TemporalHost` passes every call straight to ``temporalio.workflow``; it adds
no command of its own, so histories replay exactly as they did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, CancelledError
from temporalio.workflow import ActivityCancellationType

_T = TypeVar("_T")

#: Heartbeat timeout of model calls and of tools that do not set ``heartbeat``: how soon a
#: killed worker's activity is retried elsewhere (activities heartbeat every 5 s).
DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=15)


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is the run's own cancellation reaching it through an activity.

    Cancelling a run cancels the activity in flight, and the workflow sees that as an
    ``ActivityError`` caused by ``CancelledError``: it must stop the run, never be
    taken for a failing tool or model (which the run would carry on without).
    """
    return isinstance(exc, CancelledError) or (isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError))


#: A tool the run waited for through its cancel, and which then failed, ends the run as
#: cancelled too. Before it, the run took the failure for an ordinary one and asked the model again.
PATCH_CANCEL_OUTLASTS_FAILURE = "cancel-outlasts-a-failed-tool"


def cancelled_while_waited(host: Host, cancellation: ActivityCancellationType, *, failed: bool) -> bool:
    """Whether the run was cancelled while a tool it waits for (one that changes the world) ran.

    Its outcome, result or failure, is recorded; then the run ends as cancelled. Only a
    failure needs the patch: a result always ended the run.
    """
    if cancellation != ActivityCancellationType.WAIT_CANCELLATION_COMPLETED or not host.cancel_requested():
        return False
    return not failed or host.patched(PATCH_CANCEL_OUTLASTS_FAILURE)


class RunIds(NamedTuple):
    """Who the run is: what approval ids, record ids, idempotency keys and signatures are made of."""

    workflow_id: str
    #: The first run of the chain of continued runs: ids made of it stay the same across continue-as-new.
    first_execution_run_id: str
    run_id: str
    namespace: str


class Host(Protocol):
    """What a component may ask of the workflow it runs in."""

    @property
    def logger(self) -> logging.LoggerAdapter[Any]:
        """The workflow logger (it logs nothing while replaying)."""
        ...

    def now(self) -> datetime:
        """The workflow's clock (deterministic)."""
        ...

    def ids(self) -> RunIds: ...

    def patched(self, patch_id: str) -> bool:
        """``workflow.patched``: call it exactly where the history expects it."""
        ...

    def is_replaying(self) -> bool: ...

    def cancel_requested(self) -> bool:
        """Whether the run has been asked to cancel."""
        ...

    async def execute_activity(self, activity: str, arg: Any, *, result_type: type[_T], **options: Any) -> _T: ...

    def start_activity(self, activity: str, arg: Any, **options: Any) -> workflow.ActivityHandle[Any]: ...

    async def execute_local_activity(self, activity: str, arg: Any, *, result_type: type[_T], **options: Any) -> _T: ...

    async def sleep(self, duration: timedelta, *, summary: str) -> None: ...

    async def start_child_workflow(self, workflow_type: str, arg: Any, *, id: str, **options: Any) -> workflow.ChildWorkflowHandle[Any, Any]:
        """Start a child workflow (a sub-agent); its handle, awaited for its result."""
        ...

    async def signal_external(self, workflow_id: str, signal: str, arg: Any) -> None:
        """Signal another workflow (a run's parent, or a sub-agent), by workflow id."""
        ...

    async def wait_condition(self, done: Callable[[], bool], *, timeout: float | None = None, timeout_summary: str | None = None) -> None:
        """Wait until ``done()``; ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        ...

    def set_details(self, text: str) -> None:
        """The run's current details, as the Temporal UI shows them."""
        ...

    def upsert_search_attributes(self, updates: Sequence[SearchAttributeUpdate[Any]]) -> None: ...

    def upsert_memo(self, updates: dict[str, Any]) -> None: ...

    def outside_sandbox(self, work: Callable[[], None]) -> None:
        """Run ``work`` (I/O that replays must not repeat) unless replaying, outside the sandbox's checks."""
        ...


class TemporalHost:
    """The real :class:`Host`: every call goes straight to ``temporalio.workflow``."""

    @property
    def logger(self) -> logging.LoggerAdapter[Any]:
        return workflow.logger

    def now(self) -> datetime:
        return workflow.now()

    def ids(self) -> RunIds:
        info = workflow.info()
        return RunIds(info.workflow_id, info.first_execution_run_id, info.run_id, info.namespace)

    def patched(self, patch_id: str) -> bool:
        return workflow.patched(patch_id)

    def is_replaying(self) -> bool:
        return workflow.unsafe.is_replaying()

    def cancel_requested(self) -> bool:
        return workflow.cancellation_reason() is not None

    async def execute_activity(self, activity: str, arg: Any, *, result_type: type[_T], **options: Any) -> _T:
        result: _T = await workflow.execute_activity(activity, arg, result_type=result_type, **options)
        return result

    def start_activity(self, activity: str, arg: Any, **options: Any) -> workflow.ActivityHandle[Any]:
        return workflow.start_activity(activity, arg, **options)

    async def execute_local_activity(self, activity: str, arg: Any, *, result_type: type[_T], **options: Any) -> _T:
        result: _T = await workflow.execute_local_activity(activity, arg, result_type=result_type, **options)
        return result

    async def sleep(self, duration: timedelta, *, summary: str) -> None:
        await workflow.sleep(duration, summary=summary)

    async def start_child_workflow(self, workflow_type: str, arg: Any, *, id: str, **options: Any) -> workflow.ChildWorkflowHandle[Any, Any]:
        return await workflow.start_child_workflow(workflow_type, arg, id=id, **options)

    async def signal_external(self, workflow_id: str, signal: str, arg: Any) -> None:
        await workflow.get_external_workflow_handle(workflow_id).signal(signal, arg)

    async def wait_condition(self, done: Callable[[], bool], *, timeout: float | None = None, timeout_summary: str | None = None) -> None:
        await workflow.wait_condition(done, timeout=timeout, timeout_summary=timeout_summary)

    def set_details(self, text: str) -> None:
        workflow.set_current_details(text)

    def upsert_search_attributes(self, updates: Sequence[SearchAttributeUpdate[Any]]) -> None:
        workflow.upsert_search_attributes(updates)

    def upsert_memo(self, updates: dict[str, Any]) -> None:
        workflow.upsert_memo(updates)

    def outside_sandbox(self, work: Callable[[], None]) -> None:
        if not workflow.unsafe.is_replaying():
            with workflow.unsafe.sandbox_unrestricted():
                work()


