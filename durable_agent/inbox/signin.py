"""Who is deciding: sign-in for the reviewer inbox.

Two ways, chosen when the inbox starts:

- **Behind an auth proxy** (``--trust-header X-Forwarded-Email``): the proxy signs
  people in and puts their name in that header on every request; the inbox takes
  it as is, each time. Only safe when nothing but the proxy can reach the inbox.
- **Tokens from a file** (the embedded default): each reviewer has a token in a
  TOML file (``alice = "..."``) and signs in with it; the browser then holds a
  session cookie the inbox signed (HttpOnly, SameSite=Lax, ``Secure`` over HTTPS),
  never the token. It names the reviewer, a keyed fingerprint of their token and an
  expiry (12 hours by default). Every request checks all three against the tokens
  file *as it is now*: remove or change a reviewer's token and their sessions end
  at their next click, on every replica.

Sessions are stateless (:mod:`durable_agent.sessions`): any inbox process that has
the same secret accepts them, so they survive a restart and reach every replica.
Every form carries an anti-forgery token signed for the sign-in that loaded it,
so another site cannot make a signed-in reviewer's browser decide.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from durable_agent.sessions import MIN_SECRET_BYTES, Sealer

log = logging.getLogger("durable_agent.inbox")

SESSION_COOKIE = "inbox_session"
#: The outcome of the reviewer's last decision, for the page it redirects to (signed, short-lived, read once).
NOTICE_COOKIE = "inbox_notice"
#: How long a session lasts unless ``--session-hours`` says otherwise.
DEFAULT_SESSION_SECONDS = 12 * 3600
#: Where the signing secret comes from first: every replica of one inbox must share it.
ENV_SECRET = "AGENT_INBOX_SECRET"
NOTICE_SECONDS = 120


class SignInError(ValueError):
    """The sign-in setup cannot work (no tokens file, a malformed one, no usable secret)."""


def read_tokens(path: Path) -> dict[str, str]:
    """Reviewer name -> token, from a TOML file of ``name = "token"`` lines."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SignInError(f"{path}: no tokens file; make one with `durable-agent inbox --new-token NAME --tokens {path}`") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SignInError(f"{path}: cannot read the tokens: {exc}") from None
    tokens = {name: token for name, token in raw.items() if isinstance(token, str) and len(token) >= 16}
    if len(tokens) != len(raw):
        raise SignInError(f"{path}: each line must be name = \"token of 16 characters or more\"")
    return tokens


def add_token(path: Path, name: str) -> str:
    """Give ``name`` a new random token in the tokens file (made 0600 if new); return it."""
    tokens = read_tokens(path) if path.exists() else {}
    if name in tokens:
        raise SignInError(f"{path}: {name!r} has a token already; remove the line to replace it")
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        key = name if name.replace("-", "").replace("_", "").isalnum() else f'"{name}"'
        out.write(f'{key} = "{token}"\n')
    return token


def is_loopback(host: str) -> bool:
    """Whether serving on ``host`` reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def session_secret(*, configured: str | None, secret_file: Path | None, default_file: Path, host: str) -> tuple[bytes, str]:
    """The secret that signs sessions and forms, and where it came from (for the start line).

    In order: ``AGENT_INBOX_SECRET`` (``configured``); ``--secret-file``; and, for an
    inbox serving this machine only, a secret kept in ``default_file`` (made, 0600,
    on first use), so sessions survive a restart. An inbox serving beyond this
    machine may be one of several replicas behind a load balancer, which must all
    share one secret: it does not start without one configured.

    Raises:
        SignInError: too short, unreadable, or missing where it must be configured.
    """
    how = f"set {ENV_SECRET} (or --secret-file FILE) to {MIN_SECRET_BYTES}+ random characters, the same on every replica, " \
        "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if configured:
        text, source = configured.strip(), ENV_SECRET
    elif secret_file is not None:
        try:
            text, source = secret_file.read_text(encoding="utf-8").strip(), str(secret_file)
        except OSError as exc:
            raise SignInError(f"cannot read the session secret: {exc}; {how}") from None
    elif not is_loopback(host):
        raise SignInError(
            f"serving on {host} (beyond this machine, perhaps as one of several replicas) needs a session secret "
            f"every replica shares, so that a reviewer signed in on one is signed in on all: {how}"
        )
    else:
        try:
            if not default_file.exists():
                default_file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(default_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(secrets.token_urlsafe(32) + "\n")
            text, source = default_file.read_text(encoding="utf-8").strip(), str(default_file)
        except OSError as exc:
            raise SignInError(f"cannot keep a session secret in {default_file}: {exc}; {how}") from None
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise SignInError(f"the session secret from {source} is shorter than {MIN_SECRET_BYTES} characters: {how}")
    return text.encode(), source


class TokensFile:
    """The reviewers' tokens as the file says now: re-read whenever it changes; nobody while it cannot be read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: dict[str, str] = read_tokens(path)  # a broken file stops the inbox at start

    def current(self) -> dict[str, str]:
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp != self._stamp:
                self._tokens, self._stamp = read_tokens(self.path), stamp
        except (OSError, SignInError) as exc:
            log.warning("no reviewer can sign in while the tokens file cannot be read: %s", exc)
            self._tokens, self._stamp = {}, None
        return self._tokens


@dataclass
class SignIn:
    """Resolves the reviewer behind a request; signs and checks sessions, forms and notices.

    Args:
        secret: Signs sessions, anti-forgery tokens and notices (see :func:`session_secret`).
        trust_header: The header an auth proxy sets to the reviewer's name, or ``None``.
        tokens_file: The reviewers' tokens (token mode), re-read whenever it changes.
        session_seconds: How long a session lasts after signing in.
        clock: Seconds since the epoch (tests move it).
    """

    secret: bytes
    trust_header: str | None = None
    tokens_file: Path | None = None
    session_seconds: float = DEFAULT_SESSION_SECONDS
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._sealer = Sealer(self.secret, clock=lambda: self.clock())
        self._tokens: TokensFile | None = None
        if self.trust_header is None:
            if self.tokens_file is None:
                raise SignInError("the inbox needs --trust-header HEADER (behind an auth proxy) or a tokens file (--tokens FILE)")
            self._tokens = TokensFile(self.tokens_file)

    @property
    def uses_tokens(self) -> bool:
        return self.trust_header is None

    def _fingerprint(self, name: str, token: str) -> str:
        return self._sealer.digest("inbox-token", f"{name}\0{token}")

    def _session(self, request: Request) -> dict[str, Any] | None:
        """The session the request carries, if it is signed, unexpired, and its token is still the reviewer's."""
        session = self._sealer.open("inbox-session", request.cookies.get(SESSION_COOKIE))
        if session is None or self._tokens is None:
            return None
        token = self._tokens.current().get(str(session.get("sub")))
        if token is None or not hmac.compare_digest(self._fingerprint(session["sub"], token), str(session.get("tok"))):
            return None
        return session

    def _who(self, request: Request) -> tuple[str, str] | None:
        """(reviewer, session id) behind the request; the id is empty behind a proxy."""
        if self.trust_header is not None:
            value = request.headers.get(self.trust_header, "").strip()
            return (value, "") if value else None
        session = self._session(request)
        return (str(session["sub"]), str(session.get("sid"))) if session else None

    def reviewer(self, request: Request) -> str | None:
        """The signed-in reviewer's name, checked now (the header, or the session against the tokens file); else ``None``."""
        who = self._who(request)
        return who[0] if who else None

    def session_ended(self, request: Request) -> bool:
        """Whether the request carries a session cookie that no longer counts (expired, or its token removed)."""
        return self.uses_tokens and bool(request.cookies.get(SESSION_COOKIE)) and self._session(request) is None

    def sign_in(self, name: str, token: str) -> str | None:
        """A session cookie's value when ``token`` is ``name``'s now, else ``None``."""
        assert self._tokens is not None
        expected = self._tokens.current().get(name)
        if expected is None or not hmac.compare_digest(expected.encode(), token.encode()):
            return None
        payload = {"sub": name, "tok": self._fingerprint(name, token), "sid": secrets.token_urlsafe(12)}
        return self._sealer.seal("inbox-session", payload, lifetime=self.session_seconds)

    def cookie_options(self, request: Request, *, seconds: float | None = None) -> dict[str, Any]:
        """How the inbox's cookies are set: HttpOnly, SameSite=Lax, ``Secure`` over HTTPS, expiring with what they hold.

        Lax, not Strict, so that a link from a notification opens signed in; nothing
        changes on a GET, and every POST carries an anti-forgery token.
        """
        return {
            "max_age": int(self.session_seconds if seconds is None else seconds),
            "path": "/",
            "httponly": True,
            "samesite": "lax",
            "secure": request.url.scheme == "https",
        }

    def csrf_token(self, request: Request) -> str:
        """The anti-forgery token the inbox's forms carry for this sign-in (empty when nobody is signed in)."""
        who = self._who(request)
        if who is None:
            return ""
        return self._sealer.seal("inbox-csrf", {"sub": who[0], "sid": who[1]}, lifetime=self.session_seconds)

    def csrf_ok(self, request: Request, token: str) -> bool:
        """Whether ``token`` was made for the reviewer and sign-in behind this request, and has not expired."""
        form, who = self._sealer.open("inbox-csrf", token), self._who(request)
        return form is not None and who is not None and (form.get("sub"), form.get("sid")) == who

    def notice(self, reviewer: str, about: str, text: str) -> str:
        """A cookie value carrying ``text`` to ``reviewer``'s next page about ``about`` (the approval decided)."""
        return self._sealer.seal("inbox-notice", {"sub": reviewer, "about": about, "text": text}, lifetime=NOTICE_SECONDS)

    def read_notice(self, request: Request, about: str) -> str | None:
        """The text of a notice the inbox made for this reviewer about ``about``, if any."""
        notice = self._sealer.open("inbox-notice", request.cookies.get(NOTICE_COOKIE))
        if notice is None or notice.get("about") != about or notice.get("sub") != self.reviewer(request):
            return None
        return str(notice.get("text", ""))
