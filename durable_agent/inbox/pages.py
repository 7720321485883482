"""The reviewer inbox's HTML: server-rendered, no build step, a few lines of script for live updates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote

from durable_agent.activities.approvals import index_command
from durable_agent.schemas import PendingApproval


@dataclass(frozen=True)
class InboxItem:
    """One approval waiting, with the run it waits in."""

    workflow_id: str
    agent: str | None
    approval: PendingApproval

    @property
    def key(self) -> str:
        return f"{self.workflow_id}|{self.approval.approval_id}"

    @property
    def anchor(self) -> str:
        return "a-" + hashlib.sha256(self.key.encode()).hexdigest()[:12]

    @property
    def path(self) -> str:
        return f"/approvals/{quote(self.workflow_id, safe='')}/{quote(self.approval.approval_id, safe='')}"


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 12px 24px; display: flex; align-items: center; gap: 16px; }
header h1 { font-size: 18px; margin: 0; flex: 1; }
header form { margin: 0; }
main { max-width: 980px; margin: 20px auto; padding: 0 16px; }
.notice { padding: 10px 14px; border-radius: 6px; margin-bottom: 16px; background: #e6f4ea; border: 1px solid #9bd3ae; }
.notice.refused { background: #fdecea; border-color: #f1a9a0; }
.notice.setup { background: #fff6e0; border-color: #e7c46c; }
.notice code { background: #fff; padding: 1px 4px; border-radius: 3px; font-size: 13px; }
.notice pre { background: #fff; margin-top: 6px; }
.approval { background: #fff; border: 1px solid #d8dce3; border-radius: 8px; padding: 16px 20px; margin-bottom: 16px; }
.approval.focus { border: 2px solid #3b6fd8; }
.approval h2 { font-size: 17px; margin: 0 0 8px; }
.risk { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #eee; text-transform: uppercase; }
.risk.high { background: #fbd5d0; } .risk.medium { background: #fde9c4; } .risk.low { background: #dcefdc; }
dl { display: grid; grid-template-columns: 110px 1fr; gap: 4px 12px; margin: 8px 0; }
dt { color: #5b6475; } dd { margin: 0; }
pre { background: #f6f7f9; padding: 8px; border-radius: 4px; overflow-x: auto; margin: 0; font-size: 13px; }
ol.steps { margin: 4px 0; padding-left: 20px; font-size: 13px; }
textarea { width: 100%; box-sizing: border-box; min-height: 48px; font: inherit; }
.actions { display: flex; gap: 8px; margin-top: 8px; }
button { font: inherit; padding: 6px 16px; border-radius: 6px; border: 1px solid #888; cursor: pointer; }
button.approve { background: #1f7a3d; color: #fff; border-color: #1f7a3d; }
button.reject { background: #b3261e; color: #fff; border-color: #b3261e; }
.meta { color: #5b6475; font-size: 12px; margin-top: 8px; }
.empty { color: #5b6475; text-align: center; padding: 40px 0; }
"""

#: Live updates: the server says "changed"; the page fetches the list and keeps the cards it has
#: (so a comment being typed is not lost), adds the new ones and drops the decided.
SCRIPT = """
const list = document.getElementById('approvals');
function merge(html) {
  const t = document.createElement('template');
  t.innerHTML = html;
  const old = new Map([...list.children].filter(c => c.dataset.key).map(c => [c.dataset.key, c]));
  list.replaceChildren(...[...t.content.children].map(c => old.get(c.dataset.key) || c));
}
const events = new EventSource('/events');
events.addEventListener('changed', async () => {
  const response = await fetch('/fragment', {credentials: 'same-origin'});
  if (response.ok) merge(await response.text());
  else if (response.status === 401) location.reload();
});
// The session ended (expired, or the reviewer's token was removed): back to the sign-in page.
events.addEventListener('signedout', () => { events.close(); location.reload(); });
"""

#: What a ``?notice=`` code says: fixed texts, so a link cannot put words of its own in the banner.
#: Each is (text, refused); details (the run's answer) come only from a notice the inbox signed.
NOTICES: dict[str, tuple[str, bool]] = {
    "approved": ("Approved: the run goes on with the action.", False),
    "rejected": ("Rejected: the action was not executed; the model reads your comment.", False),
    "refused": ("The run refused your decision; the approval still waits.", True),
    "gone": ("That approval is not waiting for you: it was decided or timed out, or it is not yours to decide.", True),
    "changed": ("That is not the action you were shown: look at it again before deciding.", True),
    "choose": ("Choose Approve or Reject.", True),
}

#: The sign-in page's fixed notices (``?ended=1``).
SESSION_ENDED = "Your session has ended (it expired, or your token was changed or removed). Sign in again."


def _money(amount: float | None, currency: str | None) -> str:
    if amount is None:
        return "&mdash;"
    return escape(f"{amount:,.2f} {currency or ''}".strip())


def _deadline(deadline: datetime, now: datetime) -> str:
    left = (deadline - now).total_seconds()
    when = deadline.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if left <= 0:
        return f"{when} (passed)"
    return f"{when} (in {int(left // 60)} min {int(left % 60)} s)"


def _step(record: dict[str, Any]) -> str:
    action = record.get("action") or {}
    observation = record.get("observation") or {}
    if action.get("type") == "final_answer":
        what = "answered"
    else:
        args = json.dumps(action.get("args") or {}, sort_keys=True)
        what = f"{action.get('tool')}({args})"
    result = observation.get("result_preview") or observation.get("message") or ""
    status = observation.get("status", "")
    return f"<li>step {escape(str(record.get('step', '?')))}: {escape(what)} &rarr; {escape(str(status))}" + (
        f": <span>{escape(str(result)[:160])}</span>" if result else ""
    ) + "</li>"


def card(item: InboxItem, *, csrf: str, now: datetime, focus: bool = False) -> str:
    """One approval: what, why, how much, until when, the last steps, and the decision form."""
    a = item.approval
    steps = "".join(_step(r) for r in a.context[-3:]) or "<li>(none)</li>"
    return f"""<article class="approval{' focus' if focus else ''}" id="{item.anchor}" data-key="{escape(item.key)}">
  <h2>{escape(a.tool)} <span class="risk {escape(a.risk)}">{escape(a.risk)} risk</span></h2>
  <dl>
    <dt>Agent</dt><dd>{escape(item.agent or '?')}</dd>
    <dt>Run</dt><dd>{escape(item.workflow_id)}</dd>
    <dt>Amount</dt><dd class="amount">{_money(a.amount, a.currency)}</dd>
    <dt>Why</dt><dd class="reason">{escape(a.reason)}</dd>
    <dt>Deadline</dt><dd>{escape(_deadline(a.deadline, now))}</dd>
    <dt>Arguments</dt><dd><pre>{escape(json.dumps(a.args, indent=2, sort_keys=True))}</pre></dd>
    <dt>Last steps</dt><dd><ol class="steps">{steps}</ol></dd>
  </dl>
  <form method="post" action="{escape(item.path)}">
    <input type="hidden" name="csrf" value="{escape(csrf)}">
    <input type="hidden" name="run_id" value="{escape(a.run_id)}">
    <input type="hidden" name="args_sha256" value="{escape(a.args_sha256)}">
    <label>Comment (the agent reads it if you reject)
      <textarea name="comment" aria-label="Comment on {escape(a.approval_id)}"></textarea></label>
    <div class="actions">
      <button class="approve" name="verdict" value="approve">Approve</button>
      <button class="reject" name="verdict" value="reject">Reject</button>
    </div>
  </form>
  <div class="meta">{escape(a.approval_id)} &middot; run {escape(a.run_id)} &middot; args sha256 {escape(a.args_sha256[:16])}&hellip;</div>
</article>"""


def cards(items: list[InboxItem], *, csrf: str, now: datetime, focus: str | None = None) -> str:
    """The list's inner HTML (also what live updates fetch)."""
    if not items:
        return '<p class="empty">No approvals are waiting for you.</p>'
    return "\n".join(card(item, csrf=csrf, now=now, focus=item.key == focus) for item in items)


def page(body: str, *, reviewer: str | None, csrf: str = "", signs_out: bool = False, title: str = "Approvals") -> str:
    """A whole page around ``body``."""
    who = ""
    if reviewer:
        who = f'<span>Signed in as <strong class="reviewer">{escape(reviewer)}</strong></span>'
        if signs_out:
            who += (
                f'<form method="post" action="/signout"><input type="hidden" name="csrf" value="{escape(csrf)}">'
                '<button>Sign out</button></form>'
            )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} &middot; durable-agent</title><style>{STYLE}</style></head>
<body><header><h1>durable-agent &middot; {escape(title)}</h1>{who}</header>
<main>{body}</main></body></html>"""


def listing_problem(*, index_missing: bool, problem: str | None, profiles_problem: str | None, namespace: str) -> str:
    """Why the list is empty or incomplete, for the operator: the missing search attribute, an error, a broken agents.toml."""
    notes = []
    if index_missing:
        notes.append(
            f"The namespace {escape(namespace)} has no search attribute <code>AgentAwaitingApproval</code>, so the inbox "
            "cannot list waiting approvals (a link to one approval still works). Register it once:"
            f"<pre>{escape(index_command(namespace))}</pre>"
        )
    elif problem:
        notes.append(f"The inbox cannot list approvals now: {escape(problem)}")
    if profiles_problem:
        notes.append(f"No approval is shown until the agent profiles can be read: {escape(profiles_problem)}")
    return "".join(f'<div class="notice setup" role="alert">{note}</div>' for note in notes)


def inbox_body(
    items: list[InboxItem], *, csrf: str, now: datetime, notice: str | None, detail: str | None, focus: str | None, setup: str = ""
) -> str:
    """The inbox page's body: the banners, then the approvals this reviewer may decide.

    Args:
        notice: A code of :data:`NOTICES` (anything else shows nothing).
        detail: The run's answer, from a notice the inbox signed for this reviewer.
        setup: The :func:`listing_problem` banners.
    """
    note = ""
    if notice in NOTICES:
        text, refused = NOTICES[notice]
        more = f" {escape(detail)}" if detail else ""
        note = f'<div class="notice{" refused" if refused else ""}" role="status">{escape(text)}{more}</div>'
    elif focus and not any(item.key == focus for item in items):
        note = f'<div class="notice refused" role="status">{escape(NOTICES["gone"][0])}</div>'
    listed = cards(items, csrf=csrf, now=now, focus=focus)
    if setup and not items:
        listed = '<p class="empty">Nothing can be listed until the problem above is fixed.</p>'
    return f"""{setup}{note}<section id="approvals">{listed}</section>
<script>{SCRIPT}</script>"""


def signin_body(next_path: str, error: str | None, *, ended: bool = False) -> str:
    problem = f'<div class="notice refused" role="alert">{escape(error)}</div>' if error else ""
    if ended and not error:
        problem = f'<div class="notice refused" role="status">{escape(SESSION_ENDED)}</div>'
    return f"""{problem}<form method="post" action="/signin" class="approval">
  <input type="hidden" name="next" value="{escape(next_path)}">
  <dl><dt><label for="name">Name</label></dt><dd><input id="name" name="name" autocomplete="username"></dd>
  <dt><label for="token">Token</label></dt><dd><input id="token" name="token" type="password" autocomplete="current-password"></dd></dl>
  <button class="approve">Sign in</button>
</form>"""
