"""The worker's payload converter: a payload it cannot decode never wedges a run.

Temporal's Python SDK decodes a workflow's start input and a handler's arguments
before any workflow code runs. When decoding fails (bytes that are not UTF-8, JSON
nested deeper than pydantic's parser allows, an unknown encoding) the start input
fails the workflow task, which then retries forever, and a signal is dropped with
only a log line. This converter decodes *untyped* arguments (the run and the
approval handlers take ``*payloads``) without ever raising: a payload it cannot
read becomes :class:`~durable_agent.inputs.Undecodable`, which the run's own
checks refuse by name, failing the run at once or listing the refusal in its
warnings. Typed values (activity inputs and results) decode exactly as before.

The same holds for a payload codec (encryption): a payload it cannot decode
(garbage claiming to be encrypted) would fail the whole activation, so the
worker's codec hands it on as a marker instead, which untyped arguments refuse
by name and typed values still fail on.

Except for a payload encrypted under a key this worker does not have (or any
encrypted payload, on a worker without ``AGENT_ENCRYPTION_KEYS``): another worker
may have the key, so the task that carries it fails, loudly, naming the key id,
and is retried (a workflow task until a worker with the key takes it, an activity
by its retry policy). Refusing the payload instead would fail the run for good.
A worker cannot tell such a payload from garbage that names a key it lacks; a
signal forged that way holds its run's workflow task until it is terminated, which
whoever may signal a run may do anyway.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from durable_agent.encryption import KeylessCodec, MissingEncryptionKey
from durable_agent.inputs import Undecodable, quoted

log = logging.getLogger("durable_agent.worker")

JSON_PLAIN = b"json/plain"
#: What :class:`TolerantCodec` puts in place of a payload its codec could not decode; the data says why.
UNDECODABLE = b"binary/undecodable"
#: The converters every :class:`GuardedPayloadConverter` made without arguments shares, by class.
_shared_converter_state: dict[type, dict[str, Any]] = {}


class GuardedPayloadConverter(PydanticPayloadConverter):
    """:class:`PydanticPayloadConverter` that turns an undecodable untyped payload into :class:`Undecodable`.

    Made without arguments (as the SDK makes it: once per run, and once per workflow
    activation for the codec's sake), every instance shares the converters of the
    first, and so their cache of pydantic type adapters. Otherwise each run would
    build an adapter for every type it converts, and keep them while it waits; the
    converters hold no other state, and the cache is an ``lru_cache``, safe across
    the workflow task threads.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            super().__init__(*args, **kwargs)
            return
        shared = _shared_converter_state.get(type(self))
        if shared is None:
            super().__init__()
            shared = _shared_converter_state.setdefault(type(self), dict(self.__dict__))
        self.__dict__.update(shared)

    def from_payloads(self, payloads: Sequence[Payload], type_hints: list[type] | None = None) -> list[Any]:
        if type_hints is not None:
            return super().from_payloads(payloads, type_hints)
        return [self._decode_untyped(payload) for payload in payloads]

    def _decode_untyped(self, payload: Payload) -> Any:
        try:
            return super().from_payloads([payload])[0]
        except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the run must get a value it can refuse
            first = exc
        encoding = payload.metadata.get("encoding", b"")
        if encoding == UNDECODABLE:
            return Undecodable(f"it could not be decoded by the payload codec ({payload.data.decode('utf-8', 'replace')})")
        if encoding == JSON_PLAIN:
            # pydantic's parser stops at 200 levels and at lone surrogates; Python's goes
            # further, so the run's checks can name the field and the limit instead.
            try:
                return json.loads(payload.data)
            except UnicodeDecodeError as exc:
                return Undecodable(f"it is not UTF-8 text (byte {exc.start}: {exc.reason})")
            except RecursionError:
                return Undecodable("its JSON nests too deeply to read")
            except ValueError as exc:
                return Undecodable(f"it is not JSON ({quoted(str(exc), 120)})")
        label = quoted(encoding.decode("utf-8", "replace")) or "(none)"
        return Undecodable(f"encoding {label} cannot be read as JSON ({quoted(str(first), 120)})", encoding=label)


#: Seconds between two loud log lines about the same workflow and missing key.
MISSING_KEY_LOG_EVERY = 60.0
#: Called with the missing key and where it was met (a workflow's or an activity's serialization context, if known).
MissingKeyListener = Callable[[MissingEncryptionKey, SerializationContext | None], None]


class TolerantCodec(PayloadCodec, WithSerializationContext):
    """A worker's payload codec that turns a payload it cannot decode into an ``UNDECODABLE`` marker.

    A payload under a key this worker lacks is not turned into a marker: the
    :class:`MissingEncryptionKey` is logged (once a minute per workflow and key) and
    raised, failing the task so that a worker with the key takes it.

    Args:
        inner: The codec that decrypts (:class:`~durable_agent.encryption.KeylessCodec` without keys).
        on_missing_key: Told of each missing key too (the worker process may stop itself).
    """

    def __init__(
        self, inner: PayloadCodec, on_missing_key: MissingKeyListener | None = None, context: SerializationContext | None = None
    ) -> None:
        self.inner = inner
        self.on_missing_key = on_missing_key
        self.context = context
        self._logged: dict[tuple[str, str], float] = {}

    def with_context(self, context: SerializationContext) -> "TolerantCodec":
        codec = TolerantCodec(self.inner, self.on_missing_key, context)
        codec._logged = self._logged  # one rate limit for the worker, not one per task
        return codec

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(await self.inner.encode(payloads))

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        try:
            return list(await self.inner.decode(payloads))
        except MissingEncryptionKey as exc:
            self._missing_key(exc)
            raise
        except Exception:  # noqa: BLE001 - find the payloads at fault, one by one
            pass
        out: list[Payload] = []
        for payload in payloads:
            try:
                out.extend(await self.inner.decode([payload]))
            except MissingEncryptionKey as exc:
                self._missing_key(exc)
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the codec raises, the run gets a value it can refuse
                reason = quoted(f"{type(exc).__name__}: {exc}", 200)
                out.append(Payload(metadata={"encoding": UNDECODABLE}, data=reason.encode("utf-8")))
        return out

    def _missing_key(self, exc: MissingEncryptionKey) -> None:
        context = self.context
        where = "a task"
        if isinstance(context, ActivitySerializationContext):
            where = f"activity {context.activity_type} of workflow {context.workflow_id!r} (task queue {context.activity_task_queue!r})"
        elif isinstance(context, WorkflowSerializationContext):
            where = f"a workflow task of {context.workflow_id!r}"
        if self.on_missing_key is not None:
            self.on_missing_key(exc, context)
        now = time.monotonic()
        key = (where, exc.kid)
        if now - self._logged.get(key, -MISSING_KEY_LOG_EVERY) < MISSING_KEY_LOG_EVERY:
            return
        self._logged[key] = now
        log.error(
            "cannot read %s: %s. It fails here and is retried, so that a worker with the key takes it; "
            "give this worker the same AGENT_ENCRYPTION_KEYS as the others (no key was logged)",
            where, exc,
        )


#: Context copies a data converter keeps (see :meth:`GuardedDataConverter.with_context`).
CONTEXT_COPIES = 512


@dataclasses.dataclass(frozen=True)
class GuardedDataConverter(DataConverter):
    """A :class:`DataConverter` whose copies for a serialization context keep its converters.

    The SDK asks for the data converter of a payload's context (the workflow, the activity)
    for every payload of every task, and :class:`TolerantCodec` takes the context (its log
    line names the workflow). ``DataConverter.with_context`` then clones itself with
    ``dataclasses.replace``, which builds a new payload converter and failure converter
    only to overwrite them with the old ones (three times the cost of the copy below).
    A shallow copy keeps them as they are, and is made once per context: the SDK asks
    again for every payload of a task (about twenty times a step, for two or three
    contexts), so the copies are kept, at most :data:`CONTEXT_COPIES` of them.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_copies", {})

    def with_context(self, context: SerializationContext) -> Self:
        copies: dict[SerializationContext, Self] = self.__dict__["_copies"]
        try:
            return copies[context]
        except KeyError:
            pass
        except TypeError:  # a context that cannot be a key (the SDK's are frozen dataclasses)
            return self._copy_for(context)
        made = copies[context] = self._copy_for(context)
        if len(copies) > CONTEXT_COPIES:
            # Contexts name one workflow or one activity: the old ones are not asked again.
            copies.clear()
            copies[context] = made
        return made

    def _copy_for(self, context: SerializationContext) -> Self:
        changed: dict[str, Any] = {}
        for name in ("payload_converter", "payload_codec", "failure_converter", "external_storage"):
            part = getattr(self, name)
            if isinstance(part, WithSerializationContext) and (in_context := part.with_context(context)) is not part:
                changed[name] = in_context
        if not changed:
            return self
        clone = copy.copy(self)
        for name, value in changed.items():
            object.__setattr__(clone, name, value)
        object.__setattr__(clone, "_copies", {})  # its own: a copy's copies are made from it
        return clone


def guarded(converter: DataConverter, on_missing_key: MissingKeyListener | None = None) -> DataConverter:
    """``converter`` with :class:`GuardedPayloadConverter` and its codec made tolerant; its failure converter kept.

    Without a codec (no ``AGENT_ENCRYPTION_KEYS``) it gets a :class:`~durable_agent.encryption.KeylessCodec`,
    so an encrypted payload fails its task instead of being refused by the run.
    """
    if issubclass(converter.payload_converter_class, GuardedPayloadConverter):
        return converter
    codec = converter.payload_codec or KeylessCodec()
    if not isinstance(codec, TolerantCodec):
        codec = TolerantCodec(codec, on_missing_key)
    kept = {f.name: getattr(converter, f.name) for f in dataclasses.fields(converter) if f.init}
    return GuardedDataConverter(**{**kept, "payload_converter_class": GuardedPayloadConverter, "payload_codec": codec})


#: The pydantic data converter with the guard: for replayers and anything else that runs workflows.
guarded_data_converter = GuardedDataConverter(payload_converter_class=GuardedPayloadConverter)


def guarded_client(client: Client, on_missing_key: MissingKeyListener | None = None) -> Client:
    """A client like ``client`` (same connection, namespace, codec, plugins) whose workers use the guard."""
    config = client.config()
    data_converter = config["data_converter"]
    if issubclass(data_converter.payload_converter_class, GuardedPayloadConverter):
        return client
    config["data_converter"] = guarded(data_converter, on_missing_key)
    return Client(**config)
