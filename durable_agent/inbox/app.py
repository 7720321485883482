"""The reviewer inbox: the approvals a reviewer may decide, and Approve/Reject buttons that sign.

The inbox lists runs through the ``AgentAwaitingApproval`` search attribute the
workflow sets while an approval waits (:mod:`durable_agent.inbox.listing`), shows
each reviewer only the approvals their agents' profiles let them decide
(:mod:`durable_agent.inbox.access`), and signs each decision with its own key as
a *delegate* for the signed-in reviewer, bound to the run, the approval and the
arguments the reviewer was shown. Who is signed in is checked again on every
request (:mod:`durable_agent.inbox.signin`); whether the decision counts is the
run's call, made against the allow-list and keys as the workers read them then.
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
from durable_agent.inbox.access import Deciders
from durable_agent.inbox.listing import POLL_SECONDS, Approvals
from durable_agent.inbox.pages import InboxItem
from durable_agent.inbox.signin import NOTICE_COOKIE, SESSION_COOKIE, SignIn
from durable_agent.schemas import ApprovalRecord
from durable_agent.signing import SigningKey

log = logging.getLogger("durable_agent.inbox")

#: How long a decision the inbox signs stays valid: it is sent at once.
SIGNATURE_TTL_SECONDS = 300


def create_app(client: Client, key: SigningKey, signin: SignIn, deciders: Deciders) -> Starlette:
    """The inbox as an ASGI app.

    Args:
        client: Connected to the namespace whose approvals are listed.
        key: The inbox's signing key; profiles trust its name under ``delegates``.
        signin: How reviewers sign in (auth-proxy header or tokens).
        deciders: Who may decide which agent's approvals (the workers' ``agents.toml``).
    """
    approvals = Approvals(client)

    def html(body: str, request: Request, *, status: int = 200, title: str = "Approvals") -> HTMLResponse:
        reviewer = signin.reviewer(request)
        text = pages.page(body, reviewer=reviewer, csrf=signin.csrf_token(request), signs_out=signin.uses_tokens, title=title)
        return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})

    def must_sign_in(request: Request) -> Response:
        if signin.uses_tokens:
            # A session that ended keeps its cookie until the next sign-in replaces it, so every page says why.
            query = {"next": request.url.path} | ({"ended": "1"} if signin.session_ended(request) else {})
            return RedirectResponse("/signin?" + urlencode(query), status_code=303)
        return PlainTextResponse(f"Sign in through the auth proxy (no {signin.trust_header} header).", status_code=401)

    async def visible(reviewer: str) -> tuple[list[InboxItem], str]:
        """The approvals ``reviewer`` may decide, and the banners saying why the list may be incomplete."""
        listing = await approvals.current()
        items = [item for item in listing.items if deciders.may_decide(reviewer, item.agent)]
        setup = pages.listing_problem(
            index_missing=listing.index_missing, problem=listing.problem, profiles_problem=deciders.problem, namespace=client.namespace
        )
        return items, setup

    async def inbox(request: Request) -> Response:
        reviewer = signin.reviewer(request)
        if reviewer is None:
            return must_sign_in(request)
        items, setup = await visible(reviewer)
        focus = detail = None
        if "workflow_id" in request.path_params:
            # A link to one approval (from a notification): ask its run, not the list's last look.
            workflow_id, approval_id = unquote(request.path_params["workflow_id"]), unquote(request.path_params["approval_id"])
            focus = f"{workflow_id}|{approval_id}"
            found = await approvals.find(workflow_id, approval_id)
            items = [item for item in items if item.key != focus]
            if found is not None and deciders.may_decide(reviewer, found.agent):
                items.append(found)
            detail = signin.read_notice(request, focus)
        body = pages.inbox_body(
            items,
            csrf=signin.csrf_token(request),
            now=datetime.now(timezone.utc),
            notice=request.query_params.get("notice"),
            detail=detail,
            focus=focus,
            setup=setup,
        )
        response = html(body, request)
        if request.cookies.get(NOTICE_COOKIE):
            response.delete_cookie(NOTICE_COOKIE, path="/")  # read once
        return response

    async def fragment(request: Request) -> Response:
        reviewer = signin.reviewer(request)
        if reviewer is None:
            return PlainTextResponse("signed out", status_code=401)
        items, _ = await visible(reviewer)
        return HTMLResponse(pages.cards(items, csrf=signin.csrf_token(request), now=datetime.now(timezone.utc)))

    async def events(request: Request) -> Response:
        if signin.reviewer(request) is None:
            return PlainTextResponse("signed out", status_code=401)

        async def stream() -> AsyncIterator[str]:
            seen: list[str] | None = None
            quiet = 0
            while not await request.is_disconnected():
                reviewer = signin.reviewer(request)  # the session may expire or be revoked while the page is open
                if reviewer is None:
                    yield "event: signedout\ndata: \n\n"
                    return
                try:
                    keys = [item.key for item in (await visible(reviewer))[0]]
                except Exception as exc:  # noqa: BLE001 - the server may be restarting; keep the page open
                    log.warning("cannot list approvals: %s", exc)
                    keys = seen or []
                if seen is None:
                    yield "retry: 5000\n\n"  # looked once; after a drop, the browser comes back in 5 s
                elif keys != seen:
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
        reviewer = signin.reviewer(request)  # checked now: a session whose token was removed no longer decides
        if reviewer is None:
            return must_sign_in(request)
        fields = await form(request)
        if not signin.csrf_ok(request, fields.get("csrf", "")):
            return PlainTextResponse("This form is stale or came from another site; reload the inbox.", status_code=403)
        workflow_id = unquote(request.path_params["workflow_id"])
        approval_id = unquote(request.path_params["approval_id"])
        verdict = fields.get("verdict")
        comment = fields.get("comment", "").strip() or None
        item = await approvals.find(workflow_id, approval_id)
        if item is not None and not deciders.may_decide(reviewer, item.agent):
            item = None  # the same answer as for an approval that is not waiting: its existence is not theirs to learn
        detail = None
        if verdict not in ("approve", "reject"):
            code = "choose"
        elif item is None:
            code = "gone"
        elif item.approval.run_id != fields.get("run_id") or item.approval.args_sha256 != fields.get("args_sha256"):
            code = "changed"
        else:
            code, detail = await _send(client, key, item, reviewer=reviewer, approved=verdict == "approve", comment=comment)
            approvals.invalidate()
        back = f"/approvals/{quote(workflow_id, safe='')}/{quote(approval_id, safe='')}"
        response = RedirectResponse(back + "?" + urlencode({"notice": code}), status_code=303)
        if detail:
            notice = signin.notice(reviewer, f"{workflow_id}|{approval_id}", detail)
            response.set_cookie(NOTICE_COOKIE, notice, **signin.cookie_options(request, seconds=120))
        return response

    async def signin_page(request: Request) -> Response:
        if not signin.uses_tokens:
            return RedirectResponse("/", status_code=303)
        body = pages.signin_body(request.query_params.get("next", "/"), None, ended=request.query_params.get("ended") == "1")
        return html(body, request, title="Sign in")

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
        response.set_cookie(SESSION_COOKIE, session, **signin.cookie_options(request))
        return response

    async def signout(request: Request) -> Response:
        # Sessions are signed, not stored: signing out forgets this browser's; removing the
        # reviewer's token from the tokens file ends every one of them.
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


async def _send(client: Client, key: SigningKey, item: InboxItem, *, reviewer: str, approved: bool, comment: str | None) -> tuple[str, str]:
    """Sign the decision as the inbox, for ``reviewer``, and send it to the execution it was shown from.

    Returns:
        The notice code (``approved``, ``rejected``, ``refused``) and the run's own words.
    """
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
        return "refused", f"Reason: {failure_message(exc)}"
    except RPCError as exc:
        return "refused", f"Reason: {exc.message}"
    record = ApprovalRecord.model_validate(raw)
    return ("approved" if record.status == "approved" else "rejected"), f"{record.approval_id} {record.status} by {record.reviewer}."


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
