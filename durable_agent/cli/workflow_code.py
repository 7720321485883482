"""The workflow modules' code, read from disk once per worker process instead of once per run.

Temporal's sandbox imports the workflow modules afresh for every run it starts (or
replays), so that no run sees another's module state and its checks on clocks,
randomness and I/O apply to the workflow code. That isolation is the point, and it
is kept: each module's code still runs, in the run's sandbox, every time. What a
fresh import also does is find each module's file on ``sys.path`` (a few ``stat``
calls per directory) and read and unmarshal its bytecode; ``bench/profile_steps.py``
showed that to be two fifths of creating a run's workflow instance, about 30 ms a
run on a 2-core machine, which a 6-call run pays once per run.

:func:`install` puts a finder first on ``sys.meta_path`` that knows the package's files
and hands out a loader keeping each module's code object: code objects are
immutable, so one compiled module serves every sandbox. Only the package named is
touched; any other module is found by Python's own finders.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import CodeType, ModuleType


class _KeptCodeLoader(importlib.machinery.SourceFileLoader):
    """A source loader that compiles (or unmarshals) a module's code once, then hands out the same code object."""

    _codes: dict[str, CodeType] = {}
    _lock = threading.Lock()  # sandboxes import in the workflow task threads, several at once

    def get_code(self, fullname: str) -> CodeType:
        code = self._codes.get(self.path)
        if code is None:
            code = super().get_code(fullname)
            assert code is not None  # a source file always has code
            with self._lock:
                code = self._codes.setdefault(self.path, code)
        return code


class KeptCodeFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of one package from a map of its files made once, with loaders that keep their code."""

    def __init__(self, package: str, directory: Path) -> None:
        self.package = package
        self.directory = directory
        self._files = {f"{package}.{path.stem}": path for path in directory.glob("*.py") if path.stem != "__init__"}
        self._files[package] = directory / "__init__.py"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self._files.get(fullname)
        if file is None:
            return None
        loader = _KeptCodeLoader(fullname, str(file))
        # A new spec per import: the import machinery marks a spec while its module loads.
        locations = [str(self.directory)] if fullname == self.package else None
        return importlib.util.spec_from_file_location(fullname, file, loader=loader, submodule_search_locations=locations)


def install(package: str = "durable_agent.workflows") -> KeptCodeFinder:
    """Find ``package``'s modules with :class:`KeptCodeFinder` in this process (once; later calls return it)."""
    for finder in sys.meta_path:
        if isinstance(finder, KeptCodeFinder) and finder.package == package:
            return finder
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not a package")
    finder = KeptCodeFinder(package, Path(next(iter(spec.submodule_search_locations))))
    sys.meta_path.insert(0, finder)
    return finder
