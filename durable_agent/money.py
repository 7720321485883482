"""Money limits: what one call may move, what one run may move without a person, in one currency. Pure functions.

A tool that moves money names the argument that carries the amount (``amount_arg``)
and the one that carries its currency (``currency_arg``; an argument named
``currency`` is taken when none is named). A profile's ``[approval]`` sets:

- ``max_amount``: the most one call may move without a person;
- ``max_amount_per_run``: the most all the calls of one run may move without a
  person, together (default: ``max_amount``, so splitting a refund into parts gains
  nothing); calls a person approved do not count, since a person saw each of them;
- ``currency`` (default ``"USD"``) and ``rates`` (one unit of another currency in the
  profile's currency, e.g. ``{ EUR = 1.08, JPY = 0.0067 }``): amounts are compared
  in the profile's currency.

Whatever cannot be checked waits for a person, never runs: an amount that is not
a number, a currency with no rate, a profile with no limit at all. An amount's size
is what counts (``-500`` moves 500). The workflow asks :func:`check` before a call
(through :func:`durable_agent.policy.evaluate`) and counts what ran without a
person (:func:`moved_by`); nothing here reads the clock or the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from durable_agent.schemas import ApprovalPolicy, ToolInfo
from durable_agent.schemas.profile import CURRENCY_CODE

__all__ = [
    "CURRENCY_CODE",
    "MoneyCheck",
    "call_limit",
    "check",
    "currency_of",
    "limit_unset_warning",
    "moved_by",
    "run_limit",
    "with_currency_defaults",
]

#: The argument taken as a tool's currency when it names none (``currency_arg``).
CONVENTIONAL_CURRENCY_ARG = "currency"
#: Sums are compared with this much room, so that 0.1 + 0.2 of a limit of 0.3 is not held for rounding alone.
_ROUNDING = 1e-9


@dataclass(frozen=True)
class MoneyCheck:
    """What a call moves, and whether it may move it without a person.

    Attributes:
        value: What the call moves in the profile's currency (its size); ``None`` when it
            cannot be known (not a number, an unknown currency).
        hold: Why it waits for a person (one sentence for the reviewer and the model);
            ``None``: within every limit.
    """

    value: float | None
    hold: str | None


def call_limit(policy: ApprovalPolicy) -> float | None:
    """The most one call may move without a person: ``max_amount``, else the run's limit."""
    return policy.max_amount if policy.max_amount is not None else policy.max_amount_per_run


def run_limit(policy: ApprovalPolicy) -> float | None:
    """The most one run may move without a person: ``max_amount_per_run``, else ``max_amount``."""
    return policy.max_amount_per_run if policy.max_amount_per_run is not None else policy.max_amount


def _number(value: Any) -> float | None:
    """``value`` as a finite number; ``None`` when it is not one (a bool, text that is no number, NaN)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def currency_of(tool: ToolInfo, args: Mapping[str, Any], policy: ApprovalPolicy) -> str | None:
    """The currency of the amount in ``args``, in upper case; ``None`` when it cannot be told.

    The currency argument when the call gives it; else the tool's declared default;
    else, for a tool that takes no currency at all, the profile's currency. A currency
    argument left out with no default (the tool decides) cannot be told.
    """
    if tool.currency_arg is None:
        return policy.currency
    given = args.get(tool.currency_arg)
    if given is None:
        return tool.currency_default.upper() if tool.currency_default else None
    return given.strip().upper() if isinstance(given, str) else None


def _show(number: float) -> str:
    """``4999``, ``999.99``, ``900000``: as a person writes an amount (no exponent below 10^15)."""
    if abs(number) < 1e15 and number == int(number):
        return str(int(number))
    return f"{number:.10g}"


def check(
    tool: ToolInfo, args: Mapping[str, Any], policy: ApprovalPolicy, moved: float, *, hold_omitted: bool = True
) -> MoneyCheck | None:
    """Whether a call of ``tool`` with ``args`` may move its money without a person.

    A call that leaves the amount out waits: what it moves is then the tool's to decide
    (a whole order, a default), and no limit can be checked against it.

    Args:
        tool: The tool's policy metadata (``amount_arg``, ``currency_arg``, ``currency_default``).
        args: The arguments the model gave.
        policy: The profile's approval policy (limits, currency, rates).
        moved: What the run has moved without a person so far, in the profile's currency.
        hold_omitted: False for the rules of runs begun before an omitted amount waited
            (they replay with them): such a call moved no money.

    Returns:
        ``None`` when the call moves no money (the tool names no amount argument); else
        its value (``None`` when it cannot be told) and, when it must wait, why.
    """
    if tool.amount_arg is None:
        return None
    if tool.amount_arg not in args:
        if not hold_omitted:
            return None
        return MoneyCheck(
            None,
            f"{tool.name} moves money and the call gives no amount ({tool.amount_arg}), so what it moves is the tool's "
            "to decide and cannot be checked against a limit",
        )
    given = args[tool.amount_arg]
    amount = _number(given)
    if amount is None:
        return MoneyCheck(None, f"the amount {given!r} is not a number a limit can be checked against")
    size = abs(amount)
    per_call, per_run = call_limit(policy), run_limit(policy)
    if per_call is None or per_run is None:
        return MoneyCheck(
            None, f"{tool.name} moves money and this profile sets no limit (approval.max_amount), so every amount waits for a person"
        )
    currency = currency_of(tool, args, policy)
    if currency is None:
        shown = args.get(tool.currency_arg or "")
        what = "no currency is given" if shown is None else f"the currency {shown!r} is not a currency code"
        return MoneyCheck(None, f"{what}, so the amount {_show(amount)} cannot be compared with the limit of {_show(per_call)} {policy.currency}")
    rate = 1.0 if currency == policy.currency else policy.rates.get(currency)
    if rate is None:
        known = ", ".join(sorted(policy.rates)) or "none"
        return MoneyCheck(
            None,
            f"the amount {_show(amount)} {currency} cannot be compared with the limit of {_show(per_call)} {policy.currency}: "
            f"this profile has no rate for {currency} (approval.rates has: {known})",
        )
    value = size * rate
    converted = "" if currency == policy.currency else f" ({_show(round(value, 2))} {policy.currency})"
    if not value <= per_call * (1 + _ROUNDING):  # an overflow to inf waits too
        limit = f"{_show(per_call)}" + (f" {policy.currency}" if converted else "")
        return MoneyCheck(value, f"amount {_show(amount)} {currency}{converted} is above the limit of {limit}")
    if not moved + value <= per_run * (1 + _ROUNDING):
        return MoneyCheck(
            value,
            f"amount {_show(amount)} {currency}{converted} would take what this run has moved without approval from "
            f"{_show(round(moved, 2))} to {_show(round(moved + value, 2))} {policy.currency}, above the run's limit of "
            f"{_show(per_run)} {policy.currency} (approval.max_amount_per_run)",
        )
    return MoneyCheck(value, None)


def moved_by(tool: ToolInfo, args: Mapping[str, Any], policy: ApprovalPolicy) -> float:
    """What a call that ran without a person moved, in the profile's currency, for the run's total.

    A call the rules of runs begun before money limits let through may have no value
    (a currency with no rate): its bare size counts then, the nearest there is.
    """
    if tool.amount_arg is None or tool.amount_arg not in args:
        return 0.0
    amount = _number(args[tool.amount_arg])
    if amount is None:
        return 0.0
    currency = currency_of(tool, args, policy)
    rate = 1.0 if currency in (None, policy.currency) else policy.rates.get(currency or "", 1.0)
    value = abs(amount) * rate
    return value if math.isfinite(value) else 0.0


def with_currency_defaults(tool: ToolInfo) -> ToolInfo:
    """``tool`` with its currency argument and that argument's default filled in from its input schema.

    A tool that names an amount argument but no currency argument, and takes an
    argument named ``currency``, has that one; the argument's default (``currency:
    str = "USD"``) is the currency of a call that leaves it out. Done when a run's
    profile is resolved, while the schema is still at hand.
    """
    if tool.amount_arg is None:
        return tool
    properties = tool.input_schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    update: dict[str, Any] = {}
    arg = tool.currency_arg
    if arg is None and CONVENTIONAL_CURRENCY_ARG in properties:
        arg = update["currency_arg"] = CONVENTIONAL_CURRENCY_ARG
    spec = properties.get(arg) if arg is not None else None
    default = spec.get("default") if isinstance(spec, dict) else None
    if tool.currency_default is None and isinstance(default, str) and CURRENCY_CODE.match(default.strip().upper()):
        update["currency_default"] = default.strip().upper()
    return tool.model_copy(update=update) if update else tool


def limit_unset_warning(file: str, agent: str, policy: ApprovalPolicy, money_tools: list[str]) -> str | None:
    """The warning for a profile whose tools move money with no limit set: each of their calls will wait for a person."""
    if not money_tools or call_limit(policy) is not None:
        return None
    tools = ", ".join(money_tools)
    return (
        f"{file}: agents.{agent}.approval.max_amount is not set, and {tools} move{'s' if len(money_tools) == 1 else ''} money "
        f"(amount_arg): every call of {'it' if len(money_tools) == 1 else 'them'} waits for a person. To let small amounts run, "
        f"set max_amount = N under [agents.{agent}.approval] (in {policy.currency}; max_amount_per_run bounds a run's total, "
        "rates converts other currencies)"
    )
