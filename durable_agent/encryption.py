"""Encryption at rest: AES-256-GCM for Temporal payloads and for stored content.

Keys come from ``AGENT_ENCRYPTION_KEYS``: ``kid:base64key,kid2:base64key2``,
each key 32 random bytes (``python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"``).
The first key encrypts; every listed key decrypts. To rotate, put the new key
first and keep the old ones until no run, history or blob needs them.

A Temporal payload becomes ``{"encoding": "binary/encrypted", "encryption-key-id": kid}``
with the nonce and ciphertext of the whole original payload as its data, as
Temporal's encryption sample does, so the codec server and the UI recognise it.
Payloads that were not encrypted (a signal typed into the Temporal UI) pass
through untouched.

A stored blob becomes ``DAE2 | len(kid) | kid | nonce | ciphertext``, where the
AES-GCM associated data is what the blob *is* (the content store passes its ref
or record name): the same bytes under another ref do not verify, so a blob
copied onto another key is refused. ``DAE1`` blobs, written before, carry no
associated data; they still open (the store binds them to their ref by hash).

The ring also keys the content store's refs: :meth:`KeyRing.content_digest` is
an HMAC-SHA-256 under a key derived from the current key (HKDF), so a ref cannot
be computed, or content confirmed, without the keys.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

ENV_KEYS = "AGENT_ENCRYPTION_KEYS"
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
#: A sealed blob of the first format: no associated data (still read; never written).
BLOB_MAGIC = b"DAE1"
#: A sealed blob bound to what it is (AES-GCM associated data): what is written now.
BOUND_BLOB_MAGIC = b"DAE2"
NONCE_BYTES = 12
#: HKDF ``info`` of the key that makes content refs (never used to encrypt).
REF_KEY_INFO = b"durable-agent content refs v1"


class EncryptionConfigError(ValueError):
    """``AGENT_ENCRYPTION_KEYS`` is malformed (the message names the entry, never the key)."""


class DecryptionError(ValueError):
    """Ciphertext that no configured key opens, or that was tampered with."""


class CiphertextMismatch(DecryptionError):
    """Ciphertext under a configured key that does not verify: tampered, damaged, or bound to something else."""


class KeyRing:
    """AES-256-GCM keys by id; the first one encrypts."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise EncryptionConfigError(f"{ENV_KEYS} lists no key")
        self._keys: dict[str, AESGCM] = {}
        self._ref_keys: dict[str, bytes] = {}
        for kid, key in keys:
            if not kid or len(kid.encode()) > 255 or kid in self._keys:
                raise EncryptionConfigError(f"{ENV_KEYS}: key id {kid!r} is empty, too long or repeated")
            if len(key) != 32:
                raise EncryptionConfigError(f"{ENV_KEYS}: key {kid!r} is {len(key)} bytes; AES-256 needs 32")
            self._keys[kid] = AESGCM(key)
            self._ref_keys[kid] = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=REF_KEY_INFO).derive(key)
        self.current = keys[0][0]

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """``kid:base64key,...`` as in ``AGENT_ENCRYPTION_KEYS``."""
        keys = []
        for n, entry in enumerate((e.strip() for e in text.split(",")), start=1):
            if not entry:
                continue
            kid, sep, encoded = entry.partition(":")
            if not sep:
                raise EncryptionConfigError(f"{ENV_KEYS}: entry {n} is not 'kid:base64key'")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise EncryptionConfigError(f"{ENV_KEYS}: key {kid.strip()!r} is not valid base64") from None
            keys.append((kid.strip(), key))
        return cls(keys)

    @classmethod
    def from_env(cls) -> KeyRing | None:
        """The ring in ``AGENT_ENCRYPTION_KEYS``, or None when encryption is off."""
        text = os.environ.get(ENV_KEYS, "").strip()
        return cls.parse(text) if text else None

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: bytes, associated_data: bytes | None = None) -> tuple[str, bytes]:
        """``(key id, nonce + ciphertext)`` under the current key, bound to ``associated_data`` if given."""
        nonce = os.urandom(NONCE_BYTES)
        return self.current, nonce + self._keys[self.current].encrypt(nonce, plaintext, associated_data)

    def decrypt(self, kid: str, sealed: bytes, associated_data: bytes | None = None) -> bytes:
        """The plaintext of :meth:`encrypt`'s output.

        Raises:
            DecryptionError: the key ``kid`` is not configured.
            CiphertextMismatch: it does not verify (tampered, or bound to other associated data).
        """
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(f"encrypted with key {kid!r}, which is not in {ENV_KEYS} (known: {', '.join(self._keys)})")
        try:
            return key.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
        except (InvalidTag, ValueError):
            raise CiphertextMismatch(f"ciphertext under key {kid!r} does not verify (wrong key or tampered)") from None

    def seal_blob(self, plaintext: bytes, bound_to: bytes | None = None) -> bytes:
        """A self-describing encrypted blob for the content store.

        Args:
            plaintext: What to encrypt.
            bound_to: What the blob is (a ref, a record name): it opens only for the same value.
                None writes the first format, bound to nothing (kept for tests of old blobs).
        """
        magic = BLOB_MAGIC if bound_to is None else BOUND_BLOB_MAGIC
        kid, sealed = self.encrypt(plaintext, bound_to)
        kid_bytes = kid.encode()
        return magic + bytes([len(kid_bytes)]) + kid_bytes + sealed

    def open_blob(self, blob: bytes, bound_to: bytes | None = None) -> bytes:
        """The plaintext of :meth:`seal_blob`'s output; a blob that is not sealed is returned as it is.

        A ``DAE2`` blob opens only for the ``bound_to`` it was sealed with; a ``DAE1`` blob
        was bound to nothing and opens for any.

        Raises:
            DecryptionError: its key is not configured.
            CiphertextMismatch: it does not verify, is bound to something else, or is malformed.
        """
        if not is_sealed_blob(blob):
            return blob
        bound = blob.startswith(BOUND_BLOB_MAGIC)
        start = len(BLOB_MAGIC) + 1
        try:
            size = blob[len(BLOB_MAGIC)]
            kid = blob[start : start + size].decode()
        except (IndexError, UnicodeDecodeError):
            raise CiphertextMismatch("a sealed blob with a malformed header") from None
        if bound and bound_to is None:
            raise CiphertextMismatch("a bound blob, opened without saying what it should be")
        return self.decrypt(kid, blob[start + size :], bound_to if bound else None)

    def content_digest(self, data: bytes) -> str:
        """The hex HMAC-SHA-256 of ``data`` under the current key's ref key: a content ref nobody can compute without the keys."""
        return hmac.new(self._ref_keys[self.current], data, hashlib.sha256).hexdigest()

    def is_content_digest(self, data: bytes, digest: str) -> bool:
        """Whether ``digest`` is :meth:`content_digest` of ``data`` under any key of the ring (refs made before a rotation too)."""
        for kid in (self.current, *(k for k in self._ref_keys if k != self.current)):
            if hmac.compare_digest(hmac.new(self._ref_keys[kid], data, hashlib.sha256).hexdigest(), digest):
                return True
        return False


def is_sealed_blob(blob: bytes) -> bool:
    """Whether ``blob`` is :meth:`KeyRing.seal_blob` output (either format)."""
    return blob.startswith((BLOB_MAGIC, BOUND_BLOB_MAGIC))


def is_bound_blob(blob: bytes) -> bool:
    """Whether ``blob`` is sealed and bound to what it is (``DAE2``)."""
    return blob.startswith(BOUND_BLOB_MAGIC)


class MissingEncryptionKey(DecryptionError):
    """An encrypted payload whose key this process does not have.

    Another worker may have it, so whatever carried the payload must fail in a way that
    is retried there (a workflow task, an activity attempt), never the run. The message
    names the key id and the keys this process has, never key material.
    """

    def __init__(self, kid: str, known: Sequence[str]) -> None:
        self.kid = kid
        self.known = list(known)
        have = f"lists only {', '.join(repr(k) for k in known)}" if known else "is not set"
        super().__init__(f"the payload is encrypted with key {kid!r}, but {ENV_KEYS} {have} on this worker")


def payload_key_id(payload: Payload) -> str | None:
    """The key id of an encrypted payload (``""`` when it names none); ``None`` for a plain one."""
    if payload.metadata.get("encoding") != ENCODING:
        return None
    return payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload; decodes encrypted ones by their key id and passes plain ones through.

    A payload under a key id the ring does not have raises :class:`MissingEncryptionKey`
    (a worker that has it can read it); one that does not verify raises :class:`DecryptionError`.
    """

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            kid, sealed = self.ring.encrypt(payload.SerializeToString())
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: kid.encode()}, data=sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(self.decode_sync(payloads))

    def decode_sync(self, payloads: Iterable[Payload]) -> Iterable[Payload]:
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                yield payload  # typed into the UI or written before encryption was on
                continue
            kid = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
            if kid not in self.ring.key_ids:
                raise MissingEncryptionKey(kid, self.ring.key_ids)
            original = Payload()
            original.ParseFromString(self.ring.decrypt(kid, payload.data))
            yield original


class KeylessCodec(PayloadCodec):
    """The codec of a worker without ``AGENT_ENCRYPTION_KEYS``: plain payloads pass, an encrypted one raises.

    Without it, an encrypted payload reaches the JSON converter, which cannot read it:
    a run's input would be refused and the run failed for good, when a worker with the
    keys could have run it. :class:`MissingEncryptionKey` fails the task instead.
    """

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        for payload in payloads:
            kid = payload_key_id(payload)
            if kid is not None:
                raise MissingEncryptionKey(kid, [])
        return list(payloads)


def with_encryption(converter: DataConverter, ring: KeyRing | None) -> DataConverter:
    """``converter`` encrypting payloads with ``ring`` (unchanged when it is None).

    Failure messages and stack traces are moved into the encoded attributes too,
    since a tool's error can quote its arguments.
    """
    if ring is None:
        return converter
    return dataclasses.replace(
        converter,
        payload_codec=EncryptionCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
