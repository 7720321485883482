"""Who is deciding: sign-in for the reviewer inbox.

Two ways, chosen when the inbox starts:

- **Behind an auth proxy** (``--trust-header X-Forwarded-Email``): the proxy signs
  people in and puts their name in that header; the inbox takes it as is. Only
  safe when nothing but the proxy can reach the inbox.
- **Tokens from a file** (the embedded default): each reviewer has a token in a
  TOML file (``alice = "..."``) and signs in with it once; the browser then holds
  a random session id (HttpOnly, SameSite=Strict), never the token.

Every form the inbox serves carries an anti-forgery token tied to the sign-in, so
another site cannot make a signed-in reviewer's browser decide.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request

SESSION_COOKIE = "inbox_session"


class SignInError(ValueError):
    """The sign-in setup cannot work (no tokens file, a malformed one)."""


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


@dataclass
class SignIn:
    """Resolves the reviewer behind a request; holds the token sessions.

    Args:
        trust_header: The header an auth proxy sets to the reviewer's name, or ``None``.
        tokens_file: The reviewers' tokens (token mode), re-read at each sign-in.
    """

    trust_header: str | None = None
    tokens_file: Path | None = None
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _sessions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trust_header is None:
            if self.tokens_file is None:
                raise SignInError("the inbox needs --trust-header HEADER (behind an auth proxy) or a tokens file (--tokens FILE)")
            read_tokens(self.tokens_file)  # fail at start, not at the first sign-in

    @property
    def uses_tokens(self) -> bool:
        return self.trust_header is None

    def reviewer(self, request: Request) -> str | None:
        """The signed-in reviewer's name, or ``None``."""
        if self.trust_header is not None:
            value = request.headers.get(self.trust_header, "").strip()
            return value or None
        return self._sessions.get(request.cookies.get(SESSION_COOKIE, ""))

    def sign_in(self, name: str, token: str) -> str | None:
        """A new session id when ``token`` is ``name``'s, else ``None``."""
        assert self.tokens_file is not None
        expected = read_tokens(self.tokens_file).get(name)
        if expected is None or not hmac.compare_digest(expected.encode(), token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[session] = name
        return session

    def sign_out(self, request: Request) -> None:
        self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def csrf_token(self, request: Request) -> str:
        """The anti-forgery token the inbox's forms carry for this sign-in."""
        basis = request.cookies.get(SESSION_COOKIE, "") if self.uses_tokens else (self.reviewer(request) or "")
        return hmac.new(self._secret, basis.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(request), token)
