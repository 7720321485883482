"""The ``notify_reviewer`` activity: tell a person an approval waits (a log line, a webhook)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_agent import contracts
from durable_agent.activities.common import log
from durable_agent.policy import approve_command
from durable_agent.profiles import AgentsConfig
from durable_agent.schemas import ReviewerNotice


class NotifyActivities:
    """Reviewer notifications, bound to the worker's configuration (for the inbox link)."""

    config: AgentsConfig

    @activity.defn(name=contracts.ACTIVITY_NOTIFY_REVIEWER)
    async def notify_reviewer(self, notice: ReviewerNotice) -> None:
        """Tell a human that an approval waits: a log line always, a JSON POST to the webhook when set.

        The POST body is the notice (without the URL) plus ``"event": "approval_requested"``.
        A failure raises a retryable ``WebhookFailed``; the workflow never waits for this activity,
        so a webhook that stays down delays no decision.
        """
        approval = notice.approval
        command = notice.approve_command or approve_command(notice.workflow_id, approval.approval_id, namespace=notice.namespace)
        if activity.info().attempt == 1:  # one line per approval, not one per webhook retry
            log.warning(
                "approval %s waits in %s: %s %s (%s; deadline %s); approve with: %s",
                approval.approval_id, notice.workflow_id, approval.tool, json.dumps(approval.args, sort_keys=True),
                approval.reason, approval.deadline.isoformat(), command,
            )
        url = notice.webhook_url
        if not url:
            return
        fields: dict[str, Any] = {"approve_command": command}
        link = inbox_link(self.config, notice)
        if link:
            fields["inbox_url"] = link
        body = json.dumps(
            {"event": "approval_requested", **notice.model_dump(mode="json", exclude={"webhook_url"}), **fields}
        ).encode()
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


def inbox_link(config: AgentsConfig, notice: ReviewerNotice) -> str | None:
    """The address of this approval in the reviewer inbox, when the agent's profile names the inbox."""
    profile = config.agents.get(notice.agent)
    base = profile.approval.inbox_url if profile is not None else None
    if not base:
        return None
    workflow_id = urllib.parse.quote(notice.workflow_id, safe="")
    approval_id = urllib.parse.quote(notice.approval.approval_id, safe="")
    return f"{base.rstrip('/')}/approvals/{workflow_id}/{approval_id}"
