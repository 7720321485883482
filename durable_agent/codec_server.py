"""A Temporal codec server: the Temporal UI and CLI see decrypted payloads, if they hold the token.

Temporal's codec-server protocol: ``POST /decode`` and ``POST /encode`` take and
return ``{"payloads": [...]}`` in protobuf JSON (``metadata`` values and ``data``
base64). Every request must carry the token of ``AGENT_CODEC_TOKEN``, either as
``Authorization: Bearer TOKEN`` (the CLI's ``--codec-auth "Bearer TOKEN"``) or
as the session cookie that ``/login`` sets once a person types the token there,
which the UI sends when its codec settings include cross-origin credentials.
Anything else gets 401. CORS answers only the origins given (the UI's).

The cookie is not the token: it is a session signed with a key derived from the
token (so every replica with the token accepts it, and changing the token ends
every session), which expires (12 hours by default). It is HttpOnly; served over
HTTPS it is ``Secure`` and ``SameSite=None``, so a UI on another site (Temporal
Cloud) can send it; over plain HTTP it is ``SameSite=Lax``, which reaches a UI on
the same host.
"""

from __future__ import annotations

import hmac
import html
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from durable_agent.encryption import DecryptionError
from durable_agent.sessions import Sealer, derive_secret

ENV_TOKEN = "AGENT_CODEC_TOKEN"
COOKIE = "durable_agent_codec"
#: How long a sign-in at ``/login`` lasts unless told otherwise.
DEFAULT_SESSION_SECONDS = 12 * 3600
_SESSION = "codec-session"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"

_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>durable-agent codec server</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>durable-agent codec server</h1>
<p>{message}</p>
<form method="post" action="login">
<label>Codec token <input name="token" type="password" autocomplete="current-password" autofocus></label>
<button type="submit">Sign in</button>
</form>
<p>Then, in the Temporal UI, open the codec server settings and tick
<em>Include cross-origin credentials</em>.</p>
</body></html>"""


def create_app(
    codec: PayloadCodec,
    token: str,
    *,
    allowed_origins: Sequence[str] = (),
    session_seconds: float = DEFAULT_SESSION_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The codec server as an ASGI app.

    Args:
        codec: Decodes and encodes payloads (normally an :class:`~durable_agent.encryption.EncryptionCodec`).
        token: The bearer token every request must carry; an empty one is refused.
        allowed_origins: Origins answered with CORS headers (the Temporal UI's, e.g. ``http://localhost:8233``).
        session_seconds: How long the cookie ``/login`` sets stays good.
        clock: Seconds since the epoch (tests move it).
    """
    if not token:
        raise ValueError(f"the codec server needs a token ({ENV_TOKEN}): without one anybody could read every payload")
    origins = {o.rstrip("/") for o in allowed_origins}
    sessions = Sealer(derive_secret(token, _SESSION), clock=clock)

    def cors(request: Request, response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin and origin.rstrip("/") in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Vary"] = "Origin"
        return response

    def authorized(request: Request) -> bool:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and presented:
            return hmac.compare_digest(presented.strip().encode(), token.encode())
        return sessions.open(_SESSION, request.cookies.get(COOKIE)) is not None

    def payload_route(transform: Callable[[Payloads], Awaitable[Payloads]]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if request.method == "OPTIONS":
                return cors(request, Response(status_code=204))
            if not authorized(request):
                return cors(request, PlainTextResponse("a codec token is required (Authorization: Bearer ...)", status_code=401))
            try:
                payloads = json_format.Parse(await request.body(), Payloads())
            except json_format.ParseError as exc:
                return cors(request, PlainTextResponse(f"not a Payloads JSON object: {exc}", status_code=400))
            try:
                result = await transform(payloads)
            except DecryptionError as exc:
                return cors(request, PlainTextResponse(str(exc), status_code=422))
            return cors(request, JSONResponse(json_format.MessageToDict(result)))

        return handle

    async def decode(payloads: Payloads) -> Payloads:
        return Payloads(payloads=await codec.decode(payloads.payloads))

    async def encode(payloads: Payloads) -> Payloads:
        return Payloads(payloads=await codec.encode(payloads.payloads))

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(_LOGIN_PAGE.format(message="Sign in to let the Temporal UI show decrypted payloads."))
        # A one-field form: parsed here rather than with another dependency (python-multipart).
        fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        presented = (fields.get("token") or [""])[0]
        if not hmac.compare_digest(presented.encode(), token.encode()):
            return HTMLResponse(_LOGIN_PAGE.format(message=html.escape("That token is not the codec token.")), status_code=401)
        response = RedirectResponse("login/done", status_code=303)
        https = request.url.scheme == "https"
        response.set_cookie(
            COOKIE,
            sessions.seal(_SESSION, {"sub": "codec"}, lifetime=session_seconds),
            max_age=int(session_seconds),
            httponly=True,
            secure=https,
            # Over HTTPS the UI may be another site (Temporal Cloud): None lets its requests carry the
            # cookie, and CORS still lets only its origin read an answer. Over HTTP, browsers refuse None
            # without Secure; a UI on the same host is same-site (the site ignores the port), so Lax reaches it.
            samesite="none" if https else "lax",
        )
        return response

    async def login_done(request: Request) -> Response:
        return HTMLResponse("<!doctype html><p>Signed in. The Temporal UI can now decode payloads through this server.</p>")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/decode", payload_route(decode), methods=["POST", "OPTIONS"]),
            Route("/encode", payload_route(encode), methods=["POST", "OPTIONS"]),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/login/done", login_done, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
