"""Prices and cost arithmetic. Pure functions: the workflow calls them, tests table-drive them."""

from __future__ import annotations

import re

from durable_agent.schemas import ModelPrice, Usage

#: What follows a model's name in a dated snapshot id: ``-20250929``.
_DATED_SNAPSHOT = re.compile(r"-\d{8}")

#: USD per million tokens, list prices of current Claude models. Override or extend
#: them in ``agents.toml`` under ``[pricing.models."MODEL"]``.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    # Claude 5 family (list prices as published; cache write 1.25x and read 0.1x input).
    "claude-fable-5-1": ModelPrice(input=10.0, output=50.0),
    "claude-fable-5": ModelPrice(input=10.0, output=50.0),
    "claude-opus-5-5": ModelPrice(input=4.0, output=20.0),
    "claude-opus-5": ModelPrice(input=5.0, output=25.0),
    "claude-sonnet-5-5": ModelPrice(input=2.0, output=10.0),
    "claude-sonnet-5": ModelPrice(input=2.0, output=10.0),
    # Claude 4 family.
    "claude-opus-4-8": ModelPrice(input=5.0, output=25.0),
    "claude-opus-4-7": ModelPrice(input=5.0, output=25.0),
    "claude-opus-4-6": ModelPrice(input=5.0, output=25.0),
    "claude-sonnet-4-6": ModelPrice(input=3.0, output=15.0),
    "claude-opus-4-5": ModelPrice(input=5.0, output=25.0),
    "claude-opus-4-1": ModelPrice(input=15.0, output=75.0),
    "claude-opus-4": ModelPrice(input=15.0, output=75.0),
    "claude-sonnet-4-5": ModelPrice(input=3.0, output=15.0),
    "claude-sonnet-4": ModelPrice(input=3.0, output=15.0),
    "claude-haiku-4-5": ModelPrice(input=1.0, output=5.0),
    "claude-3-5-haiku": ModelPrice(input=0.8, output=4.0),
    # The offline model costs nothing; it still reports tokens so the arithmetic shows.
    "offline": ModelPrice(input=0.0, output=0.0),
}

#: Used for a model with no price: the dearest list price, so budgets err on the safe side.
DEFAULT_FALLBACK_PRICE = ModelPrice(input=15.0, output=75.0)

#: Every amount a run shows (a step's cost, the total, budgets left) is rounded to this many decimal places.
COST_DECIMALS = 8


def shown_usd(amount: float) -> float:
    """``amount`` as runs show it: rounded to :data:`COST_DECIMALS` places, the one rounding rule.

    A run adds up the steps' shown costs, so its ``total_cost`` is the sum of its
    decision records' ``estimated_cost`` exactly as they show.
    """
    return round(amount, COST_DECIMALS)


CACHE_WRITE_FACTOR = 1.25
CACHE_READ_FACTOR = 0.10


def find_price(model: str, prices: dict[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: exact name first, then the longest configured prefix.

    ``claude-sonnet-4-5-20250929`` finds ``claude-sonnet-4-5``.
    """
    if model in prices:
        return prices[model]
    best = None
    for name in prices:
        if model.startswith(name) and (best is None or len(name) > len(best)):
            best = name
    return prices[best] if best is not None else None


def price_warnings(model: str, prices: dict[str, ModelPrice]) -> list[str]:
    """A warning when ``model`` is priced by a family prefix rather than its own entry.

    A dated snapshot (``claude-sonnet-4-5-20250929``) is its model: no warning. A newer
    model of a family (``claude-opus-4-9`` at ``claude-opus-4``'s price) may cost
    something else entirely, so the run says which price it used.
    """
    if model in prices:
        return []
    matched = max((name for name in prices if model.startswith(name)), key=len, default=None)
    if matched is None or _DATED_SNAPSHOT.fullmatch(model[len(matched) :]):
        return []
    price = prices[matched]
    return [
        f"PRICE_BY_FAMILY: {model!r} has no price of its own; costs use {matched!r}'s "
        f"(${price.input:g}/M input, ${price.output:g}/M output); set [pricing.models.\"{model}\"] if it differs"
    ]


def cost_usd(usage: Usage, price: ModelPrice) -> float:
    """Cost in USD of one model call's ``usage`` at ``price``, cache writes and reads included."""
    cache_write = price.cache_write if price.cache_write is not None else price.input * CACHE_WRITE_FACTOR
    cache_read = price.cache_read if price.cache_read is not None else price.input * CACHE_READ_FACTOR
    micro = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * cache_write
        + usage.cache_read_input_tokens * cache_read
    )
    return micro / 1_000_000


def estimate_call_usd(
    price: ModelPrice,
    *,
    previous: Usage | None,
    new_input_chars: int,
    max_tokens: int,
) -> float:
    """A cautious estimate of the next model call's cost, before it is made.

    Input: everything the previous call read (the conversation is resent, at the
    full input price in case the cache missed) plus what was appended since
    (about four characters a token). Output: the whole ``max_tokens`` allowance.
    It errs high so that a budget is never overrun by the call it admits.
    """
    resent = 0
    if previous is not None:
        resent = (
            previous.input_tokens
            + previous.cache_creation_input_tokens
            + previous.cache_read_input_tokens
            + previous.output_tokens
        )
    input_tokens = resent + max(0, new_input_chars) // 4 + 1
    return (input_tokens * price.input + max_tokens * price.output) / 1_000_000


#: How long a prompt-cache entry lives after its last use (the API's default ``ephemeral`` TTL).
CACHE_TTL_SECONDS = 300.0
#: What a cache write costs, by the entry's lifetime, as a multiple of the input price.
CACHE_WRITE_FACTOR_BY_TTL = {"5m": CACHE_WRITE_FACTOR, "1h": 2.0}


def cache_write_price(price: ModelPrice, ttl: str = "5m") -> float:
    """USD per million tokens written to the prompt cache with lifetime ``ttl`` (``5m`` or ``1h``)."""
    if ttl == "5m" and price.cache_write is not None:
        return price.cache_write
    return price.input * CACHE_WRITE_FACTOR_BY_TTL[ttl]


def estimate_next_call_usd(
    price: ModelPrice,
    *,
    prompt_tokens: int,
    new_input_chars: int,
    max_tokens: int,
    cached_tokens: int = 0,
    cache_warm: bool = False,
    prompt_limit: int | None = None,
) -> float:
    """What the next model call can cost, following what will really be sent.

    Args:
        price: The model's price.
        prompt_tokens: What the next call resends: the last prompt and the reply to it, or
            the compacted conversation, or (first call) the system prompt and tool schemas.
        new_input_chars: What was appended since (tool results, the task), in characters.
        max_tokens: The output allowance, all of it counted.
        cached_tokens: Of ``prompt_tokens``, how many the last call left in the prompt cache.
        cache_warm: The last call was within the cache's lifetime: the cached part is read
            at the cache-read price. After it expired, the whole prompt is written again.
        prompt_limit: The most a prompt can carry (compaction keeps it there), when known.

    Everything not read from cache is priced as a cache write (the last block carries a
    breakpoint), so the estimate is not lower than the bill.
    """
    total = prompt_tokens + max(0, new_input_chars) // 3 + 1
    if prompt_limit is not None:
        total = min(total, prompt_limit)
    cached = min(cached_tokens, total) if cache_warm else 0
    read = price.cache_read if price.cache_read is not None else price.input * CACHE_READ_FACTOR
    micro = cached * read + (total - cached) * cache_write_price(price) + max_tokens * price.output
    return micro / 1_000_000
