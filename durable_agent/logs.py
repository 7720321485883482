"""Worker logs as text or as JSON lines (``durable-agent worker --log-format json``).

Workflow and activity code log through Temporal's logger adapters
(``workflow.logger``, ``activity.logger``): they attach the run's identity to
each record (``temporal_workflow`` / ``temporal_activity``), and the workflow's
one skips lines while a run replays, so no line repeats when a worker rebuilds a
run from its history. :class:`JsonFormatter` lifts those details, and the
``step`` and ``tool`` the agent's code adds, to top-level fields a log pipeline
can index.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Fields the agent's own code passes with ``extra=``, copied as they are.
AGENT_FIELDS = ("step", "tool", "approval_id", "record_id", "agent")
#: What Temporal's logger adapters attach (``extra`` name -> our field: their key).
_COMMON = {"workflow_id": "workflow_id", "workflow_type": "workflow_type", "task_queue": "task_queue", "namespace": "namespace"}
TEMPORAL_FIELDS: dict[str, dict[str, str]] = {
    "temporal_workflow": {**_COMMON, "run_id": "run_id"},
    "temporal_activity": {
        **_COMMON, "run_id": "workflow_run_id", "activity_id": "activity_id", "activity_type": "activity_type", "attempt": "attempt",
    },
}

_json_lines = False


class ActivityLogger(activity.LoggerAdapter):
    """Temporal's activity logger adapter over one of our loggers: each record carries the run's identity.

    In text mode the identity is also appended to the message, as Temporal does;
    JSON lines have it as fields already.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        self.activity_info_on_message = not _json_lines
        return super().process(msg, kwargs)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run identity, step, tool, error."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for extra, fields in TEMPORAL_FIELDS.items():
            details = getattr(record, extra, None)
            if isinstance(details, dict):
                out.update({ours: details.get(theirs) for ours, theirs in fields.items()})
        for field in AGENT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in out.items() if v is not None}, default=str, ensure_ascii=False)


def log_format(flag: str | None = None) -> str:
    """The log format: ``flag`` if given, else ``AGENT_LOG_FORMAT``, else ``text``.

    Raises:
        ValueError: for a format other than ``text`` or ``json``.
    """
    chosen = (flag or os.environ.get("AGENT_LOG_FORMAT") or "text").strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)} (--log-format or AGENT_LOG_FORMAT), got {chosen!r}")
    return chosen


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send the process's logs to standard error, as text or JSON lines."""
    global _json_lines
    _json_lines = fmt == "json"
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        # The adapters also append the run's details to the message text; JSON has them as fields.
        from temporalio import workflow

        workflow.logger.workflow_info_on_message = False
        activity.logger.activity_info_on_message = False
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
