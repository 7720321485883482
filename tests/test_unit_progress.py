"""The run's phase changes only through the moves its state machine allows (no server)."""

from __future__ import annotations

from typing import get_args

import pytest

from durable_agent.schemas import Phase

from durable_agent.workflows.progress import MOVES, WAITING, PhaseError, Progress, RunPhase


class TestMoves:
    """Which phase may follow which."""

    def test_a_run_starts_waiting_for_nothing(self) -> None:
        phase = RunPhase()
        assert (phase.phase, phase.waiting_for) == ("starting", None)

    def test_every_phase_is_in_the_table_and_every_move_names_a_phase(self) -> None:
        assert set(MOVES) == set(get_args(Phase))
        assert all(to in MOVES for moves in MOVES.values() for to in moves)

    def test_a_done_run_moves_no_more(self) -> None:
        phase = RunPhase()
        phase.move("done")
        with pytest.raises(PhaseError, match="from done to thinking"):
            phase.move("thinking")

    @pytest.mark.parametrize(("path", "bad"), [(["thinking"], "starting"), (["thinking", "acting"], "compacting"), (["thinking", "continuing"], "thinking")])
    def test_a_move_not_in_the_table_is_a_defect(self, path: list[str], bad: str) -> None:
        phase = RunPhase()
        for to in path:
            phase.move(to)  # type: ignore[arg-type]
        with pytest.raises(PhaseError):
            phase.move(bad)  # type: ignore[arg-type]

    def test_every_active_phase_can_end(self) -> None:
        assert [p for p, moves in MOVES.items() if "done" not in moves] == ["compacting", "done"]


class TestWaits:
    """A wait says what it waits for while it lasts; a detour comes back to where the run was."""

    def test_waiting_names_what_while_it_lasts_and_the_phase_stays_shown(self) -> None:
        phase = RunPhase()
        phase.move("thinking")
        with phase.waiting("waiting_for_approval", "approval apr-1-abc"):
            assert (phase.phase, phase.waiting_for) == ("waiting_for_approval", "approval apr-1-abc")
        assert (phase.phase, phase.waiting_for) == ("waiting_for_approval", None)
        phase.move("acting")
        assert phase.phase == "acting"

    def test_a_cancelled_wait_waits_for_nothing_any_more(self) -> None:
        phase = RunPhase()
        with pytest.raises(RuntimeError), phase.waiting("waiting_for_budget", "the daily budget"):
            raise RuntimeError("cancelled")
        assert phase.waiting_for is None
        phase.move("done")

    def test_only_waiting_phases_wait(self) -> None:
        with pytest.raises(AssertionError), RunPhase().waiting("thinking", "nothing"):
            pass
        assert WAITING == {"waiting_for_approval", "waiting_for_rate_limit", "waiting_for_budget"}

    @pytest.mark.parametrize("before", ["starting", "thinking", "acting", "waiting_for_approval", "waiting_for_budget", "continuing"])
    def test_a_lease_is_a_detour_back_to_the_phase_it_interrupted(self, before: str) -> None:
        phase = RunPhase()
        for to in {"starting": [], "thinking": ["thinking"], "acting": ["thinking", "acting"], "continuing": ["thinking", "continuing"],
                   "waiting_for_approval": ["thinking", "waiting_for_approval"], "waiting_for_budget": ["waiting_for_budget"]}[before]:
            phase.move(to)  # type: ignore[arg-type]
        with phase.detour("waiting_for_budget", "a lease"):
            assert (phase.phase, phase.waiting_for) == ("waiting_for_budget", "a lease")
        assert (phase.phase, phase.waiting_for) == (before, None)

    def test_a_failed_compaction_still_comes_back(self) -> None:
        phase = RunPhase()
        phase.move("thinking")
        with pytest.raises(RuntimeError), phase.detour("compacting"):
            raise RuntimeError("the model call failed for good")
        assert phase.phase == "thinking"

    def test_compacting_comes_only_from_thinking(self) -> None:
        phase = RunPhase()
        phase.move("thinking")
        phase.move("acting")
        with pytest.raises(PhaseError, match="from acting to compacting"), phase.detour("compacting"):
            pass

    def test_a_whole_run(self) -> None:
        phase = RunPhase()
        with phase.detour("waiting_for_budget", "a lease"):
            pass
        phase.move("thinking")
        with phase.detour("compacting"):
            pass
        with phase.waiting("waiting_for_approval", "approval apr-1"):
            pass
        with phase.waiting("waiting_for_rate_limit", "a slot"):
            pass
        phase.move("acting")
        phase.move("thinking")
        phase.move("acting")
        phase.move("continuing")
        with phase.detour("waiting_for_budget", "returning the lease"):
            pass
        phase.move("done")
        assert phase.phase == "done"


class TestProgress:
    """Steps, tools used and the outcome."""

    def test_steps_and_outcome(self) -> None:
        progress = Progress()
        assert progress.next_step() == 1 and progress.steps_here == 1
        progress.used_tool("lookup_order")
        progress.end("success", "Done.")
        assert (progress.status, progress.answer, progress.tools_used) == ("success", "Done.", ["lookup_order"])
