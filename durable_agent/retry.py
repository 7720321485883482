"""Retry policies by error kind.

Temporal owns retries: the Anthropic SDK's own are off and tools are not retried
in-process. Each activity classifies its failure once into an :class:`ErrorKind`
and asks :func:`next_delay` what to do; the answer becomes
``ApplicationError(next_retry_delay=...)`` (retry after exactly that long) or
``ApplicationError(non_retryable=True)`` (give up now). The Temporal
``RetryPolicy`` on the activity only caps the total number of attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Literal

from temporalio.common import RetryPolicy


class ErrorKind(str, Enum):
    """How a failure should be retried."""

    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    SERVER = "server_error"
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    AUTH = "authentication"
    INVALID_REQUEST = "invalid_request"
    #: The request does not fit the model's context window: compact, never resend as is.
    CONTEXT_OVERFLOW = "context_overflow"
    TOOL_CRASH = "tool_crash"


Backoff = Literal["constant", "linear", "exponential"]


@dataclass(frozen=True)
class KindPolicy:
    """How to retry one error kind.

    ``max_attempts`` counts the first attempt (1 = never retried). The delay
    before attempt ``n+1`` after attempt ``n`` failed is ``initial`` (constant),
    ``initial * n`` (linear) or ``initial * 2**(n-1)`` (exponential), capped at
    ``maximum``. A server-provided wait (``retry-after``) replaces the computed one.
    """

    max_attempts: int
    backoff: Backoff = "exponential"
    initial: float = 1.0
    maximum: float = 60.0


RetryPlan = dict[ErrorKind, KindPolicy]

MODEL_RETRY: RetryPlan = {
    ErrorKind.RATE_LIMIT: KindPolicy(max_attempts=8, backoff="exponential", initial=2.0, maximum=120.0),
    ErrorKind.OVERLOADED: KindPolicy(max_attempts=6, backoff="exponential", initial=2.0, maximum=60.0),
    ErrorKind.SERVER: KindPolicy(max_attempts=5, backoff="exponential", initial=1.0, maximum=30.0),
    ErrorKind.CONNECTION: KindPolicy(max_attempts=5, backoff="exponential", initial=1.0, maximum=30.0),
    ErrorKind.TIMEOUT: KindPolicy(max_attempts=3, backoff="linear", initial=5.0, maximum=60.0),
    ErrorKind.AUTH: KindPolicy(max_attempts=2, backoff="constant", initial=0.0),
    ErrorKind.INVALID_REQUEST: KindPolicy(max_attempts=1),
    ErrorKind.CONTEXT_OVERFLOW: KindPolicy(max_attempts=1),
    ErrorKind.TOOL_CRASH: KindPolicy(max_attempts=3, backoff="constant", initial=1.0),
}

#: Model retries are spread by up to this fraction of their delay, so runs limited
#: together (one 429 for all of them) do not all come back at the same instant.
JITTER_FRACTION = 0.25
#: Attempts allowed when the API says ``x-should-retry: true`` for a kind we would not retry.
SHOULD_RETRY_ATTEMPTS = 3
SHOULD_RETRY_DELAY = 1.0

TOOL_RETRY_POLICIES: dict[str, RetryPlan] = {
    # The seed's defaults: a crash is retried twice at a constant pace, a timeout
    # three times with a growing pause, a rate limit honours the reset time.
    "tool_default": {
        ErrorKind.TOOL_CRASH: KindPolicy(max_attempts=3, backoff="constant", initial=1.0),
        ErrorKind.TIMEOUT: KindPolicy(max_attempts=3, backoff="linear", initial=2.0, maximum=30.0),
        ErrorKind.RATE_LIMIT: KindPolicy(max_attempts=6, backoff="exponential", initial=1.0, maximum=60.0),
        ErrorKind.AUTH: KindPolicy(max_attempts=2, backoff="constant", initial=0.0),
        ErrorKind.INVALID_REQUEST: KindPolicy(max_attempts=1),
    },
    # Nothing is retried: for tools whose side effects cannot be made idempotent.
    "no_retry": {kind: KindPolicy(max_attempts=1) for kind in ErrorKind},
    # Flaky upstreams worth waiting for.
    "patient": {
        ErrorKind.TOOL_CRASH: KindPolicy(max_attempts=8, backoff="exponential", initial=1.0, maximum=60.0),
        ErrorKind.TIMEOUT: KindPolicy(max_attempts=5, backoff="linear", initial=5.0, maximum=60.0),
        ErrorKind.RATE_LIMIT: KindPolicy(max_attempts=10, backoff="exponential", initial=2.0, maximum=300.0),
        ErrorKind.AUTH: KindPolicy(max_attempts=2, backoff="constant", initial=0.0),
        ErrorKind.INVALID_REQUEST: KindPolicy(max_attempts=1),
    },
}


def policy_for(plan: RetryPlan, kind: ErrorKind) -> KindPolicy:
    """The plan's policy for ``kind``; an unlisted kind is treated as a crash."""
    return plan.get(kind) or plan.get(ErrorKind.TOOL_CRASH) or KindPolicy(max_attempts=1)


def next_delay(plan: RetryPlan, kind: ErrorKind, attempt: int, retry_after: float | None = None) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` to give up.

    Args:
        plan: The retry plan of the model or the tool.
        kind: What the failure was.
        attempt: The attempt that just failed (1 for the first).
        retry_after: What the server asked for, when it said (honoured exactly).
    """
    policy = policy_for(plan, kind)
    if attempt >= policy.max_attempts:
        return None
    if retry_after is not None and retry_after >= 0:
        return float(retry_after)
    if policy.backoff == "constant":
        delay = policy.initial
    elif policy.backoff == "linear":
        delay = policy.initial * attempt
    else:
        delay = policy.initial * (2 ** (attempt - 1))
    return float(min(delay, policy.maximum))


def model_retry_delay(
    kind: ErrorKind,
    attempt: int,
    *,
    retry_after: float | None = None,
    should_retry: bool | None = None,
    unit_random: float = 0.0,
) -> float | None:
    """Seconds before the next model attempt, or ``None`` to give up.

    :data:`MODEL_RETRY` decides, then the API's ``x-should-retry`` header overrides it
    (``false``: never; ``true``: retry a kind we would not, up to
    :data:`SHOULD_RETRY_ATTEMPTS`), then jitter is added: up to
    :data:`JITTER_FRACTION` more, never less, so a server's ``retry-after`` is still honoured.

    Args:
        kind: What the failure was.
        attempt: The attempt that just failed (1 for the first).
        retry_after: What the server asked for, when it said.
        should_retry: The ``x-should-retry`` header as a boolean, when present.
        unit_random: A number in [0, 1) (the activity passes ``random.random()``).
    """
    if should_retry is False:
        return None
    delay = next_delay(MODEL_RETRY, kind, attempt, retry_after)
    if delay is None and should_retry and attempt < SHOULD_RETRY_ATTEMPTS and kind is not ErrorKind.CONTEXT_OVERFLOW:
        delay = retry_after if retry_after is not None else SHOULD_RETRY_DELAY * attempt
    if delay is None:
        return None
    return delay * (1.0 + JITTER_FRACTION * min(max(unit_random, 0.0), 1.0))


#: The failure type a retry policy gives an activity that ran past its start-to-close timeout.
START_TO_CLOSE_TIMEOUT = "TemporalTimeout:StartToClose"


def unknown_outcome_message(what_happened: str) -> str:
    """What the model reads when a tool that changes the world timed out and was not run again.

    Args:
        what_happened: e.g. ``"issue_refund timed out after 2s"``.
    """
    return (
        f"OUTCOME UNKNOWN: {what_happened}, so it may or may not have done its work. It was not run again, "
        "because running it twice could do it twice. Check whether it took effect before calling it again; "
        "if you cannot, tell the user that its outcome is unknown."
    )


def max_attempts(plan: RetryPlan) -> int:
    """The largest attempt count in ``plan``: the cap on the Temporal retry policy."""
    return max(p.max_attempts for p in plan.values())


def temporal_policy(plan: RetryPlan, *, retry_timeouts: bool = True) -> RetryPolicy:
    """The Temporal ``RetryPolicy`` to put on an activity that follows ``plan``.

    The activity sets each delay itself through ``next_retry_delay``; this policy's
    own backoff only applies to failures the activity did not classify (a worker
    crash, a heartbeat or start-to-close timeout).

    Args:
        plan: The retry plan of the model or the tool.
        retry_timeouts: ``False`` for a tool that changes the world and is not idempotent: an
            attempt that ran past its start-to-close timeout may have done its work, so it is
            not run again. A heartbeat timeout (the worker died) is still retried, with the
            call's idempotency key.
    """
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=max_attempts(plan),
        non_retryable_error_types=None if retry_timeouts else [START_TO_CLOSE_TIMEOUT],
    )
