"""What the sandbox would check at run time in the decision modules, checked in their source.

The decision modules of ``workflows/`` are passed through the sandbox (one copy per
worker, see ``durable_agent.workflows``), so its run-time checks no longer apply to
them. These checks stand in, for every module of ``workflows/``:

- it imports only what is vetted for workflow code (:data:`VETTED`): no clock,
  randomness, I/O, process or thread module;
- it calls no clock (``datetime.now()``...) and no builtin that reads the world or
  differs between processes (``open``, ``hash`` of a string...);
- it keeps no state between runs: no ``global``, no mutable value at module or class
  level but constants that nothing mutates.

A module that needs something new: vet it, add it to :data:`VETTED` with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"

#: Modules workflow code may import: deterministic, no I/O (or only Temporal's, through the workflow API).
VETTED = {
    "__future__", "typing", "collections.abc", "dataclasses", "contextlib", "re", "json", "enum", "functools",
    "itertools", "math", "decimal", "fractions", "hashlib", "copy",
    "datetime",  # types and arithmetic; the clock calls are refused below
    "asyncio",  # the workflow's own event loop: gather, wait, sleep are durable timers
    "logging",  # types only: runs log through workflow.logger
    "importlib",  # the package's lazy lookup of its workflow classes
    "pydantic", "temporalio", "durable_agent",
}
#: Calls that read the clock (on ``datetime``, ``date`` or ``time``).
CLOCK = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}
#: Builtins that read the world, or differ from one process to the next (``hash`` of a string is salted).
BUILTINS = {"open", "input", "exec", "eval", "compile", "breakpoint", "hash", "id", "__import__"}
MUTATORS = {"append", "extend", "insert", "update", "add", "pop", "popitem", "clear", "setdefault", "remove", "discard", "sort", "reverse"}
MUTABLE_CALLS = {"list", "dict", "set", "defaultdict", "OrderedDict", "Counter", "deque", "bytearray"}


def violations(source: str) -> list[str]:
    """What in ``source`` would make a passed-through decision module unsafe, one line each (``line: why``)."""
    tree = ast.parse(source)
    found: list[str] = []
    module_mutables: set[str] = set()

    def mutable(value: ast.expr | None) -> bool:
        if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
            return True
        return isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None)) in MUTABLE_CALLS

    def shared_state(body: list[ast.stmt], where: str) -> None:
        for statement in body:
            targets: list[ast.expr] = []
            if isinstance(statement, ast.Assign):
                targets, value = statement.targets, statement.value
            elif isinstance(statement, ast.AnnAssign):
                targets, value = [statement.target], statement.value
            else:
                continue
            if not mutable(value):
                continue
            for target in targets:
                name = getattr(target, "id", "?")
                if where == "module" and (name.lstrip("_").isupper() or name == "__all__"):
                    module_mutables.add(name)  # a constant by its name: checked below that nothing mutates it
                else:
                    found.append(f"{statement.lineno}: {where}-level {name!r} is mutable and shared by every run")

    shared_state(tree.body, "module")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            shared_state(node.body, "class")
        elif isinstance(node, ast.Global):
            found.append(f"{node.lineno}: 'global' keeps state between runs")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            for name in names:
                if isinstance(node, ast.ImportFrom) and node.level:
                    continue  # relative: this package
                if not any(name == v or name.startswith(v + ".") for v in VETTED):
                    found.append(f"{node.lineno}: imports {name!r}, not vetted for workflow code")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in BUILTINS:
                found.append(f"{node.lineno}: calls {func.id}()")
            elif isinstance(func, ast.Attribute):
                owner = func.value.attr if isinstance(func.value, ast.Attribute) else getattr(func.value, "id", "")
                if func.attr in CLOCK and owner in ("datetime", "date", "time"):
                    found.append(f"{node.lineno}: reads the clock ({owner}.{func.attr}()); use workflow.now()")
                if func.attr in MUTATORS and getattr(func.value, "id", None) in module_mutables:
                    found.append(f"{node.lineno}: mutates module-level {func.value.id!r}")  # type: ignore[attr-defined]
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                base = target.value if isinstance(target, ast.Subscript) else target if isinstance(node, ast.AugAssign) else None
                if isinstance(base, ast.Name) and base.id in module_mutables:
                    found.append(f"{node.lineno}: mutates module-level {base.id!r}")
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.py")), ids=lambda p: p.name)
def test_workflow_code_is_deterministic_and_keeps_no_state(path: Path) -> None:
    assert violations(path.read_text()) == [], f"workflows/{path.name}"


def test_the_checks_catch_what_the_sandbox_would() -> None:
    source = '''
import time
import random as rng
from os import path
from datetime import datetime, date
CACHE: dict[str, int] = {}
seen = []
class Desk:
    shared = {}
def decide(x):
    global seen
    CACHE["k"] = 1
    CACHE.update(x)
    return datetime.now(), date.today(), time.time(), hash("s"), open("f")
'''
    found = violations(source)
    for why in (
        "imports 'time'", "imports 'random'", "imports 'os'", "module-level 'seen' is mutable", "class-level 'shared' is mutable",
        "'global'", "mutates module-level 'CACHE'", "datetime.now()", "date.today()", "time.time()", "calls hash()", "calls open()",
    ):
        assert any(why in line for line in found), (why, found)
    assert violations("from datetime import datetime, timedelta\nLIMIT = {'a': 1}\ndef f(d):\n    return LIMIT['a'] + d.days\n") == []
