"""The workflow modules' code is read once per worker process; each run's sandbox still runs it afresh."""

from __future__ import annotations

import importlib.util
from typing import Any
import sys

from durable_agent.cli import workflow_code
from durable_agent.cli.worker_group import workflow_runner


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
