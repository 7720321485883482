"""What people and programs may send a run, and the checks that hold them to it.

A run's start input and the payloads of its signals and updates come from people
typing JSON and from programs the run cannot trust to be well formed. Whatever
they send, the run must either refuse it at once with a message naming the
problem, or carry on unharmed: never leave a workflow task retrying, never grow
its state past Temporal's limits. The limits below are named in every refusal,
so the sender knows which one was hit. Pure functions; the workflow calls them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: Longest task, in characters. With ``metadata`` (at most 64 KiB) a task of plain text this
#: long keeps the start input well under Temporal's 2 MB payload limit.
MAX_TASK_CHARS = 1_000_000
#: A task over this many bytes of UTF-8 goes into the content store once, and the run refers
#: to it from then on: its model call and its continuations carry a reference, not the text.
TASK_INLINE_BYTES = 8 * 1024
#: Characters of a stored task kept in a continuation's input, so people reading the history see what the run is about.
TASK_STUB_CHARS = 200
#: How deep ``metadata`` may nest (``{"a": {"b": 1}}`` is 2 deep).
MAX_METADATA_DEPTH = 32
#: Largest ``metadata``, as compact UTF-8 JSON, in bytes. It is carried by every continuation.
MAX_METADATA_BYTES = 64 * 1024
#: Longest reviewer name, approval id, agent name or model name, in characters.
MAX_NAME_CHARS = 200
#: Longest reviewer comment, in characters.
MAX_COMMENT_CHARS = 2_000
#: How deep a signal or update payload may nest.
MAX_PAYLOAD_DEPTH = 8
#: Longest piece of sender-chosen text (a field name, a type) quoted in a refusal.
QUOTED_CHARS = 64


@dataclass(frozen=True)
class Undecodable:
    """A payload the data converter could not decode: what the handler gets instead of a value.

    The worker's converter (:mod:`durable_agent.converter`) hands this to the run
    and to handlers that take untyped arguments, so that the run's own checks
    refuse the payload by name rather than the SDK failing the workflow task.
    """

    reason: str
    encoding: str = "json/plain"


def quoted(text: str, limit: int = QUOTED_CHARS) -> str:
    """``text`` cut to ``limit`` characters for an error message, with lone surrogates made visible."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def describe(value: Any) -> str:
    """What kind of JSON value ``value`` is, for a refusal (never the value itself)."""
    if isinstance(value, Undecodable):
        return f"an undecodable payload ({value.reason})"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    if value is None:
        return "null"
    return names.get(type(value), f"a {quoted(type(value).__name__)}")


def nesting_depth(value: Any) -> int:
    """How deep ``value`` nests: 0 for a scalar, 1 for ``{}`` or ``[1]``, 2 for ``{"a": [1]}``.

    Iterative, so a hostile value nested thousands deep cannot exhaust the stack.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def text_problems(value: Any, where: str) -> list[str]:
    """Strings that are not Unicode text (lone surrogates) and numbers that are not finite, by path.

    JSON may encode both (``"\\ud800"``, ``1e400``), Python decodes them, and both
    break later: a lone surrogate cannot be written out as UTF-8 again, and an
    infinite budget or amount defeats every comparison made with it.
    """
    problems: list[str] = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack and len(problems) < 5:
        item, path = stack.pop()
        if isinstance(item, str):
            if not _is_text(item):
                problems.append(f"{path}: contains a lone surrogate (e.g. \\ud800), which is not Unicode text")
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(f"{path}: must be a finite number, not {item}")
        elif isinstance(item, dict):
            for key, child in item.items():
                name = quoted(str(key))
                if isinstance(key, str) and not _is_text(key):
                    problems.append(f"{path}: a field name contains a lone surrogate, which is not Unicode text")
                stack.append((child, f"{path}.{name}" if path else name))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return problems


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (lone surrogates escaped, so this never fails)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8", "backslashreplace"))


def start_input_problems(value: Any) -> list[str]:
    """What is wrong with a run's start input before its fields are validated; empty when nothing is.

    Covers what pydantic would not say well or at all: an undecodable payload, text
    that is not Unicode, non-finite numbers, and the size and depth limits of ``task``
    and ``metadata``. Field types and unknown fields are left to :class:`~durable_agent.schemas.AgentInput`.
    """
    if isinstance(value, Undecodable):
        return [f"the input could not be decoded: {value.reason}"]
    if not isinstance(value, dict):
        return [f"expected a JSON object, got {describe(value)}"]
    problems: list[str] = []
    task = value.get("task")
    if isinstance(task, str) and len(task) > MAX_TASK_CHARS:
        problems.append(
            f"task: {len(task):,} characters, over the limit of {MAX_TASK_CHARS:,} (MAX_TASK_CHARS); "
            "give the agent a tool that reads large documents instead"
        )
        value = {k: v for k, v in value.items() if k != "task"}  # not scanned again below
    metadata = value.get("metadata")
    if isinstance(metadata, (dict, list)):
        depth = nesting_depth(metadata)
        if depth > MAX_METADATA_DEPTH:
            problems.append(f"metadata: nested {depth} levels deep, over the limit of {MAX_METADATA_DEPTH} (MAX_METADATA_DEPTH)")
        else:
            size = json_size(metadata)
            if size > MAX_METADATA_BYTES:
                problems.append(f"metadata: {size:,} bytes of JSON, over the limit of {MAX_METADATA_BYTES:,} (MAX_METADATA_BYTES)")
    if not problems:
        problems.extend(text_problems(value, ""))
    return problems


def task_is_large(task: str) -> bool:
    """Whether ``task`` goes into the content store rather than into activity and continuation inputs."""
    return len(task) > TASK_INLINE_BYTES or len(task.encode("utf-8")) > TASK_INLINE_BYTES


def task_stub(task: str, ref: str) -> str:
    """What a continuation's input says for a stored ``task``: its start, its size and where the rest is."""
    return f"{task[:TASK_STUB_CHARS]} [... the task is {len(task):,} characters, stored as {ref}]"


class PayloadRefused(Exception):
    """A signal or update payload the run will not act on; the message says why."""


def single_payload(payloads: tuple[Any, ...], handler: str) -> Any:
    """The one JSON object a signal or update takes (``{}`` for none at all).

    Raises:
        PayloadRefused: naming what is wrong: several payloads, one that could not be
            decoded, one that is not an object, nests too deep, or holds text that
            is not Unicode or numbers that are not finite.
    """
    if len(payloads) > 1:
        raise PayloadRefused(f"{handler} takes one JSON object, got {len(payloads)} payloads")
    payload = payloads[0] if payloads else None
    if payload is None:
        return {}
    if isinstance(payload, Undecodable):
        raise PayloadRefused(f"its payload could not be decoded: {payload.reason}")
    if not isinstance(payload, dict):
        raise PayloadRefused(f"{handler} takes one JSON object, got {describe(payload)}")
    depth = nesting_depth(payload)
    if depth > MAX_PAYLOAD_DEPTH:
        raise PayloadRefused(f"the payload nests {depth} levels deep, over the limit of {MAX_PAYLOAD_DEPTH} (MAX_PAYLOAD_DEPTH)")
    problems = text_problems(payload, "")
    if problems:
        raise PayloadRefused("; ".join(problems))
    return payload

