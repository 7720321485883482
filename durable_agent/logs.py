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
        run = getattr(record, "temporal_workflow", None)
        if isinstance(run, dict):
            out.update(
                workflow_id=run.get("workflow_id"),
                run_id=run.get("run_id"),
                workflow_type=run.get("workflow_type"),
                task_queue=run.get("task_queue"),
                namespace=run.get("namespace"),
            )
        act = getattr(record, "temporal_activity", None)
        if isinstance(act, dict):
            out.update(
                workflow_id=act.get("workflow_id"),
                run_id=act.get("workflow_run_id"),
                workflow_type=act.get("workflow_type"),
                activity_id=act.get("activity_id"),
                activity_type=act.get("activity_type"),
                attempt=act.get("attempt"),
                task_queue=act.get("task_queue"),
                namespace=act.get("namespace"),
            )
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
