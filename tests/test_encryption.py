"""Encryption at rest: the key ring, the payload codec, and the codec server over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import WorkflowSerializationContext

from durable_agent.codec_server import create_app
from durable_agent.converter import UNDECODABLE, guarded
from durable_agent.schemas import AgentResult
from durable_agent.encryption import (
    ENCODING,
    CiphertextMismatch,
    DecryptionError,
    EncryptionCodec,
    EncryptionConfigError,
    KeyRing,
    MissingEncryptionKey,
    with_encryption,
)
from tests.processes import free_port

MARKER = "MARKER-7f3a-plaintext"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def ring(*kids: str, keys: dict[str, str] | None = None) -> KeyRing:
    keys = keys if keys is not None else {}
    return KeyRing.parse(",".join(f"{kid}:{keys.setdefault(kid, new_key())}" for kid in kids))


class TestKeyRing:
    """AGENT_ENCRYPTION_KEYS parses strictly; errors name the entry, never the key."""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "lists no key"),
            ("k1", "entry 1 is not 'kid:base64key'"),
            ("k1:not base64!", "'k1' is not valid base64"),
            (f"k1:{base64.b64encode(b'short').decode()}", "'k1' is 5 bytes"),
            ("k1:{k},k1:{k}", "repeated"),
        ],
    )
    def test_bad_keys(self, text: str, message: str) -> None:
        with pytest.raises(EncryptionConfigError, match=message) as caught:
            KeyRing.parse(text.format(k=new_key()))
        assert "AGENT_ENCRYPTION_KEYS" in str(caught.value)

    def test_first_encrypts_all_decrypt(self) -> None:
        keys: dict[str, str] = {}
        old = ring("k1", keys=keys)
        blob = old.seal_blob(MARKER.encode())
        assert MARKER.encode() not in blob
        rotated = ring("k2", "k1", keys=keys)
        assert rotated.open_blob(blob) == MARKER.encode()
        assert rotated.seal_blob(b"x")[5:7] == b"k2"
        with pytest.raises(DecryptionError, match="key 'k1', which is not in"):
            ring("k2", keys=keys).open_blob(blob)

    def test_tampering_is_detected(self) -> None:
        keys = ring("k1")
        blob = bytearray(keys.seal_blob(b"amount=20"))
        blob[-1] ^= 1
        with pytest.raises(DecryptionError, match="does not verify"):
            keys.open_blob(bytes(blob))

    def test_unsealed_blob_passes(self) -> None:
        assert ring("k1").open_blob(b'{"a":1}') == b'{"a":1}'


class TestBoundBlobs:
    """A blob sealed to what it is (its ref, its name) opens for that and nothing else; old blobs still open."""

    def test_opens_only_for_its_binding(self) -> None:
        keys = ring("k1")
        blob = keys.seal_blob(b"pay alice 20", bound_to=b"sha256:aaaa")
        assert blob.startswith(b"DAE2") and keys.open_blob(blob, b"sha256:aaaa") == b"pay alice 20"
        for other in (b"sha256:bbbb", None):
            with pytest.raises(CiphertextMismatch):
                keys.open_blob(blob, other)
        legacy = keys.seal_blob(b"old")  # the first format: bound to nothing, still read
        assert legacy.startswith(b"DAE1") and keys.open_blob(legacy, b"sha256:anything") == b"old"

    @pytest.mark.parametrize("blob", [b"DAE2", b"DAE1\x05ab", b"DAE2\x02\xff\xfe" + b"x" * 40, b"DAE2\x02k1" + b"x" * 40])
    def test_malformed_blobs_do_not_verify(self, blob: bytes) -> None:
        with pytest.raises(DecryptionError):  # CiphertextMismatch, or a key id that is not configured
            ring("k1").open_blob(blob, b"sha256:aaaa")


class TestContentDigests:
    """Refs made with keys are HMACs nobody without the keys can compute; a rotation keeps old ones verifiable."""

    def test_keyed_deterministic_and_rotatable(self) -> None:
        import hashlib

        keys: dict[str, str] = {}
        old = ring("k1", keys=keys)
        digest = old.content_digest(b'{"task":"x"}')
        assert digest == old.content_digest(b'{"task":"x"}') != hashlib.sha256(b'{"task":"x"}').hexdigest()
        assert digest != ring("k9").content_digest(b'{"task":"x"}')  # another deployment's keys: another ref
        rotated = ring("k2", "k1", keys=keys)
        assert rotated.content_digest(b'{"task":"x"}') != digest
        assert rotated.is_content_digest(b'{"task":"x"}', digest) and not rotated.is_content_digest(b'{"task":"y"}', digest)
        assert not ring("k2", keys=keys).is_content_digest(b'{"task":"x"}', digest)


class TestPayloadCodec:
    """Temporal payloads are encrypted with the key id in metadata; plain ones still decode."""

    async def test_round_trip_without_plaintext(self) -> None:
        converter = with_encryption(pydantic_data_converter, ring("k1"))
        payloads = await converter.encode([{"task": MARKER}])
        assert payloads[0].metadata["encoding"] == ENCODING
        assert payloads[0].metadata["encryption-key-id"] == b"k1"
        assert MARKER.encode() not in payloads[0].SerializeToString()
        assert await converter.decode(payloads, [dict]) == [{"task": MARKER}]

    async def test_plain_json_from_the_ui_decodes(self) -> None:
        converter = with_encryption(pydantic_data_converter, ring("k1"))
        typed = Payload(metadata={"encoding": b"json/plain"}, data=b'{"approval_id": "a-1", "reviewer": "alice"}')
        assert await converter.decode([typed], [dict]) == [{"approval_id": "a-1", "reviewer": "alice"}]

    async def test_rotation_keeps_old_payloads_readable(self) -> None:
        keys: dict[str, str] = {}
        before = await EncryptionCodec(ring("k1", keys=keys)).encode([Payload(data=b"old")])
        after = EncryptionCodec(ring("k2", "k1", keys=keys))
        assert (await after.decode(before))[0].data == b"old"
        assert (await after.encode([Payload(data=b"new")]))[0].metadata["encryption-key-id"] == b"k2"

    def test_off_without_keys(self) -> None:
        assert with_encryption(pydantic_data_converter, None) is pydantic_data_converter


class TestWorkerCodec:
    """On a worker, a payload under a key it lacks raises (its task is retried elsewhere); garbage under its key is refused."""

    async def test_missing_keys_raise_and_garbage_becomes_a_marker(self) -> None:
        sealed = await EncryptionCodec(ring("k2")).encode([Payload(data=b"secret")])
        keyless = guarded(pydantic_data_converter).payload_codec
        keyed = guarded(with_encryption(pydantic_data_converter, ring("k1"))).payload_codec
        assert keyless is not None and keyed is not None
        with pytest.raises(MissingEncryptionKey, match="key 'k2', but AGENT_ENCRYPTION_KEYS is not set on this worker"):
            await keyless.decode(sealed)
        with pytest.raises(MissingEncryptionKey, match="key 'k2', but AGENT_ENCRYPTION_KEYS lists only 'k1'"):
            await keyed.decode(sealed)
        garbage = Payload(metadata={"encoding": ENCODING, "encryption-key-id": b"k1"}, data=b"not a ciphertext")
        [marker] = await keyed.decode([garbage])
        assert marker.metadata["encoding"] == UNDECODABLE and b"does not verify" in marker.data
        plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"task": "x"}')
        assert await keyless.decode([plain]) == [plain] and await keyless.encode([plain]) == [plain]

    async def test_a_context_copy_keeps_the_converters_and_names_the_workflow(self, caplog: pytest.LogCaptureFixture) -> None:
        worker = guarded(pydantic_data_converter)
        in_context = worker.with_context(WorkflowSerializationContext(namespace="default", workflow_id="run-7"))
        # The SDK asks for this per payload: the converters are kept, not rebuilt, and the codec knows the run.
        assert in_context.payload_converter is worker.payload_converter
        assert in_context.failure_converter is worker.failure_converter
        assert in_context.payload_codec is not worker.payload_codec and type(in_context) is type(worker)
        sealed = await EncryptionCodec(ring("k2")).encode([Payload(data=b"secret")])
        with caplog.at_level(logging.ERROR, logger="durable_agent.worker"), pytest.raises(MissingEncryptionKey):
            await in_context.decode(sealed)
        assert "a workflow task of 'run-7'" in caplog.text
        assert await in_context.encode(["x"]) == await worker.encode(["x"])

    def test_the_payload_converters_of_runs_share_their_type_adapters(self) -> None:
        """The SDK makes a payload converter per run and per activation: they convert alike, from one cache of adapters."""
        worker = guarded(pydantic_data_converter)
        first, second = worker.payload_converter_class(), worker.payload_converter_class()
        assert first is not second and first.converters is second.converters
        payloads = first.to_payloads([AgentResult(status="success", answer="done", steps=1, model="m", agent="a")])
        assert second.from_payloads(payloads, [AgentResult]) == first.from_payloads(payloads, [AgentResult])
        assert second.from_payloads([Payload(metadata={"encoding": b"json/plain"}, data=b"{nope")])[0].reason.startswith("it is not JSON")

    async def test_each_context_keeps_its_own_copy(self, caplog: pytest.LogCaptureFixture) -> None:
        """Asked again for a context, the converter gives the copy it made; other contexts get theirs."""
        worker = guarded(pydantic_data_converter)
        seven, eight = (WorkflowSerializationContext(namespace="default", workflow_id=f"run-{n}") for n in (7, 8))
        assert worker.with_context(seven) is worker.with_context(seven)
        in_eight = worker.with_context(eight)
        # A copy asked for another context copies itself for that context, not for its own.
        assert worker.with_context(seven).with_context(eight) is not in_eight
        sealed = await EncryptionCodec(ring("k2")).encode([Payload(data=b"secret")])
        for context, copy_ in ((eight, in_eight), (seven, worker.with_context(eight).with_context(seven))):
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="durable_agent.worker"), pytest.raises(MissingEncryptionKey):
                await copy_.decode(sealed)
            assert f"a workflow task of {context.workflow_id!r}" in caplog.text


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def options(url: str, origin: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url, method="OPTIONS", headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type,x-namespace"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers)


class TestCodecServer:
    """The codec server decodes for a holder of the token, refuses everyone else, and answers the UI's origin."""

    async def test_decode_encode_and_refusal(self) -> None:
        codec = EncryptionCodec(ring("k1"))
        encrypted = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"task": MARKER}).encode())])
        body = json_format.MessageToJson(Payloads(payloads=encrypted)).encode()
        app = create_app(codec, "s3cret", allowed_origins=["http://localhost:8233"])
        async with serving(app) as base:
            status, _, text = await asyncio.to_thread(post, base + "/decode", body, {})
            assert status == 401 and MARKER.encode() not in text
            status, _, _ = await asyncio.to_thread(post, base + "/decode", body, {"Authorization": "Bearer wrong"})
            assert status == 401
            status, headers, text = await asyncio.to_thread(
                post, base + "/decode", body, {"Authorization": "Bearer s3cret", "Origin": "http://localhost:8233", "X-Namespace": "default"}
            )
            assert status == 200
            assert headers["access-control-allow-origin"] == "http://localhost:8233"
            decoded = json_format.Parse(text, Payloads()).payloads[0]
            assert json.loads(decoded.data) == {"task": MARKER}

            status, _, text = await asyncio.to_thread(post, base + "/encode", text, {"Authorization": "Bearer s3cret"})
            assert status == 200
            again = json_format.Parse(text, Payloads()).payloads[0]
            assert again.metadata["encoding"] == ENCODING and MARKER.encode() not in again.data

            status, _, _ = await asyncio.to_thread(post, base + "/decode", b"not json", {"Authorization": "Bearer s3cret"})
            assert status == 400

    async def test_cors_only_for_the_ui_origin(self) -> None:
        app = create_app(EncryptionCodec(ring("k1")), "s3cret", allowed_origins=["http://localhost:8233"])
        async with serving(app) as base:
            status, headers = await asyncio.to_thread(options, base + "/decode", "http://localhost:8233")
            assert status == 204
            assert "authorization" in headers["access-control-allow-headers"].lower()
            assert headers["access-control-allow-credentials"] == "true"
            _, headers = await asyncio.to_thread(options, base + "/decode", "http://evil.example")
            assert "access-control-allow-origin" not in {k.lower() for k in headers}

    def test_refuses_to_start_without_a_token(self) -> None:
        with pytest.raises(ValueError, match="AGENT_CODEC_TOKEN"):
            create_app(EncryptionCodec(ring("k1")), "")
