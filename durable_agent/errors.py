"""Exceptions of durable-agent, each saying what went wrong and what to do."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from durable_agent.fields import did_you_mean, known_keys
from durable_agent.inputs import quoted


#: The key, in the first detail of an activity's error, of its full message when the error's own
#: text may not quote it (while payloads are encrypted, the SDK logs that text and puts it on spans;
#: details are payloads, so encrypted). See ``durable_agent.activities.common.quoting_error``.
FULL_MESSAGE_DETAIL = "full_message"


def failure_message(exc: BaseException) -> str:
    """The message of what made a Temporal call fail: its cause's full message, else its message, else its text.

    For an ``ActivityError`` or a ``WorkflowUpdateFailedError``, whose own text only
    says that the activity or update failed.
    """
    cause = getattr(exc, "cause", None)
    details = getattr(cause, "details", None) or ()
    if details and isinstance(details[0], dict) and isinstance(details[0].get(FULL_MESSAGE_DETAIL), str):
        return str(details[0][FULL_MESSAGE_DETAIL])
    return getattr(cause, "message", None) or str(cause or exc)


#: Which limit a too-long field hit, for the refusal (fields not listed use ``MAX_NAME_CHARS``).
_LENGTH_LIMITS = {"task": "MAX_TASK_CHARS", "comment": "MAX_COMMENT_CHARS"}


def validation_problems(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Pydantic's complaints, one per field, in words a person typing JSON can act on.

    Field names and values chosen by the sender are quoted short, so a refusal (kept in
    the run's warnings) stays small whatever was sent; a length limit is named. Given the
    ``model`` that refused, an unknown field is answered with the field meant, if one is close.
    """
    problems = []
    for err in exc.errors()[:10]:
        field = ".".join(quoted(str(p)) for p in err["loc"]) or "(input)"
        kind = err["type"]
        if kind == "extra_forbidden":
            meant = did_you_mean(str(err["loc"][-1]), known_keys(model, err["loc"][:-1])) if model and err["loc"] else None
            problems.append(f"{field}: unknown field" + (f"; did you mean {meant!r}?" if meant else ""))
        elif kind == "string_too_long":
            limit = err.get("ctx", {}).get("max_length")
            name = _LENGTH_LIMITS.get(str(err["loc"][-1]), "MAX_NAME_CHARS")
            got = f"{len(err['input']):,}" if isinstance(err.get("input"), str) else "too many"
            problems.append(f"{field}: {got} characters, over the limit of {limit:,} ({name})")
        elif kind == "finite_number":
            problems.append(f"{field}: must be a finite number, not {quoted(repr(err.get('input')))}")
        else:
            problems.append(f"{field}: {err['msg']}")
    return "; ".join(problems)


class DurableAgentError(Exception):
    """Base of every durable-agent exception."""


class ConfigError(DurableAgentError):
    """The agent configuration is invalid. Names the file and the key at fault."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(f"{file}: {key}: {message}")


class ToolDefinitionError(DurableAgentError):
    """A ``@tool`` declaration is invalid (bad metadata, unsupported signature, duplicate name)."""


class InvalidToolArguments(DurableAgentError):
    """The model called a tool with arguments that do not fit its schema."""


class ToolError(DurableAgentError):
    """Raise from a tool to report a failure.

    Args:
        message: What went wrong, shown to the model.
        retryable: ``False`` for a failure that another attempt cannot fix
            (e.g. "order not found"); the model sees it at once.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ToolTimeout(ToolError):
    """A tool's upstream timed out (retried with linear backoff)."""


class ToolRateLimited(ToolError):
    """A tool's upstream said to slow down; ``retry_after`` seconds when it says when."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ToolAuthError(ToolError):
    """A tool's upstream rejected its credentials (refreshed once, then fails)."""
