"""The shapes every other schema module uses: autonomy levels, run statuses and phases, token usage,
and the base of the models people write by hand.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Autonomy(str, Enum):
    """How much an agent may do without a human. Ordered from tightest to loosest."""

    READ_ONLY = "read_only"
    SUPERVISED = "supervised"
    AUTONOMOUS = "autonomous"

    @property
    def rank(self) -> int:
        return _AUTONOMY_RANK[self]

    def tighten(self, requested: "Autonomy | None") -> "Autonomy":
        """Return the tighter of this level and ``requested`` (a run may only tighten)."""
        if requested is None or requested.rank >= self.rank:
            return self
        return requested


_AUTONOMY_RANK = {Autonomy.READ_ONLY: 0, Autonomy.SUPERVISED: 1, Autonomy.AUTONOMOUS: 2}

#: How a run ended. ``stopped``: an anomaly rule stopped it; ``refused``: the model refused the task.
RunStatus = Literal["success", "max_steps_exceeded", "budget_exceeded", "cancelled", "failed", "stopped", "refused"]
Phase = Literal[
    "starting",
    "thinking",
    "acting",
    "waiting_for_approval",
    "waiting_for_rate_limit",
    "waiting_for_budget",
    "continuing",
    "compacting",
    "done",
]


class StrictModel(BaseModel):
    """Base for models that people write by hand: unknown fields are errors, numbers are finite.

    ``Infinity`` and ``NaN`` (which JSON parsers and pydantic accept, also as strings)
    would defeat every limit compared with them, so each number field refuses them by name.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Usage(BaseModel):
    """Token usage as the Messages API reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )
