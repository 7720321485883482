"""The decision-trace sink: one JSON line per decision record.

The worker points it at a file (``AGENT_TRACE_FILE``) or standard output once,
at start. The workflow calls :func:`emit` only when it is not replaying, and the
sink also drops a record it has already written in this process (a workflow task
retried on the same worker), so replays and retries add no duplicate lines.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TextIO

from durable_agent.schemas import DecisionRecord


class TraceSink:
    """Where decision records go: appended to a file, or written to a stream.

    The file is opened once, in append mode, and each record is one ``write``
    of one whole line: no open, mkdir and close on the workflow thread per step,
    and lines from several processes on one file never interleave.
    """

    def __init__(self, path: str | None = None, stream: TextIO | None = None) -> None:
        self.path = Path(path) if path else None
        self.stream = stream
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def close(self) -> None:
        """Close the file (a later record opens it again)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

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
                data = line.encode("utf-8")
                while data:  # one write for a line, unless the system takes it in parts
                    data = data[os.write(self._file(), data):]
            else:
                out = self.stream or sys.stdout
                out.write(line)
                out.flush()
        return True


_sink: TraceSink | None = None


def configure(path: str | None = None, stream: TextIO | None = None) -> TraceSink:
    """Set the process's sink (the worker calls this once)."""
    global _sink
    if _sink is not None:
        _sink.close()
    _sink = TraceSink(path, stream)
    return _sink


def emit(key: str, record: DecisionRecord) -> None:
    """Write a record to the configured sink; without one, to standard output."""
    global _sink
    if _sink is None:
        _sink = TraceSink()
    _sink.write(key, record)
