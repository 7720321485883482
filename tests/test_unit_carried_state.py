"""Continue-as-new carries every part of a run's state: each component gives its part and takes it back (no server)."""

from __future__ import annotations

import pytest

from durable_agent.budget import HeldLease
from durable_agent.carry import CARRIED_APPROVALS, CARRIED_TOOLS_USED, CarriedState
from durable_agent.schemas import ApprovalRecord, ChildRun, ToolResultPart, Usage
from durable_agent.workflows import continuation
from durable_agent.workflows.agent import AgentWorkflow
from durable_agent.workflows.progress import Progress
from tests.component_kit import profile, record
from tests.workflow_host import START, FakeHost

#: A carried state in which every field differs from its default: a field that a component
#: forgets to carry, or to take back, comes back as its default and the round trip fails.
FULL = CarriedState(
    agent=profile(name="carried", budget_usd=2.5),
    step=41,
    usage=Usage(input_tokens=1200, output_tokens=340, cache_creation_input_tokens=50, cache_read_input_tokens=900),
    total_cost=0.1234,
    tools_used=["lookup_order", "issue_refund"],
    tools_used_unlisted=7,
    warnings=["step 3: POSSIBLE_LOOP: lookup_order called 3 times with the same arguments"],
    warnings_unlisted={"POSSIBLE_LOOP": 12},
    approvals=[ApprovalRecord(approval_id="apr-4-1a2b3c4d", tool="issue_refund", status="approved", reviewer="alice", decided_at=START)],
    approvals_unlisted=3,
    head="sha256:head",
    pending_results=[ToolResultPart(tool_use_id="toolu_1", ref="sha256:result")],
    recent_actions=["lookup_order:{\"order_id\":\"ord-789\"}"],
    trace=[record(40), record(41, reasoning="why")],
    last_usage=Usage(input_tokens=90, output_tokens=9),
    pending_chars=321,
    sent_task=False,
    task_ref="sha256:task",
    daily_lease=HeldLease(day="2025-06-01", seq=4, amount_usd=0.05, used_usd=0.01, open=True, ledger_remaining_usd=1.0, limit_usd=5.0),
    step_costs=[0.001, 0.002],
    next_prompt_tokens=5000,
    cached_prompt_tokens=4000,
    last_think_at=START,
    children=[ChildRun(workflow_id="wf-1/researcher-3-1", agent="researcher", status="success", total_cost=0.25, steps=4, usage=Usage(input_tokens=9))],
    moved_without_approval=1799.5,
)


def carriers() -> list[continuation.Carries]:
    """The components of a fresh run, exactly as the workflow lists them for continue-as-new."""
    return AgentWorkflow()._carriers()


class TestEveryFieldRoundTrips:
    """What a run carries comes back whole in its continuation, field by field."""

    def test_the_sample_sets_every_field_away_from_its_default(self) -> None:
        defaults = {name: field.default for name, field in CarriedState.model_fields.items() if not field.is_required()}
        same = [name for name, default in defaults.items() if getattr(FULL, name) == default]
        assert same == [], f"give these fields a value other than their default in FULL: {same}"

    def test_restored_then_carried_again_gives_the_same_state(self) -> None:
        parts = carriers()
        continuation.restore(parts, FULL)
        again = continuation.assemble(parts)
        assert again == FULL
        assert again.model_dump_json() == FULL.model_dump_json()

    def test_each_field_is_carried_by_exactly_one_component(self) -> None:
        parts = carriers()
        continuation.restore(parts, FULL)
        owners: dict[str, list[str]] = {}
        for part in parts:
            for name in part.carry():
                owners.setdefault(name, []).append(type(part).__name__)
        assert set(owners) == set(CarriedState.model_fields)
        assert {name: who for name, who in owners.items() if len(who) > 1} == {}

    def test_through_json_as_temporal_sends_it(self) -> None:
        parts = carriers()
        continuation.restore(parts, CarriedState.model_validate_json(FULL.model_dump_json()))
        assert continuation.assemble(parts) == FULL


class TestAssembly:
    """Parts put together, and what a continuation carries of a long run."""

    def test_a_field_carried_twice_is_a_defect_named(self) -> None:
        with pytest.raises(ValueError, match="carried twice: step, tools_used, tools_used_unlisted"):
            continuation.assemble([Progress(), Progress()])

    def test_a_field_nobody_carries_is_a_defect_named(self) -> None:
        parts = [c for c in carriers() if type(c).__name__ != "AnomalyWatch"]
        continuation.restore(parts, FULL)
        with pytest.raises(ValueError, match=r"carried by nobody \['recent_actions', 'step_costs'\]"):
            continuation.assemble(parts)

    def test_long_lists_carry_the_latest_and_count_the_rest(self) -> None:
        workflow = AgentWorkflow()
        continuation.restore(workflow._carriers(), FULL)
        for _ in range(CARRIED_TOOLS_USED + 5):
            workflow.progress.used_tool("lookup_order")
        carried = continuation.assemble(workflow._carriers())
        assert len(carried.tools_used) == CARRIED_TOOLS_USED
        assert carried.tools_used_unlisted == FULL.tools_used_unlisted + 2 + 5  # the two restored and five more fell off
        many = FULL.model_copy(update={"approvals": FULL.approvals * (CARRIED_APPROVALS + 1)})
        continuation.restore(workflow._carriers(), many)
        carried = continuation.assemble(workflow._carriers())
        assert (len(carried.approvals), carried.approvals_unlisted) == (CARRIED_APPROVALS, FULL.approvals_unlisted + 1)

    def test_a_continuation_counts_its_steps_from_where_it_began(self) -> None:
        workflow = AgentWorkflow()
        continuation.restore(workflow._carriers(), FULL)
        assert (workflow.progress.step, workflow.progress.steps_here) == (41, 0)
        workflow.progress.next_step()
        assert workflow.progress.steps_here == 1


class TestStartArguments:
    """Only a continue-as-new may hand a run its state; a client that tries is refused by name."""

    def test_a_second_argument_from_a_client_is_refused(self) -> None:
        with pytest.raises(Exception, match="takes one JSON object, got 2 arguments"):
            continuation.start_arguments(FakeHost(), ({"task": "x"}, FULL.model_dump(mode="json")), continued=False)

    def test_a_continuation_takes_its_state(self) -> None:
        request, carried = continuation.start_arguments(FakeHost(), ({"task": "x"}, FULL.model_dump(mode="json")), continued=True)
        assert (request.task, carried) == ("x", FULL)

    def test_a_bad_carried_state_is_named(self) -> None:
        with pytest.raises(Exception, match="the state carried from the previous run is invalid"):
            continuation.start_arguments(FakeHost(), ({"task": "x"}, {"step": "many"}), continued=True)

    def test_a_number_given_as_text_is_refused_only_in_new_runs(self) -> None:
        with pytest.raises(Exception, match="budget_usd"):
            continuation.start_arguments(FakeHost(), ({"task": "x", "budget_usd": "1.00"},), continued=False)
        # A run that began before the patch took it as 1.0, and its replay still does.
        request, _ = continuation.start_arguments(
            FakeHost(unpatched=[continuation.PATCH_STRICT_INPUT_NUMBERS]), ({"task": "x", "budget_usd": "1.00"},), continued=False
        )
        assert request.budget_usd == 1.0


class TestWhenToContinue:
    """A run continues as new after its profile's number of steps, or when the server suggests it, never while a decision waits."""

    @pytest.mark.parametrize(
        ("steps_here", "waiting", "suggested", "expected"),
        [(0, False, True, False), (10, False, False, True), (3, False, False, False), (3, False, True, True), (10, True, True, False)],
    )
    def test_rules(self, steps_here: int, waiting: bool, suggested: bool, expected: bool) -> None:
        assert continuation.should_continue_as_new(steps_here=steps_here, every=10, waiting_for_decision=waiting, suggested=suggested) is expected
