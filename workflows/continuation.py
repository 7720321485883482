"""Continue-as-new: a long run hands its small state to a fresh execution.

The conversation is a reference into the content store, so what is carried is
the same size at step 10,000 as at step 250. Each component carries its own part
of :class:`~durable_agent.carry.CarriedState` (``carry()``) and takes it back in the
continuation (``restore()``); this module puts the parts together, keeps them
under Temporal's payload limit, and reads a run's start arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import carry, fields, inputs
    from durable_agent.errors import validation_problems

    # Defined in the core, not here: a pydantic model built in every run's sandbox costs milliseconds.
    from durable_agent.carry import CarriedState
    from durable_agent.schemas import AgentInput

from durable_agent.workflows.host import Host
from durable_agent.workflows.records import RecordBook

__all__ = ["CarriedState", "Carries", "assemble", "invalid_input", "restore", "should_continue_as_new", "start_arguments", "within_payload_limit"]

#: Patch: a carried state over the payload limit has its trace cut (runs before it carried it whole).
PATCH_CARRIED_STATE_BOUNDED = "carried-state-bounded"


class Carries(Protocol):
    """A component with a part of the carried state: it gives its part, and takes it back in the continuation."""

    def carry(self) -> dict[str, Any]: ...

    def restore(self, carried: CarriedState) -> None: ...


def invalid_input(problems: str) -> ApplicationError:
    """The run's failure for an input it cannot use: at once, for good, naming the problem."""
    return ApplicationError("invalid AgentWorkflow input: " + problems, type="InvalidInput", non_retryable=True)


#: Patch: numbers of the start input given as strings ("1.00") or booleans are refused (runs before it took them).
PATCH_STRICT_INPUT_NUMBERS = "strict-input-numbers"


def start_arguments(host: Host, args: tuple[Any, ...], *, continued: bool) -> tuple[AgentInput, CarriedState | None]:
    """The run's input, and the state its previous run carried when it is a continuation (``continued``).

    Raises:
        ApplicationError: ``InvalidInput``, non-retryable, naming the problem: the run fails at once.
    """
    if len(args) != 1 and not (continued and len(args) == 2):
        # Only a continue-as-new may hand a run its state: a client's second argument is refused.
        raise invalid_input(f"AgentWorkflow takes one JSON object, got {len(args)} arguments")
    problems = inputs.start_input_problems(args[0])
    if problems:
        raise invalid_input("; ".join(problems))
    # Runs that began before took "budget_usd": "1.00" as 1.0: only new ones refuse it.
    as_text = fields.text_numbers_problem(args[0], AgentInput)
    if as_text and host.patched(PATCH_STRICT_INPUT_NUMBERS):
        raise invalid_input(as_text)
    try:
        request = AgentInput.model_validate(args[0])
    except ValidationError as exc:
        raise invalid_input(validation_problems(exc, AgentInput)) from None
    if len(args) == 1:
        return request, None
    try:
        return request, CarriedState.model_validate(args[1])
    except ValidationError as exc:
        raise invalid_input(f"the state carried from the previous run is invalid: {validation_problems(exc)}") from None


def should_continue_as_new(*, steps_here: int, every: int, waiting_for_decision: bool, suggested: bool) -> bool:
    """Whether to continue as new before the next step.

    Args:
        steps_here: Steps this execution has taken (none yet: never).
        every: The profile's ``continue_as_new_every``.
        waiting_for_decision: An approval is pending (it cannot be carried).
        suggested: The server suggests it (the history is getting large).
    """
    if waiting_for_decision or steps_here == 0:
        return False
    return steps_here >= every or suggested


def assemble(parts: Sequence[Carries]) -> CarriedState:
    """The carried state, made of every component's part.

    Raises:
        ValueError: a field carried twice, by none, or unknown: a defect (a part would be lost),
            which fails the workflow task until a fixed worker picks the run up.
    """
    fields: dict[str, Any] = {}
    for part in parts:
        given = part.carry()
        twice = fields.keys() & given.keys()
        if twice:
            raise ValueError(f"carried twice: {', '.join(sorted(twice))}")
        fields.update(given)
    expected = CarriedState.model_fields.keys()
    if fields.keys() != expected:
        missing, unknown = sorted(expected - fields.keys()), sorted(fields.keys() - expected)
        raise ValueError(f"carried state incomplete: carried by nobody {missing}, unknown {unknown}")
    return CarriedState(**fields)


def restore(parts: Sequence[Carries], carried: CarriedState) -> None:
    """Give every component its part of ``carried`` back (a continuation starting)."""
    for part in parts:
        part.restore(carried)


def within_payload_limit(host: Host, start: dict[str, Any], carried: CarriedState, *, book: RecordBook, step: int) -> CarriedState:
    """``carried``, its trace cut when needed so the continuation's input stays under Temporal's limit.

    Args:
        host: The workflow (the patch that bounds the carried state).
        start: The continuation's start input.
        carried: The state as the components gave it.
        book: The record book: a cut is said in the run's warnings, which are carried too.
        step: The run's step, for that warning.

    Raises:
        ApplicationError: ``CarriedStateTooLarge``, non-retryable, when even the cut state is
            too large: the run fails, naming the limit, rather than retrying a refused command.
    """
    start_bytes = inputs.json_size(start)
    size = start_bytes + len(carried.model_dump_json())
    if size <= carry.CARRIED_STATE_BYTES:
        return carried
    # Runs that continued with a larger state before this check replay as they ran.
    if host.patched(PATCH_CARRIED_STATE_BOUNDED):
        book.warn(f"CARRIED_TRACE_CUT: step {step}: large arguments and older records left out of the carried trace")
        rest = carried.model_copy(update={**book.carry(), "trace": []})  # the warnings with the one just added
        others = start_bytes + len(rest.model_dump_json())
        fitting = carry.latest_within(carried.trace, max(0, carry.CARRIED_STATE_BYTES - others), compact=True)
        carried = rest.model_copy(update={"trace": fitting})
        size = start_bytes + len(carried.model_dump_json())
        if size > carry.CARRIED_STATE_BYTES:
            raise ApplicationError(
                f"the state this run would carry into its continuation is {size:,} bytes, over the limit of "
                f"{carry.CARRIED_STATE_BYTES:,} (CARRIED_STATE_BYTES) even with its trace cut",
                type="CarriedStateTooLarge",
                non_retryable=True,
            )
    return carried
