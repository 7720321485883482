"""The decision-trace sink: one JSON line per decision record.

The worker points it at a file (``AGENT_TRACE_FILE``) or standard output once,
at start. The workflow calls :func:`emit` only when it is not replaying, and the
sink also drops a record it has already written in this process (a workflow task
retried on the same worker), so replays and retries add no duplicate lines.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TextIO

from durable_agent.schemas import DecisionRecord


class TraceSink:
    def __init__(self, path: str | None = None, stream: TextIO | None = None) -> None:
        self.path = Path(path) if path else None
        self.stream = stream
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def write(self, key: str, record: DecisionRecord) -> bool:
        """Write ``record`` unless ``key`` was written already; return whether it was written."""
        line = record.model_dump_json() + "\n"
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > 100_000:
                self._seen.popitem(last=False)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line)
            else:
                out = self.stream or sys.stdout
                out.write(line)
                out.flush()
        return True


_sink: TraceSink | None = None


def configure(path: str | None = None, stream: TextIO | None = None) -> TraceSink:
    """Set the process's sink (the worker calls this once)."""
    global _sink
    _sink = TraceSink(path, stream)
    return _sink


def emit(key: str, record: DecisionRecord) -> None:
    """Write a record to the configured sink; without one, to standard output."""
    global _sink
    if _sink is None:
        _sink = TraceSink()
    _sink.write(key, record)
