"""Where the run is: its step, its phase and what it waits for, what it has done, how it ended.

``phase`` and ``waiting_for`` (both in the ``status`` query) change here only,
through :class:`RunPhase`: a small state machine whose moves are listed in
:data:`MOVES`. A wait for a person, a rate limit or budget held by other runs
names what it waits for while it lasts, and its phase stays shown until the run
moves on; a lease or a compaction is a short detour that returns to the phase
the run was in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import carry
    from durable_agent.carry import CarriedState
    from durable_agent.schemas import Phase, RunStatus

#: The phases a wait shows; ``waiting_for`` says what for.
WAITING: frozenset[Phase] = frozenset({"waiting_for_approval", "waiting_for_rate_limit", "waiting_for_budget"})
#: Phases of the loop that a lease may interrupt, or that a run may end in (cancelled, failed, stopped).
_ACTIVE: frozenset[Phase] = frozenset({"thinking", "acting", "waiting_for_approval", "waiting_for_rate_limit", "waiting_for_budget"})

#: Every move a run may make, from each phase. A detour (:meth:`RunPhase.detour`) returns
#: to where it began without a move of its own.
MOVES: dict[Phase, frozenset[Phase]] = {
    # A run begins by leasing its daily budget or by thinking; it may end before either.
    "starting": frozenset({"thinking", "waiting_for_budget", "done"}),
    # Thinking leads to tool calls (each possibly held for a person or a rate limit), a
    # compaction, the next step (when no call ran), a continuation, or the end.
    "thinking": _ACTIVE | {"compacting", "continuing", "done"},
    "acting": _ACTIVE | {"continuing", "done"},
    "waiting_for_approval": _ACTIVE | {"continuing", "done"},
    # The tool runs when its rate-limit slot comes.
    "waiting_for_rate_limit": frozenset({"acting", "waiting_for_budget", "done"}),
    # Budget held by other runs: ask again, then think; or the budget is spent and the run ends.
    "waiting_for_budget": frozenset({"waiting_for_budget", "thinking", "done"}),
    "compacting": frozenset(),
    # Continuing as new ends this execution; a cancellation meanwhile returns the lease first.
    "continuing": frozenset({"waiting_for_budget", "done"}),
    "done": frozenset(),
}


class PhaseError(AssertionError):
    """A move :data:`MOVES` does not allow: a defect in the workflow, not in the run's input.

    It fails the workflow task (not the run), so a worker with the defect fixed picks the run up.
    """


class RunPhase:
    """The run's ``phase`` and ``waiting_for``, changed only through the moves in :data:`MOVES`."""

    def __init__(self) -> None:
        self._phase: Phase = "starting"
        self._waiting_for: str | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def waiting_for(self) -> str | None:
        """What the run waits for right now (an approval, a rate-limit slot, the daily budget), if it waits."""
        return self._waiting_for

    def move(self, to: Phase) -> None:
        """Move to phase ``to``, which waits for nothing.

        Raises:
            PhaseError: ``MOVES`` does not allow it.
        """
        if to not in MOVES[self._phase]:
            raise PhaseError(f"a run does not move from {self._phase} to {to}")
        self._phase = to
        self._waiting_for = None

    @contextlib.contextmanager
    def waiting(self, phase: Phase, what: str) -> Iterator[None]:
        """Wait for ``what`` in ``phase`` (one of :data:`WAITING`) while the block runs.

        ``waiting_for`` names it until the block ends; the phase stays shown until the
        run's next move (as the ``status`` query has always shown it).
        """
        assert phase in WAITING, phase
        self.move(phase)
        self._waiting_for = what
        try:
            yield
        finally:
            self._waiting_for = None

    @contextlib.contextmanager
    def detour(self, phase: Phase, what: str | None = None) -> Iterator[None]:
        """Be in ``phase`` (a lease, a compaction) while the block runs, then back in the phase the run was in."""
        back = self._phase
        if phase not in MOVES[back]:
            raise PhaseError(f"a run does not go from {back} to {phase}")
        self._phase, self._waiting_for = phase, what
        try:
            yield
        finally:
            self._phase, self._waiting_for = back, None


class Progress:
    """The run's step, phase, tool calls and outcome.

    ``step`` counts steps over the whole chain of continued runs; ``started_at_step``
    is where this execution began. ``tools_used`` lists the latest calls; a
    continuation only counts the earlier ones (``tools_used_unlisted``).
    """

    def __init__(self) -> None:
        self.phase = RunPhase()
        self.step = 0
        self.started_at_step = 0
        self.tools_used: list[str] = []
        self.tools_used_unlisted = 0
        self.status: RunStatus | None = None
        self.answer: str | None = None

    @property
    def steps_here(self) -> int:
        """Steps taken by this execution (a continuation counts from where it began)."""
        return self.step - self.started_at_step

    def next_step(self) -> int:
        """The step's model call has answered: the step counts. Its number."""
        self.step += 1
        return self.step

    def used_tool(self, name: str) -> None:
        """A tool call is about to run."""
        self.tools_used.append(name)

    def end(self, status: RunStatus, answer: str | None) -> None:
        """How the run ended, and what it answers."""
        self.status, self.answer = status, answer

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the step, and the latest tool calls (the earlier ones counted)."""
        return {
            "step": self.step,
            # Read when carried, not when imported: the bound is the core's, one module for every run.
            "tools_used": self.tools_used[-carry.CARRIED_TOOLS_USED :],
            "tools_used_unlisted": self.tools_used_unlisted + max(0, len(self.tools_used) - carry.CARRIED_TOOLS_USED),
        }

    def restore(self, carried: CarriedState) -> None:
        self.step = self.started_at_step = carried.step
        self.tools_used = carried.tools_used
        self.tools_used_unlisted = carried.tools_used_unlisted
