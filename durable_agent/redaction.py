"""What may leave a run in clear, on which channel; and what never enters a payload.

With ``AGENT_ENCRYPTION_KEYS`` set, Temporal payloads and the content store hold
ciphertext. The channels the product writes beside them (the trace sink, the
worker's logs, the reviewer webhook, OpenTelemetry spans) then carry ids,
statuses, costs and refs, never what a run handles (task, arguments, reasoning,
results, answers), unless the operator opts in for one channel:
``AGENT_TRACE_PLAINTEXT=1`` for the trace sink, ``webhook_plaintext = true`` in a
profile's ``[agents.NAME.approval]`` for that profile's webhook. Logs and spans
have no opt-in. A key holder reads the full records with ``durable-agent trace``.

Configuration secrets never enter a payload, encrypted or not: the reviewer
webhook's URL (for Slack, the URL is the credential) stays in the worker's
configuration, where the notify activity reads it by the run's agent name.
"""

from __future__ import annotations

import os
import re

from durable_agent.schemas import ResolvedAgent

ENCRYPTION_KEYS_ENV = "AGENT_ENCRYPTION_KEYS"
TRACE_PLAINTEXT_ENV = "AGENT_TRACE_PLAINTEXT"
#: Said in place of what a channel may not carry.
WITHHELD = "withheld: payloads are encrypted"

_TRUE = ("1", "true", "yes", "on")
_KIND = re.compile(r"[A-Z][A-Z0-9_]*")


def encryption_on() -> bool:
    """Whether this process encrypts payloads and stored content (``AGENT_ENCRYPTION_KEYS`` is set)."""
    return bool(os.environ.get(ENCRYPTION_KEYS_ENV, "").strip())


def content_in_logs() -> bool:
    """Whether logs, spans and error texts may quote what a run handles: only while nothing is encrypted."""
    return not encryption_on()


def trace_plaintext() -> bool:
    """Whether the trace sink writes whole records: encryption off, or ``AGENT_TRACE_PLAINTEXT`` set true."""
    return not encryption_on() or os.environ.get(TRACE_PLAINTEXT_ENV, "").strip().lower() in _TRUE


def warning_kind(text: str) -> str:
    """``POSSIBLE_LOOP`` of ``"POSSIBLE_LOOP: search_kb called 3 times..."``; ``WARNING`` for a text with no kind."""
    head = text.split(":", 1)[0].strip()
    return head if _KIND.fullmatch(head) else "WARNING"


def without_secrets(agent: ResolvedAgent) -> ResolvedAgent:
    """``agent`` as a payload may carry it: without its webhook URL.

    The ``resolve_agent`` activity never puts the URL in; runs resolved by older
    workers have it in their state, and this keeps it out of what they carry on.
    """
    if agent.approval.webhook_url is None:
        return agent
    return agent.model_copy(update={"approval": agent.approval.model_copy(update={"webhook_url": None})})
