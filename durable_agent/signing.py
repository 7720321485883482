"""Signed approval decisions: the canonical message, Ed25519 sign and verify, key files.

A reviewer's decision on a held action is bound to that exact action: the
message signed names the namespace, workflow id, run id, approval id, the SHA-256
of the action's arguments, the verdict, the reviewer, who signed (the reviewer,
or a delegate such as the inbox signing for a signed-in reviewer), the comment
the model will read, and an expiry. The workflow rebuilds the message from its
own record of the action and checks the signature with public keys only, so no
secret ever reaches a worker or an event history.

Everything here is pure and deterministic (no clock, no randomness but key
generation, no I/O but :func:`write_key_file` and :func:`load_key_file`), so the
workflow may call :func:`verify` and :func:`args_digest` directly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "KEY_PREFIX",
    "KeyFileError",
    "SigningKey",
    "args_digest",
    "signable_json",
    "decision_message",
    "generate_key",
    "load_key_file",
    "parse_public_key",
    "toml_key_line",
    "verify",
    "write_key_file",
]

#: How public keys are written in ``[reviewer_keys]``: ``ed25519:`` and 32 bytes in base64.
KEY_PREFIX = "ed25519:"
#: Tags the message, so a signature made for a decision is good for nothing else.
MESSAGE_VERSION = "durable-agent/approval-decision/v1"
#: Reviewer and key names: letters, digits and ``. _ @ + -``, so an email address is a name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
_BARE_TOML_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

Verdict = Literal["approve", "reject"]


class KeyFileError(ValueError):
    """A key file or a public key that cannot be used: missing, unreadable, malformed, or readable by others."""


def _normalise(value: Any) -> Any:
    """Integral floats as integers (``4999.0`` -> ``4999``), as JSON in JavaScript or Go writes them."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def signable_json(value: Any) -> bytes:
    """The one byte string a JSON value signs as: sorted keys, no spaces, UTF-8, integral numbers without ``.0``.

    For the values tool arguments hold (strings, integers, ordinary decimals,
    lists, objects) this is the RFC 8785 form, so a reviewer's tool in another
    language computes the same digest.
    """
    # NaN and infinities (which JSON has no words for) are written as Python does rather than
    # refused: the workflow digests whatever arguments a model gave, and must never raise here.
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def args_digest(args: dict[str, Any]) -> str:
    """``args_sha256``: the hex SHA-256 of the canonical JSON of a tool call's arguments."""
    return hashlib.sha256(signable_json(args)).hexdigest()


def decision_message(
    *,
    namespace: str,
    workflow_id: str,
    run_id: str,
    approval_id: str,
    args_sha256: str,
    verdict: Verdict,
    reviewer: str,
    signer: str,
    comment: str | None,
    expires_at: int,
) -> bytes:
    """The bytes a decision's signature covers.

    Args:
        namespace: The Temporal namespace of the run.
        workflow_id: The run's workflow id.
        run_id: The execution the approval waits in (ids repeat across executions; this does not).
        approval_id: The held action.
        args_sha256: :func:`args_digest` of the action's arguments, as the reviewer saw them.
        verdict: ``approve`` or ``reject``.
        reviewer: Who decides, as the allow-list writes the name.
        signer: Whose key signs: the reviewer, or a delegate (the inbox) signing for them.
        comment: The reviewer's comment (the model reads it on a rejection), or ``None``.
        expires_at: Unix time in seconds after which the decision is refused.
    """
    return signable_json(
        {
            "v": MESSAGE_VERSION,
            "namespace": namespace,
            "workflow_id": workflow_id,
            "run_id": run_id,
            "approval_id": approval_id,
            "args_sha256": args_sha256,
            "verdict": verdict,
            "reviewer": reviewer,
            "signer": signer,
            "comment": comment,
            "expires_at": int(expires_at),
        }
    )


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An ``ed25519:BASE64`` public key.

    Raises:
        KeyFileError: not of that form, or not 32 bytes.
    """
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise KeyFileError(f"a public key is written {KEY_PREFIX}BASE64 (as `durable-agent keys new` prints it)")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("the public key is not valid base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _public_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def verify(public_key: str, signature: str, message: bytes) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s signature of ``message``; never raises on bad input."""
    try:
        key = parse_public_key(public_key)
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message)
    except (KeyFileError, InvalidSignature, binascii.Error, ValueError):
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key and the name it signs as (a reviewer's, or a delegate's such as ``inbox``)."""

    name: str
    private: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        """``ed25519:BASE64``, as it goes under ``[reviewer_keys]``."""
        return _public_text(self.private.public_key())

    def sign(self, message: bytes) -> str:
        """The base64 signature of ``message``."""
        return base64.b64encode(self.private.sign(message)).decode()


def check_name(name: str) -> str:
    """``name`` if it can name a reviewer or a key, else ``KeyFileError`` saying what is allowed."""
    if not NAME_PATTERN.match(name or ""):
        raise KeyFileError(f"{name!r} cannot name a key: use letters, digits and . _ @ + - (an email address is fine)")
    return name


def generate_key(name: str) -> SigningKey:
    """A new random key for ``name``."""
    return SigningKey(check_name(name), Ed25519PrivateKey.generate())


def toml_key_line(name: str, public_key: str) -> str:
    """The line to paste under ``[reviewer_keys]``: ``alice = "ed25519:..."`` (the name quoted when it must be)."""
    key = name if _BARE_TOML_KEY.match(name) else json.dumps(name)
    return f'{key} = "{public_key}"'


def write_key_file(key: SigningKey, directory: str | os.PathLike[str]) -> Path:
    """Write ``DIR/NAME.key`` readable by its owner only (mode 0600); never overwrite one.

    Raises:
        KeyFileError: the file exists already.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key.name}.key"
    seed = key.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    text = (
        f"# durable-agent signing key of {key.name}. Secret: keep it readable by its owner only.\n"
        f"# Its public half goes under [reviewer_keys] in agents.toml:\n"
        f"#   {toml_key_line(key.name, key.public_key)}\n"
        f"name = {json.dumps(key.name)}\n"
        f'private_key = "{KEY_PREFIX}{base64.b64encode(seed).decode()}"\n'
        f'public_key = "{key.public_key}"\n'
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists already; remove it first to replace that key") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


def load_key_file(path: str | os.PathLike[str]) -> SigningKey:
    """Read a key written by :func:`write_key_file`.

    Raises:
        KeyFileError: the file is missing, malformed, or readable by group or others
            (as ssh refuses such a key: someone else may have it too).
    """
    file = Path(path)
    try:
        mode = file.stat().st_mode
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"{file}: no such key file (make one with `durable-agent keys new NAME --dir DIR`)") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{file}: cannot read the key: {exc}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{file}: others may read this key (mode {stat.S_IMODE(mode):o}); run `chmod 600 {file}`")
    name, private = raw.get("name"), raw.get("private_key")
    if not isinstance(name, str) or not isinstance(private, str) or not private.startswith(KEY_PREFIX):
        raise KeyFileError(f"{file}: not a durable-agent key file (it needs name and private_key = \"{KEY_PREFIX}...\")")
    try:
        seed = base64.b64decode(private[len(KEY_PREFIX) :], validate=True)
        private_key = Ed25519PrivateKey.from_private_bytes(seed)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{file}: the private key is malformed: {exc}") from None
    return SigningKey(check_name(name), private_key)
