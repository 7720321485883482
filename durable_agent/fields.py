"""What keys a model takes, so that a refusal can help: the key meant, a number written as text.

Pydantic says ``Extra inputs are not permitted`` for a misspelt key and quietly
turns ``"1.00"`` into ``1.0``. People write ``agents.toml`` and start inputs by
hand, so a typo should be answered with the key they meant, and a number in
quotes (which often means a value pasted from somewhere else) refused by name
rather than guessed at. Pure functions over the models' type hints, used by the
configuration loader and by the run's start-input checks.
"""

from __future__ import annotations

import difflib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = [
    "describe_text_number",
    "did_you_mean",
    "known_keys",
    "looks_like_a_number",
    "numbers_as_text",
    "text_numbers_problem",
    "unknown_key_hint",
]

#: How many of a model's keys a hint lists when none is close to the one given.
LISTED_KEYS = 40
#: Longer keys are not compared with the known ones (the sender may be hostile; no key is this long).
MAX_KEY_CHARS = 100


def _options(annotation: Any) -> list[Any]:
    """The types an annotation allows: ``X | None`` and ``Optional[X]`` give ``[X]``; ``Annotated`` is unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _options(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [option for arg in typing.get_args(annotation) for option in _options(arg) if option is not type(None)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_number(annotation: Any) -> bool:
    """A field that holds a number and nothing else (``int``, ``float``, either one or ``None``)."""
    options = _options(annotation)
    return bool(options) and all(option in (int, float) for option in options)


def _child(annotation: Any, part: str | int) -> Any:
    """The annotation one step down ``part`` (a field of a model, a key of a dict, an index of a list); None: unknown."""
    for option in _options(annotation):
        origin = typing.get_origin(option)
        if _is_model(option):
            field = _field(option, str(part))
            if field is not None:
                return field.annotation
        elif origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
            return typing.get_args(option)[1] if typing.get_args(option) else None
        elif origin in (list, tuple, Sequence) and isinstance(part, int):
            return typing.get_args(option)[0] if typing.get_args(option) else None
    return None


def _field(model: type[BaseModel], key: str) -> Any:
    field = model.model_fields.get(key)
    if field is not None:
        return field
    return next((f for f in model.model_fields.values() if f.alias == key), None)


def known_keys(model: type[BaseModel], parent: Sequence[str | int]) -> list[str]:
    """The keys the model at ``parent`` (a path from ``model``, as pydantic's ``loc`` gives it) takes; empty if unknown."""
    annotation: Any = model
    for part in parent:
        annotation = _child(annotation, part)
        if annotation is None:
            return []
    models = [option for option in _options(annotation) if _is_model(option)]
    if len(models) != 1:
        return []
    return [field.alias or name for name, field in models[0].model_fields.items()]


def did_you_mean(key: str, known: Sequence[str]) -> str | None:
    """The known key closest to ``key``, when one is close enough to be what was meant."""
    if len(key) > MAX_KEY_CHARS:  # a sender may send anything; no key is this long
        return None
    lowered = {name.lower(): name for name in known}
    if key.lower() in lowered:  # only the case differs
        return lowered[key.lower()]
    found = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[found[0]] if found else None


def unknown_key_hint(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """What to say about the unknown key at ``loc``: the key meant, else the keys there are."""
    known = known_keys(model, loc[:-1])
    if not known:
        return ""
    meant = did_you_mean(str(loc[-1]), known)
    if meant is not None:
        return f"did you mean {meant!r}?"
    listed = ", ".join(known[:LISTED_KEYS]) + (", ..." if len(known) > LISTED_KEYS else "")
    return f"the keys here are: {listed}"


def numbers_as_text(value: Any, model: type[BaseModel], *, limit: int = 5) -> list[tuple[str, str | bool]]:
    """Where ``value`` gives a number field a string or a boolean: ``(path, the value given)``, at most ``limit``.

    ``value`` is the raw input (a parsed TOML file, a decoded JSON object) the model
    is about to validate. Pydantic would turn ``"1.00"`` into ``1.0`` and ``true`` into
    ``1``; whoever wrote them meant something else, or pasted a value from elsewhere.
    Nested models, dicts and lists of them are walked; keys the model does not know
    are left to its own validation.
    """
    found: list[tuple[str, str | bool]] = []
    stack: list[tuple[Any, Any, str]] = [(value, model, "")]
    while stack and len(found) < limit:
        item, annotation, path = stack.pop()
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    continue
                below = _child(annotation, key)
                if below is not None:
                    stack.append((child, below, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            below_list = _child(annotation, 0)
            if below_list is not None:
                stack.extend((child, below_list, f"{path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, (str, bool)) and _is_number(annotation):
            found.append((path, item))
    return sorted(found)


def describe_text_number(given: str | bool, *, limit: int = 32) -> str:
    """``the string "1.00"`` or ``true``: what was given where a number belongs, cut to ``limit`` characters."""
    if isinstance(given, bool):
        return "true" if given else "false"
    text = given if len(given) <= limit else given[: limit - 3] + "..."
    return "the string " + json.dumps(text, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def looks_like_a_number(text: str | bool) -> bool:
    """Whether ``text`` is a finite number in quotes (then the fix is to drop the quotes)."""
    if isinstance(text, bool):
        return False
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def text_numbers_problem(value: Any, model: type[BaseModel]) -> str | None:
    """The refusal of a JSON input whose number fields hold strings or booleans (None: there are none).

    ``{"budget_usd": "1.00"}`` gives ``budget_usd: must be a JSON number, not the string "1.00"``.
    """
    found = numbers_as_text(value, model)
    if not found:
        return None
    return "; ".join(f"{path}: must be a JSON number, not {describe_text_number(given)}" for path, given in found)
