"""Whatever a tool returns, made into JSON once, without ever failing.

A tool's result is written to the content store and previewed as JSON. A result
JSON cannot hold (a dict with tuple keys, a list that contains itself, bytes, a
set, ``NaN``, a string with a lone surrogate) used to fail *after* the tool had
done its work, so the activity was retried and the tool ran again. Here each such
part is converted, or replaced with a marker in square brackets, and a warning
says what was changed; the tool never runs again for it.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import math
from typing import Any

#: Deepest nesting kept; anything deeper is replaced with a marker.
MAX_DEPTH = 64
#: Largest integer kept as a number (Python refuses to print longer ones as decimal text).
MAX_INT_DIGITS = 4_000
#: Warnings listed per result; more are counted.
MAX_WARNINGS = 5


class _Converter:
    def __init__(self) -> None:
        self.changes: dict[str, int] = {}
        self.first_path: dict[str, str] = {}

    def note(self, change: str, path: str) -> None:
        self.changes[change] = self.changes.get(change, 0) + 1
        self.first_path.setdefault(change, path)

    def convert(self, value: Any, path: str, depth: int, seen: frozenset[int]) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            if abs(value).bit_length() > MAX_INT_DIGITS * 3:  # about MAX_INT_DIGITS decimal digits
                self.note("integer too large for JSON text, replaced", path)
                return f"[integer of {abs(value).bit_length()} bits]"
            return int(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            self.note("non-finite number (NaN or infinity) turned into text", path)
            return str(value)
        if isinstance(value, str):
            return self.text(value, path)
        if isinstance(value, enum.Enum):
            return self.convert(value.value, path, depth, seen)
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            try:
                return self.text(raw.decode("utf-8"), path)
            except UnicodeDecodeError:
                self.note("binary data turned into base64 text", path)
                return {"base64": base64.b64encode(raw).decode("ascii")}
        if depth >= MAX_DEPTH:
            self.note(f"nested deeper than {MAX_DEPTH} levels, cut", path)
            return f"[nested deeper than {MAX_DEPTH} levels]"
        if id(value) in seen:
            self.note("circular reference replaced", path)
            return "[circular reference]"
        inner = seen | {id(value)}
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, child in list(value.items()):
                name = self.key(key, path)
                out[name] = self.convert(child, f"{path}.{name}", depth + 1, inner)
            return out
        if isinstance(value, (list, tuple)):
            return [self.convert(child, f"{path}[{i}]", depth + 1, inner) for i, child in enumerate(list(value))]
        if isinstance(value, (set, frozenset)):
            items = [self.convert(child, f"{path}[{i}]", depth + 1, inner) for i, child in enumerate(value)]
            try:
                return sorted(items)
            except TypeError:
                return items
        dumped = self.dump_model(value, path)
        if dumped is not None:
            return self.convert(dumped, path, depth + 1, inner)
        try:
            return self.text(str(value), path)  # what json.dumps(default=str) did: dates, UUIDs, decimals
        except Exception:  # noqa: BLE001 - a __str__ that fails must not fail the call
            self.note("value that cannot be shown replaced", path)
            return f"[unserializable {type(value).__name__}]"

    def dump_model(self, value: Any, path: str) -> Any:
        """A pydantic model's or a dataclass's fields, or None for other objects."""
        try:
            if hasattr(value, "model_dump") and callable(value.model_dump):
                return value.model_dump(mode="python")
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        except Exception:  # noqa: BLE001
            self.note("object whose fields cannot be read replaced", path)
            return f"[unserializable {type(value).__name__}]"
        return None

    def key(self, key: Any, path: str) -> str:
        if isinstance(key, str):
            return self.text(key, path)
        if key is None or isinstance(key, (bool, int, float)):
            # What json.dumps does with them, silently.
            return "null" if key is None else ("true" if key is True else "false" if key is False else str(key))
        self.note(f"{type(key).__name__} keys turned into strings", path)
        try:
            return self.text(str(key), path)
        except Exception:  # noqa: BLE001
            return f"[{type(key).__name__} key]"

    def text(self, value: str, path: str) -> str:
        try:
            value.encode("utf-8")
            return str(value)
        except UnicodeEncodeError:
            self.note("text that is not valid Unicode (lone surrogates) repaired", path)
            return value.encode("utf-8", "replace").decode("utf-8")

    def warnings(self) -> list[str]:
        listed = sorted(self.changes.items())[:MAX_WARNINGS]
        out = [
            f"RESULT_CONVERTED: {change} (at {self.first_path[change] or 'the result'}"
            + (f" and {count - 1} more places)" if count > 1 else ")")
            for change, count in listed
        ]
        if len(self.changes) > MAX_WARNINGS:
            out.append(f"RESULT_CONVERTED: {len(self.changes) - MAX_WARNINGS} more kinds of change")
        return out


def json_safe(value: Any) -> tuple[Any, list[str]]:
    """``value`` as plain JSON data (dict, list, str, finite numbers, bools, None), and what was changed.

    Never raises. Strings, numbers and ordinary dicts and lists come back equal;
    tuples become lists; dates, UUIDs and other objects become their ``str()``;
    pydantic models and dataclasses their fields. A warning (``RESULT_CONVERTED: ...``)
    is returned for each kind of lossy change, with the first place it happened.
    """
    converter = _Converter()
    try:
        safe = converter.convert(value, "", 0, frozenset())
    except RecursionError:  # a __str__ or model_dump that recurses without end
        return f"[unserializable {type(value).__name__}]", ["RESULT_CONVERTED: the result could not be read, replaced"]
    return safe, converter.warnings()
