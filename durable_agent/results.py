"""Tool results in the content store, and which run may read one back.

``run_tool`` keeps each result as ``{"tool", "output", "run"}``, where ``run``
names the chain of executions that produced it: the workflow id and the chain's
first run id, which continue-as-new keeps. The built-in ``read_result`` tool
hands a result only to that chain: a run reads its own results, those of its
earlier executions included, and nothing of another run, whatever ref its model
was given (refs are shown in the ``trace`` and ``status`` queries, the trace sink
and webhook bodies). The chain is part of the stored value, so it is part of the
ref too: the same output in two runs is two blobs under two refs, and a ref
guessed from some output names nothing unless it also names the run.

Results kept before they named their run have no ``run``; ``read_result`` then
hands one over only if the chain's own decision records observed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunChain:
    """A workflow id and the first run id of its chain of executions: one run, across continue-as-new."""

    workflow_id: str
    first_run_id: str

    @classmethod
    def of_tool_call(cls, workflow_id: str | None, idempotency_key: str) -> RunChain | None:
        """The chain a ``run_tool`` call comes from, or None when that cannot be told.

        Args:
            workflow_id: The calling workflow's id, as the server gave it to the activity.
            idempotency_key: The call's key, which the workflow builds as
                ``{workflow id}/{first run id}/{step}/{index}/{call id}`` (a workflow id may
                hold ``/``; a run id does not).
        """
        if not workflow_id or not idempotency_key.startswith(workflow_id + "/"):
            return None
        first, sep, _ = idempotency_key[len(workflow_id) + 1 :].partition("/")
        return cls(workflow_id, first) if first and sep else None

    def as_json(self) -> dict[str, str]:
        """As kept in a stored result."""
        return {"workflow_id": self.workflow_id, "first_run_id": self.first_run_id}


def tool_result(tool: str, output: Any, chain: RunChain | None) -> dict[str, Any]:
    """The value kept for a tool's result, naming the chain that produced it (when known)."""
    value: dict[str, Any] = {"tool": tool, "output": output}
    if chain is not None:
        value["run"] = chain.as_json()
    return value


def is_tool_result(value: Any) -> bool:
    """Whether ``value`` is a kept tool result (not a conversation node, a prompt or a task)."""
    return isinstance(value, dict) and "tool" in value and "output" in value


def names_its_run(value: dict[str, Any]) -> bool:
    """Whether the kept result says which run produced it (results kept before that did not)."""
    return "run" in value


def produced_by(value: dict[str, Any], chain: RunChain) -> bool:
    """Whether the kept result ``value`` was produced by ``chain``."""
    run = value.get("run")
    return isinstance(run, dict) and run.get("workflow_id") == chain.workflow_id and run.get("first_run_id") == chain.first_run_id
