"""The ``notify_reviewer`` activity: tell a person an approval waits (a log line, a webhook).

The webhook's URL is a secret (for Slack, the URL is the credential), so it is in
no payload: the activity reads it from the worker's configuration, by the run's
agent. While payloads are encrypted, the log line and the webhook body say which
approval waits, for what tool and how to decide it, never the arguments, the
policy's reason (it quotes amounts) or the last steps, unless the profile sets
``webhook_plaintext = true`` (the webhook body only).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_agent import contracts, redaction
from durable_agent.activities.common import log
from durable_agent.policy import approve_command
from durable_agent.profiles import AgentsConfig
from durable_agent.schemas import ApprovalPolicy, ReviewerNotice

#: What of a pending approval a webhook body names while payloads are encrypted.
REDACTED_APPROVAL_FIELDS = frozenset({"approval_id", "run_id", "tool", "risk", "deadline", "requested_at", "require_signature"})


class NotifyActivities:
    """Reviewer notifications, bound to the worker's configuration (the webhook and the inbox link)."""

    config: AgentsConfig

    @activity.defn(name=contracts.ACTIVITY_NOTIFY_REVIEWER)
    async def notify_reviewer(self, notice: ReviewerNotice) -> None:
        """Tell a human that an approval waits: a log line always, a JSON POST to the profile's webhook when set.

        The POST body is :func:`notice_body`. The URL comes from this worker's
        configuration; a ``webhook_url`` in the notice (older workers put it there) is ignored.
        A failure raises a retryable ``WebhookFailed``; the workflow never waits for this activity,
        so a webhook that stays down delays no decision.
        """
        approval = notice.approval
        command = notice.approve_command or approve_command(notice.workflow_id, approval.approval_id, namespace=notice.namespace)
        profile = self.config.agents.get(notice.agent)
        policy = profile.approval if profile is not None else None
        if activity.info().attempt == 1:  # one line per approval, not one per webhook retry
            _log_waiting(notice, command)
            if policy is None:
                log.warning("no profile %r in this worker's configuration: no webhook for approval %s", notice.agent, approval.approval_id)
        if policy is None or not policy.webhook_url:
            return
        url = policy.webhook_url
        fields: dict[str, Any] = {"approve_command": command}
        link = inbox_link(self.config, notice)
        if link:
            fields["inbox_url"] = link
        body = json.dumps(notice_body(notice, fields, policy)).encode()
        # Webhook URLs often carry a token in the path: errors name the host only.
        host = urllib.parse.urlsplit(url).netloc or "(no host)"

        def post() -> int:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status

        try:
            await asyncio.to_thread(post)
        except urllib.error.HTTPError as exc:
            raise ApplicationError(f"reviewer webhook at {host} answered {exc.code}", type="WebhookFailed") from None
        except OSError as exc:  # refused, unreachable, timed out
            raise ApplicationError(f"reviewer webhook at {host} failed: {exc}", type="WebhookFailed") from None


def _log_waiting(notice: ReviewerNotice, command: str) -> None:
    approval = notice.approval
    if redaction.content_in_logs():
        log.warning(
            "approval %s waits in %s: %s %s (%s; deadline %s); approve with: %s",
            approval.approval_id, notice.workflow_id, approval.tool, json.dumps(approval.args, sort_keys=True),
            approval.reason, approval.deadline.isoformat(), command,
        )
    else:
        log.warning(
            "approval %s waits in %s: %s (risk %s; arguments and reason %s; deadline %s); approve with: %s",
            approval.approval_id, notice.workflow_id, approval.tool, approval.risk, redaction.WITHHELD,
            approval.deadline.isoformat(), command,
        )


def notice_body(notice: ReviewerNotice, fields: dict[str, Any], policy: ApprovalPolicy) -> dict[str, Any]:
    """The webhook's JSON body: ``"event": "approval_requested"``, the notice (never a URL) and ``fields``.

    While payloads are encrypted (and the profile does not set ``webhook_plaintext``),
    the approval is named by :data:`REDACTED_APPROVAL_FIELDS` only and ``"redacted": true``
    says so: a reviewer reads the rest in the inbox or with the keys.
    """
    if redaction.content_in_logs() or policy.webhook_plaintext:
        return {"event": "approval_requested", **notice.model_dump(mode="json", exclude={"webhook_url"}), **fields}
    return {
        "event": "approval_requested",
        **notice.model_dump(mode="json", include={"workflow_id", "namespace", "agent", "approve_command", "require_signature"}),
        "approval": notice.approval.model_dump(mode="json", include=set(REDACTED_APPROVAL_FIELDS)),
        **fields,
        "redacted": True,
    }


def inbox_link(config: AgentsConfig, notice: ReviewerNotice) -> str | None:
    """The address of this approval in the reviewer inbox, when the agent's profile names the inbox."""
    profile = config.agents.get(notice.agent)
    base = profile.approval.inbox_url if profile is not None else None
    if not base:
        return None
    workflow_id = urllib.parse.quote(notice.workflow_id, safe="")
    approval_id = urllib.parse.quote(notice.approval.approval_id, safe="")
    return f"{base.rstrip('/')}/approvals/{workflow_id}/{approval_id}"
