"""Signed, expiring values for browser cookies and forms: sessions, anti-forgery tokens, one-time notices.

The pages the product serves (the reviewer inbox, the codec server's sign-in) keep
no session table: the browser holds a value the server signed with a secret
(HMAC-SHA256), which says who, for what, and until when. Any process holding
the same secret accepts it, so a session survives a restart and reaches every
replica behind a load balancer; nobody without the secret can make or alter one.

Each value is signed for one *purpose* (``inbox-session``, ``inbox-csrf``...),
so a value made for one use is refused for another. The payload is readable
(base64 JSON): it holds names and times, never a token or a password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MIN_SECRET_BYTES", "Sealer", "derive_secret"]

#: A secret shorter than this is refused: it could be guessed.
MIN_SECRET_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_secret(material: str | bytes, purpose: str) -> bytes:
    """A 32-byte secret for ``purpose`` from other secret material (the codec token), never usable as that material."""
    raw = material.encode("utf-8") if isinstance(material, str) else material
    return hmac.new(raw, f"durable-agent/{purpose}".encode(), hashlib.sha256).digest()


class Sealer:
    """Signs and checks small JSON payloads that carry their own expiry.

    Args:
        secret: At least :data:`MIN_SECRET_BYTES` bytes; every process that must accept
            the values needs the same one.
        clock: Seconds since the epoch (tests pass a clock they move).
    """

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a signing secret needs at least {MIN_SECRET_BYTES} bytes; this one has {len(secret)}")
        self._secret = secret
        self.clock = clock

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}\0{body}".encode(), hashlib.sha256).digest())

    def seal(self, purpose: str, payload: dict[str, Any], *, lifetime: float) -> str:
        """``payload`` with an ``exp`` ``lifetime`` seconds from now, signed for ``purpose``."""
        body = _b64(json.dumps({**payload, "exp": int(self.clock() + lifetime)}, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def open(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        """The payload of a value this secret signed for ``purpose`` and that has not expired; else ``None``."""
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(purpose, body).encode()):
            return None
        try:
            payload = json.loads(_unb64(body))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int) or payload["exp"] <= self.clock():
            return None
        return payload

    def digest(self, purpose: str, text: str) -> str:
        """A keyed digest of ``text`` (a token's fingerprint a session can carry without revealing it)."""
        return self._mac(purpose, text)[:22]
