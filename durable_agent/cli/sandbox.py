"""The sandbox the workflows run in, without the cost of entering it for each payload's context.

Temporal's sandbox runs a run's workflow code with a restricted importer applied: it
swaps ``sys.modules``, ``__import__`` and a dozen builtins for the run's own, and puts
them back after. That is what keeps the workflow code deterministic, and every
activation still goes through it.

The SDK also asks the sandbox, for every payload it encodes or decodes, which
serialization context the payload belongs to (the workflow's, or that of the activity
it is scheduled for) and which external-store context. It asks by compiling and
executing a line of code under the restricted importer: ``bench/profile_steps.py``
measured 167 µs a question, about 20 questions a step, as much worker time as all
the activations of the run together. The answer is two dictionary lookups on the
run's instance, and the code that gives it is the SDK's own (``temporalio`` passes
through every sandbox): no workflow code runs, nothing is imported, no clock or
randomness is read. So :class:`WorkerSandbox` asks the run's instance directly, and
gets the same answer (``tests/test_workflow_code.py`` checks it against the SDK's way
for every command of a real run).

If a future SDK no longer keeps the instance where this module looks for it, every
question goes the SDK's own way: slower, never different.
"""

from __future__ import annotations

from typing import Any

from temporalio.converter import SerializationContext, StorageDriverStoreContext
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker._workflow_instance import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

#: Where the SDK's sandbox keeps the run's instance, in the globals of the code it executes.
IN_SANDBOX = "__temporal_in_sandbox"


def instance_in(sandbox_globals: dict[str, Any]) -> Any | None:
    """The run's instance, where the SDK's sandbox keeps it and as it answers contexts; None if not there."""
    inner = sandbox_globals.get(IN_SANDBOX)
    has_both = hasattr(inner, "get_serialization_context") and hasattr(inner, "get_external_store_context")
    return inner if has_both else None


class _DirectContextInstance(_Instance):
    """A sandboxed run whose payload contexts come from its instance without entering the sandbox."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)  # creates the run's instance in the sandbox
        self._inner = instance_in(self.globals_and_locals)

    def get_serialization_context(self, command_info: CommandInfo | None) -> SerializationContext | None:
        if self._inner is None:
            return super().get_serialization_context(command_info)
        context: SerializationContext | None = self._inner.get_serialization_context(command_info)
        return context

    def get_external_store_context(self, command_info: CommandInfo | None) -> StorageDriverStoreContext:
        if self._inner is None:
            return super().get_external_store_context(command_info)
        context: StorageDriverStoreContext = self._inner.get_external_store_context(command_info)
        return context


class WorkerSandbox(SandboxedWorkflowRunner):
    """:class:`SandboxedWorkflowRunner`, answering payload contexts without entering the sandbox (see the module docstring)."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _DirectContextInstance(det, self.runner_class, self.restrictions)
