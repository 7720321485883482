"""What the content store writes, and what it accepts when it reads: refs, seals and their checks.

Whoever can write to the bucket must not be able to make a run read anything but
what its history names. So every blob read is checked against the ref or name
it was read under, and a blob that fails is refused with
:class:`ContentIntegrityError`, never used:

- **Refs.** A ref is ``sha256:`` and a digest of the content's canonical JSON: its
  SHA-256 without keys; with ``AGENT_ENCRYPTION_KEYS``, an HMAC-SHA-256 under a key
  derived from the current encryption key (:meth:`KeyRing.content_digest`), so
  nobody without the keys can predict a ref or confirm a guess of some content.
  Content read back must hash to its ref: its plain SHA-256 (refs made without
  keys, or before refs were keyed), or its HMAC under any key of the ring (refs
  made before a rotation). SHA-256 cannot be inverted, so without keys too a blob
  can only be replaced by the very content its ref names.
- **Seals.** With keys, plaintext blobs are refused, and each blob is sealed with
  AES-GCM whose associated data is its ref (``DAE2``): a sealed blob copied onto
  another ref does not open. Blobs sealed before (``DAE1``, no associated data)
  still open, so runs in flight keep their content; they were written with plain
  SHA-256 refs, and must hash to theirs, which binds them as well.
- **Named records** have a name chosen by the writer, not a digest. With keys they
  are sealed with their name as associated data, and plaintext is refused. A
  ``DAE1`` record still opens (readers check what they can: a decision record's
  id must match its name). Without keys a named record is as trustworthy as the
  bucket's write access: set keys where others can write to the bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from durable_agent.encryption import CiphertextMismatch, DecryptionError, KeyRing, is_bound_blob, is_sealed_blob

REF_PREFIX = "sha256:"


class ContentIntegrityError(ValueError):
    """A stored blob that is not what its ref or record name says: forged, swapped or damaged. It is never used."""

    def __init__(self, what: str, location: str, reason: str) -> None:
        super().__init__(what)
        #: The ref, or ``record 'NAME'``.
        self.what = what
        self.location = location
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.what} in the store at {self.location} does not verify ({self.reason}): it was forged, swapped or damaged, and is not used"


def content_ref(ring: KeyRing | None, data: bytes) -> str:
    """The ref of canonical JSON ``data``: its SHA-256, or with keys its HMAC."""
    digest = ring.content_digest(data) if ring is not None else hashlib.sha256(data).hexdigest()
    return REF_PREFIX + digest


def content_binding(ref: str) -> bytes:
    """What a content blob is sealed to: its ref."""
    return b"durable-agent/content/" + ref.encode()


def named_binding(name: str) -> bytes:
    """What a named record is sealed to: its name (domain-separated from content refs)."""
    return b"durable-agent/named/" + name.encode()


def seal(ring: KeyRing | None, data: bytes, binding: bytes) -> bytes:
    """``data`` as stored: sealed and bound to ``binding`` with keys, as it is without."""
    return ring.seal_blob(data, binding) if ring is not None else data


def unseal(ring: KeyRing | None, location: str, blob: bytes, binding: bytes, what: str) -> bytes:
    """The plaintext of ``blob`` read as ``what``: sealed to ``binding`` (or legacy) when keys are set.

    Raises:
        ContentIntegrityError: plaintext where keys are set, or a seal that does not verify for ``binding``.
        DecryptionError: a sealed blob with no keys set, or under a key the ring lacks.
    """
    if not is_sealed_blob(blob):
        if ring is not None:
            raise ContentIntegrityError(what, location, "it is not encrypted, and with AGENT_ENCRYPTION_KEYS set plaintext is refused")
        return blob
    if ring is None:
        raise DecryptionError(f"{what} in {location} is encrypted, and AGENT_ENCRYPTION_KEYS is not set")
    try:
        return ring.open_blob(blob, binding)
    except CiphertextMismatch as exc:
        raise ContentIntegrityError(what, location, f"{exc}: sealed for another ref or name, or altered") from None
    except DecryptionError as exc:  # a key this worker lacks: say which content needs it
        raise DecryptionError(f"{what} in the store at {location}: {exc}") from None


def open_content(ring: KeyRing | None, location: str, ref: str, blob: bytes) -> Any:
    """The value of content ``blob`` read under ``ref``, once it is proven to be what ``ref`` names.

    Raises:
        ContentIntegrityError: it is not (see the module docstring).
        DecryptionError: see :func:`unseal`.
    """
    data = unseal(ring, location, blob, content_binding(ref), ref)
    digest = ref[len(REF_PREFIX) :]
    plain = hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest)
    # Keyed refs came with bound blobs: a legacy blob is bound to its ref by its plain hash alone.
    keyed = ring is not None and is_bound_blob(blob) and ring.is_content_digest(data, digest)
    if not (plain or keyed):
        raise ContentIntegrityError(ref, location, "its content does not hash to its ref")
    return json.loads(data)


def open_named(ring: KeyRing | None, location: str, name: str, blob: bytes) -> Any:
    """The value of the named record ``blob`` read under ``name``.

    Raises:
        ContentIntegrityError: plaintext where keys are set, sealed under another name, or not JSON.
        DecryptionError: see :func:`unseal`.
    """
    what = f"record {name!r}"
    data = unseal(ring, location, blob, named_binding(name), what)
    try:
        return json.loads(data)
    except ValueError:
        raise ContentIntegrityError(what, location, "it is not JSON") from None
