"""A sub-agent's side of delegation: it tells its parent run what it has spent and what waits.

While a child runs, its parent must show an honest budget and the child's approvals
(:mod:`.delegation`). The child sends its totals, not deltas (a :class:`ChildReport`
by the ``child_report`` signal), whenever they change: after each step, when an
approval opens or is decided, when one of its own children reports. Signals from one
workflow to another keep their order, and one report is sent at a time, so the latest
report the parent holds is the child's latest state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts
    from durable_agent.errors import failure_message
    from durable_agent.schemas import ChildReport, ParentLink

from durable_agent.workflows.host import Host


class ParentReporter:
    """Sends the run's totals to its parent run whenever they change, until the run ends.

    Args:
        host: The workflow (signals to another workflow, conditions).
        totals: The run's totals now (its ``seq`` is set here).
    """

    def __init__(self, host: Host, totals: Callable[[], ChildReport]) -> None:
        self._host = host
        self._totals = totals
        self._sent: ChildReport | None = None
        self._seq = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self, link: ParentLink | None) -> None:
        """Report to ``link``'s run from now on (in a task of the workflow's own, beside the loop); nothing without a parent."""
        if link is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(link))

    async def stop(self) -> None:
        """Send the last change, then stop (before the run ends or continues as new)."""
        self._stopping = True
        if self._task is not None:
            await self._task
            self._task = None

    def _changed(self) -> bool:
        return self._sent is None or self._totals() != self._sent

    async def _run(self, link: ParentLink) -> None:
        while True:
            await self._host.wait_condition(lambda: self._stopping or self._changed())
            if self._changed():
                report = self._totals()
                self._seq += 1
                try:
                    await self._host.signal_external(link.workflow_id, contracts.SIGNAL_CHILD_REPORT, report.model_copy(update={"seq": self._seq}))
                except Exception as exc:  # the parent has ended: nobody is left to tell
                    self._host.logger.warning("the parent run %s took no report: %s", link.workflow_id, failure_message(exc))
                    return
                self._sent = report
            if self._stopping:
                return
