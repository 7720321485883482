"""The workflow modules' code is read once per worker process; each run's sandbox still runs it afresh."""

from __future__ import annotations

import importlib.util
from typing import Any
import sys

import pytest
from temporalio.worker.workflow_sandbox._runner import _Instance

from durable_agent.cli import sandbox, workflow_code
from durable_agent.cli.worker_group import workflow_runner
from durable_agent.testing import answer, tool_use
from tests.conftest import Harness


def fresh_module(name: str) -> Any:
    """Import ``name`` as a sandbox does (its ``sys.modules`` lacks it): a new module, found by the first finder that knows it."""
    spec = next(s for f in sys.meta_path if hasattr(f, "find_spec") and (s := f.find_spec(name, None)) is not None)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_import_gets_its_own_module_from_one_code_object() -> None:
    workflow_runner()  # what every worker builds installs the finder
    assert sum(isinstance(f, workflow_code.KeptCodeFinder) for f in sys.meta_path) == 1
    first, second = fresh_module("durable_agent.workflows.views"), fresh_module("durable_agent.workflows.views")
    # Module state is never shared between runs...
    assert first is not second and first.__dict__ is not second.__dict__
    # ...but the code is compiled once: the functions of both share their code objects.
    assert first.RunView.status.__code__ is second.RunView.status.__code__
    assert first.__file__ == second.__file__ and first.__file__.endswith("views.py")


def test_only_the_workflow_package_is_served() -> None:
    finder = workflow_code.install()
    assert workflow_code.install() is finder  # once per process
    assert finder.find_spec("durable_agent.policy") is None
    assert finder.find_spec("durable_agent.workflows.no_such_module") is None
    package = finder.find_spec("durable_agent.workflows")
    assert package is not None and package.submodule_search_locations


async def test_payload_contexts_are_the_ones_the_sdk_would_give(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each payload's context, asked of the run's instance directly, is what the SDK's way through the sandbox gives."""
    asked: list[tuple[str, object, object]] = []

    def checked(name: str) -> Any:
        direct, through_sandbox = getattr(sandbox._DirectContextInstance, name), getattr(_Instance, name)

        def ask(self: Any, command_info: Any) -> Any:
            mine = direct(self, command_info)
            asked.append((name, mine, through_sandbox(self, command_info)))
            return mine

        return ask

    for name in ("get_serialization_context", "get_external_store_context"):
        monkeypatch.setattr(sandbox._DirectContextInstance, name, checked(name))
    model, _ = harness.scripted([tool_use("lookup_order", {"order_id": "ord-1"}), answer("Order ord-1 is shipped.")])
    async with harness.worker():
        result = await harness.run({"task": "Where is ord-1?", "model": model})
    assert result.status == "success"
    # The run asked about the workflow's own payloads and about those of each activity it scheduled.
    kinds = {type(mine).__name__ for name, mine, _ in asked if name == "get_serialization_context"}
    assert {"WorkflowSerializationContext", "ActivitySerializationContext"} <= kinds
    assert any(name == "get_external_store_context" for name, _, _ in asked)
    assert [(name, mine) for name, mine, _ in asked] == [(name, sdk) for name, _, sdk in asked]


def test_an_sdk_that_keeps_its_instance_elsewhere_is_asked_its_own_way() -> None:
    """Without the instance where the runner looks for it, the answer comes through the sandbox, as the SDK gives it."""
    assert sandbox.instance_in({}) is None
    assert sandbox.instance_in({sandbox.IN_SANDBOX: object()}) is None  # kept there, but not answering contexts
