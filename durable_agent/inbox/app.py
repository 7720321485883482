"""The reviewer inbox: every approval waiting in the namespace, and Approve/Reject buttons that sign.

The inbox lists runs through the ``AgentAwaitingApproval`` search attribute the
workflow sets while an approval waits, asks each for its ``status`` (what waits,
why, the last steps), and signs each decision with its own key as a *delegate*
for the signed-in reviewer, bound to the run, the approval and the arguments the
reviewer was shown. Whether that reviewer may decide is the run's call, made
against the allow-list and keys as the workers read them at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, unquote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from durable_agent import contracts
from durable_agent.decisions import signed_review
from durable_agent.errors import failure_message
from durable_agent.inbox import pages
from durable_agent.inbox.pages import InboxItem
from durable_agent.inbox.signin import SESSION_COOKIE, SignIn
from durable_agent.schemas import ApprovalRecord, StatusView
from durable_agent.signing import SigningKey

log = logging.getLogger("durable_agent.inbox")

#: How long a decision the inbox signs stays valid: it is sent at once.
SIGNATURE_TTL_SECONDS = 300
#: How often the page's live view looks for new or decided approvals.
POLL_SECONDS = 1.0
#: Most runs listed at once.
MAX_RUNS = 200


class Approvals:
    """The approvals waiting in a namespace, looked up at most once per ``POLL_SECONDS`` however many pages watch."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._items: list[InboxItem] = []
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def _status(self, workflow_id: str, run_id: str | None) -> StatusView | None:
        try:
            handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
            raw = await asyncio.wait_for(handle.query(contracts.QUERY_STATUS), timeout=10)
            return StatusView.model_validate(raw)
        except Exception as exc:  # noqa: BLE001 - a run that closed or cannot answer is not listed
            log.debug("cannot query %s: %s", workflow_id, exc)
            return None

    async def fetch(self) -> list[InboxItem]:
        """Look now: list the marked runs, ask each what waits; oldest deadline first."""
        query = f"{contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL} = true AND ExecutionStatus = 'Running'"
        runs = [run async for run in self.client.list_workflows(query, limit=MAX_RUNS)]
        statuses = await asyncio.gather(*(self._status(run.id, run.run_id) for run in runs))
        items = [
            InboxItem(workflow_id=run.id, agent=status.agent, approval=approval)
            for run, status in zip(runs, statuses, strict=True)
            if status is not None
            for approval in status.pending_approvals
        ]
        return sorted(items, key=lambda item: (item.approval.deadline, item.key))

    async def current(self) -> list[InboxItem]:
        """The last look if it is fresh, else a new one."""
        async with self._lock:
            if time.monotonic() - self._at >= POLL_SECONDS:
                self._items = await self.fetch()
                self._at = time.monotonic()
            return self._items

    def invalidate(self) -> None:
        """Forget the last look (a decision was just sent)."""
        self._at = 0.0

    async def find(self, workflow_id: str, approval_id: str) -> InboxItem | None:
        """The approval as the run says now (never a cached view: a decision is signed from it)."""
        status = await self._status(workflow_id, None)
        if status is None:
            return None
        for approval in status.pending_approvals:
            if approval.approval_id == approval_id:
                return InboxItem(workflow_id=workflow_id, agent=status.agent, approval=approval)
        return None


def create_app(client: Client, key: SigningKey, signin: SignIn) -> Starlette:
    """The inbox as an ASGI app.

    Args:
        client: Connected to the namespace whose approvals are listed.
        key: The inbox's signing key; profiles trust its name under ``delegates``.
        signin: How reviewers sign in (auth-proxy header or tokens).
    """
    approvals = Approvals(client)

    def html(body: str, request: Request, *, status: int = 200, title: str = "Approvals") -> HTMLResponse:
        reviewer = signin.reviewer(request)
        text = pages.page(body, reviewer=reviewer, csrf=signin.csrf_token(request), signs_out=signin.uses_tokens, title=title)
        return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})

    def must_sign_in(request: Request) -> Response:
        if signin.uses_tokens:
            return RedirectResponse("/signin?" + urlencode({"next": request.url.path}), status_code=303)
        return PlainTextResponse(f"Sign in through the auth proxy (no {signin.trust_header} header).", status_code=401)

    async def inbox(request: Request) -> Response:
        reviewer = signin.reviewer(request)
        if reviewer is None:
            return must_sign_in(request)
        focus = None
        items = await approvals.current()
        if "workflow_id" in request.path_params:
            # A link to one approval (from a notification): ask its run, not the list's last look.
            workflow_id, approval_id = unquote(request.path_params["workflow_id"]), unquote(request.path_params["approval_id"])
            focus = f"{workflow_id}|{approval_id}"
            found = await approvals.find(workflow_id, approval_id)
            items = [item for item in items if item.key != focus] + ([found] if found else [])
        body = pages.inbox_body(
            items,
            csrf=signin.csrf_token(request),
            now=datetime.now(timezone.utc),
            notice=request.query_params.get("notice"),
            refused=request.query_params.get("refused") == "1",
            focus=focus,
        )
        return html(body, request)

    async def fragment(request: Request) -> Response:
        if signin.reviewer(request) is None:
            return PlainTextResponse("signed out", status_code=401)
        items = await approvals.current()
        return HTMLResponse(pages.cards(items, csrf=signin.csrf_token(request), now=datetime.now(timezone.utc)))

    async def events(request: Request) -> Response:
        if signin.reviewer(request) is None:
            return PlainTextResponse("signed out", status_code=401)

        async def stream() -> AsyncIterator[str]:
            seen: list[str] | None = None
            quiet = 0
            while not await request.is_disconnected():
                try:
                    keys = [item.key for item in await approvals.current()]
                except Exception as exc:  # noqa: BLE001 - the server may be restarting; keep the page open
                    log.warning("cannot list approvals: %s", exc)
                    keys = seen or []
                if seen is not None and keys != seen:
                    yield f"event: changed\ndata: {len(keys)}\n\n"
                    quiet = 0
                elif quiet >= 15:
                    yield ": still here\n\n"  # keeps proxies from closing an idle stream
                    quiet = 0
                seen = keys
                quiet += 1
                await asyncio.sleep(POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def form(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", errors="replace")
        return {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}

    async def decide(request: Request) -> Response:
        reviewer = signin.reviewer(request)
        if reviewer is None:
            return must_sign_in(request)
        fields = await form(request)
        if not signin.csrf_ok(request, fields.get("csrf", "")):
            return PlainTextResponse("This form is stale or came from another site; reload the inbox.", status_code=403)
        workflow_id = unquote(request.path_params["workflow_id"])
        approval_id = unquote(request.path_params["approval_id"])
        verdict = fields.get("verdict")
        comment = fields.get("comment", "").strip() or None
        back = f"/approvals/{quote(workflow_id, safe='')}/{quote(approval_id, safe='')}"
        item = await approvals.find(workflow_id, approval_id)
        if verdict not in ("approve", "reject"):
            message, refused = "Choose Approve or Reject.", True
        elif item is None:
            message, refused = f"{approval_id} is no longer waiting: it was decided or timed out.", True
        elif item.approval.run_id != fields.get("run_id") or item.approval.args_sha256 != fields.get("args_sha256"):
            message, refused = f"{approval_id} is not the action you were shown; look again before deciding.", True
        else:
            message, refused = await _send(client, key, item, reviewer=reviewer, approved=verdict == "approve", comment=comment)
            approvals.invalidate()
        return RedirectResponse(back + "?" + urlencode({"notice": message, "refused": "1" if refused else "0"}), status_code=303)

    async def signin_page(request: Request) -> Response:
        if not signin.uses_tokens:
            return RedirectResponse("/", status_code=303)
        return html(pages.signin_body(request.query_params.get("next", "/"), None), request, title="Sign in")

    async def signin_post(request: Request) -> Response:
        if not signin.uses_tokens:
            return RedirectResponse("/", status_code=303)
        fields = await form(request)
        next_path = fields.get("next", "/")
        if not next_path.startswith("/") or next_path.startswith("//"):
            next_path = "/"  # only ever back into the inbox
        session = signin.sign_in(fields.get("name", "").strip(), fields.get("token", "").strip())
        if session is None:
            return html(pages.signin_body(next_path, "Unknown name or token."), request, status=401, title="Sign in")
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    async def signout(request: Request) -> Response:
        fields = await form(request)
        if signin.csrf_ok(request, fields.get("csrf", "")):
            signin.sign_out(request)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/", inbox),
            Route("/approvals/{workflow_id}/{approval_id}", inbox, methods=["GET"]),
            Route("/approvals/{workflow_id}/{approval_id}", decide, methods=["POST"]),
            Route("/fragment", fragment),
            Route("/events", events),
            Route("/signin", signin_page, methods=["GET"]),
            Route("/signin", signin_post, methods=["POST"]),
            Route("/signout", signout, methods=["POST"]),
            Route("/healthz", health),
        ]
    )


async def _send(client: Client, key: SigningKey, item: InboxItem, *, reviewer: str, approved: bool, comment: str | None) -> tuple[str, bool]:
    """Sign the decision as the inbox, for ``reviewer``, and send it to the execution it was shown from."""
    request = signed_review(
        key,
        item.approval,
        namespace=client.namespace,
        workflow_id=item.workflow_id,
        approved=approved,
        reviewer=reviewer,
        comment=comment,
        expires_at=int(time.time()) + SIGNATURE_TTL_SECONDS,
    )
    handle = client.get_workflow_handle(item.workflow_id, run_id=item.approval.run_id)
    try:
        raw = await handle.execute_update(contracts.UPDATE_REVIEW, request.model_dump(mode="json", exclude_none=True))
    except WorkflowUpdateFailedError as exc:
        return f"Refused: {failure_message(exc)}", True
    except RPCError as exc:
        return f"Refused: {exc.message}", True
    record = ApprovalRecord.model_validate(raw)
    return f"{record.approval_id} {record.status} by {record.reviewer}.", False


@contextlib.asynccontextmanager
async def serving(app: Starlette, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn until the block ends; yields the base URL."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (port taken...)
            raise RuntimeError("the inbox stopped before it started")
        await asyncio.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
