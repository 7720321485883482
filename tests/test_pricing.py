"""Cost accounting: prices, cache tokens, estimates, the fallback price, and costs through a real run."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from durable_agent import pricing
from durable_agent.models.anthropic import with_cache_breakpoints
from durable_agent.profiles import AgentsConfig
from durable_agent.schemas import DecisionRecord, ModelPrice, Usage
from durable_agent.testing import answer, tool_use
from tests.conftest import Harness, make_config

SONNET = ModelPrice(input=3.0, output=15.0)


class TestPrices:
    """The price table: exact names, dated ids by prefix, configured overrides."""

    @pytest.mark.parametrize(
        ("model", "expected"),
        [
            ("claude-sonnet-5-5", (2.0, 10.0)),
            ("claude-opus-5-5", (4.0, 20.0)),
            ("claude-sonnet-4-6", (3.0, 15.0)),
            ("claude-sonnet-4-5", (3.0, 15.0)),
            ("claude-sonnet-4-5-20250929", (3.0, 15.0)),  # dated id -> its family
            ("claude-opus-4-1-20250805", (15.0, 75.0)),  # longest prefix wins over claude-opus-4
            ("claude-opus-4-5-20251101", (5.0, 25.0)),
            ("claude-haiku-4-5", (1.0, 5.0)),
            ("offline", (0.0, 0.0)),
        ],
    )
    def test_defaults_and_prefix_match(self, model: str, expected: tuple[float, float]) -> None:
        price = pricing.find_price(model, pricing.DEFAULT_PRICES)
        assert price is not None and (price.input, price.output) == expected

    @pytest.mark.parametrize("model", ["gpt-4o", "claude", "sonnet-4-5", ""])
    def test_unknown_models_have_no_price(self, model: str) -> None:
        assert pricing.find_price(model, pricing.DEFAULT_PRICES) is None

    def test_configured_prices_extend_and_override_the_defaults(self) -> None:
        config = AgentsConfig.model_validate(
            {
                "agents": {"a": {}},
                "pricing": {"models": {"claude-sonnet-4-5": {"input": 2.0, "output": 10.0}, "my-model": {"input": 1.0, "output": 2.0}}},
            }
        )
        prices = config.prices()
        assert prices["claude-sonnet-4-5"].input == 2.0
        assert pricing.find_price("my-model-v2", prices) == ModelPrice(input=1.0, output=2.0)
        assert pricing.find_price("claude-haiku-4-5", prices) == pricing.DEFAULT_PRICES["claude-haiku-4-5"]
        assert config.pricing.fallback == pricing.DEFAULT_FALLBACK_PRICE


class TestCost:
    """What one call costs, cache writes and reads included."""

    @pytest.mark.parametrize(
        ("usage", "price", "expected"),
        [
            (Usage(input_tokens=1_000_000), SONNET, 3.0),
            (Usage(output_tokens=1_000_000), SONNET, 15.0),
            (Usage(input_tokens=1000, output_tokens=100), SONNET, (1000 * 3 + 100 * 15) / 1e6),
            # Cache writes cost 1.25 x input, reads 0.1 x input, by default.
            (Usage(cache_creation_input_tokens=1_000_000), SONNET, 3.75),
            (Usage(cache_read_input_tokens=1_000_000), SONNET, 0.30),
            # Configured cache prices replace the factors.
            (Usage(cache_creation_input_tokens=1_000_000), ModelPrice(input=3, output=15, cache_write=6.0), 6.0),
            (Usage(cache_read_input_tokens=1_000_000), ModelPrice(input=3, output=15, cache_read=0.0), 0.0),
            (
                Usage(input_tokens=120, output_tokens=33, cache_creation_input_tokens=900, cache_read_input_tokens=4000),
                SONNET,
                (120 * 3 + 33 * 15 + 900 * 3.75 + 4000 * 0.3) / 1e6,
            ),
            (Usage(input_tokens=5000, output_tokens=500), pricing.DEFAULT_PRICES["offline"], 0.0),
        ],
    )
    def test_cost_usd(self, usage: Usage, price: ModelPrice, expected: float) -> None:
        assert pricing.cost_usd(usage, price) == pytest.approx(expected)

    def test_a_cached_resend_costs_less_than_a_fresh_one(self) -> None:
        fresh = pricing.cost_usd(Usage(input_tokens=50_000, output_tokens=200), SONNET)
        cached = pricing.cost_usd(Usage(input_tokens=500, cache_read_input_tokens=49_500, output_tokens=200), SONNET)
        assert cached < fresh / 3


class TestEstimates:
    """The estimate before a call errs high, so a budget is never overrun by the call it admits."""

    def test_first_call_counts_the_new_text_and_the_whole_output_allowance(self) -> None:
        estimate = pricing.estimate_call_usd(SONNET, previous=None, new_input_chars=400, max_tokens=1000)
        assert estimate == pytest.approx((101 * 3 + 1000 * 15) / 1e6)

    def test_later_calls_resend_everything_at_the_full_input_price(self) -> None:
        previous = Usage(input_tokens=100, output_tokens=50, cache_creation_input_tokens=2000, cache_read_input_tokens=3000)
        estimate = pricing.estimate_call_usd(SONNET, previous=previous, new_input_chars=40, max_tokens=200)
        assert estimate == pytest.approx(((5150 + 11) * 3 + 200 * 15) / 1e6)

    @pytest.mark.parametrize("cache_read", [0, 3000])
    def test_the_estimate_covers_the_actual_call(self, cache_read: int) -> None:
        previous = Usage(input_tokens=3000 - cache_read, output_tokens=300, cache_read_input_tokens=cache_read)
        estimate = pricing.estimate_call_usd(SONNET, previous=previous, new_input_chars=800, max_tokens=500)
        actual = Usage(input_tokens=3500 - cache_read, output_tokens=500, cache_read_input_tokens=cache_read)
        assert pricing.cost_usd(actual, SONNET) <= estimate

    def test_free_models_estimate_zero(self) -> None:
        assert pricing.estimate_call_usd(pricing.DEFAULT_PRICES["offline"], previous=None, new_input_chars=10_000, max_tokens=4000) == 0.0


class TestCacheBreakpoints:
    """Requests mark the stable prefix (system, tools, conversation so far) for prompt caching."""

    EPHEMERAL = {"type": "ephemeral"}

    def _parts(self) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
        tools = [{"name": "a", "input_schema": {}}, {"name": "b", "input_schema": {}}]
        messages = [
            {"role": "user", "content": "refund my order"},
            {"role": "assistant", "content": [{"type": "text", "text": "looking"}, {"type": "tool_use", "id": "t1", "name": "a", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "found"}]},
        ]
        return "You are helpful.", tools, messages

    def test_system_and_last_block_are_marked(self) -> None:
        system, tools, messages = self._parts()
        parts = with_cache_breakpoints(system, tools, messages)
        assert parts["system"] == [{"type": "text", "text": "You are helpful.", "cache_control": self.EPHEMERAL}]
        # The tools come before the system prompt: its breakpoint caches them too.
        assert [t.get("cache_control") for t in parts["tools"]] == [None, None]
        assert parts["messages"][-1]["content"][-1]["cache_control"] == self.EPHEMERAL
        marked = [b for m in parts["messages"] for b in m["content"] if isinstance(b, dict) and "cache_control" in b]
        assert len(marked) == 1  # two breakpoints; compaction boundaries may take the other two

    def test_without_a_system_prompt_the_last_tool_is_marked(self) -> None:
        _, tools, messages = self._parts()
        parts = with_cache_breakpoints("", tools, messages)
        assert [t.get("cache_control") for t in parts["tools"]] == [None, self.EPHEMERAL]

    def test_inputs_are_not_changed(self) -> None:
        system, tools, messages = self._parts()
        before = copy.deepcopy((tools, messages))
        with_cache_breakpoints(system, tools, messages)
        assert (tools, messages) == before

    def test_a_plain_text_last_message_becomes_a_marked_block(self) -> None:
        parts = with_cache_breakpoints("s", [], [{"role": "user", "content": "hello"}])
        assert parts["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello", "cache_control": self.EPHEMERAL}]}]
        assert parts["tools"] == []

    def test_nothing_to_mark(self) -> None:
        assert with_cache_breakpoints("", [], []) == {"system": [], "tools": [], "messages": []}


class TestCostThroughARun:
    """On a real server: the result's total is the sum of the steps' costs, whatever the price."""

    async def test_total_cost_is_the_sum_of_the_step_costs(self, harness: Harness) -> None:
        usage = Usage(input_tokens=700, output_tokens=90, cache_creation_input_tokens=1200, cache_read_input_tokens=5000)
        model, _ = harness.scripted(
            [tool_use("echo", {"text": "a"}), tool_use("echo", {"text": "b"}), answer("done")], usage=usage
        )
        config = make_config(
            {"helper": {"tools": ["echo"], "model": model}},
            pricing={"models": {model: {"input": 3.0, "output": 15.0, "cache_read": 0.25}}},
        )
        async with harness.worker(config):
            handle = await harness.start({"task": "say a then b", "budget_usd": 1.0})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        per_call = (700 * 3 + 90 * 15 + 1200 * 3.75 + 5000 * 0.25) / 1e6
        assert result.status == "success" and len(records) == 3
        assert [r.cost.estimated_cost for r in records] == pytest.approx([per_call] * 3)
        assert result.total_cost == pytest.approx(sum(r.cost.estimated_cost for r in records), abs=1e-6)
        assert result.usage.cache_read_input_tokens == 15_000
        # Budget left shows in each record and in the result.
        assert [r.cost.budget_remaining for r in records] == pytest.approx([1.0 - per_call * k for k in (1, 2, 3)])
        assert result.budget_remaining == pytest.approx(1.0 - 3 * per_call)

    async def test_an_unknown_model_warns_and_uses_the_fallback_price(self, harness: Harness) -> None:
        model, _ = harness.scripted([tool_use("echo", {"text": "x"}), answer("done")])
        config = make_config({"helper": {"tools": ["echo"], "model": model}}, pricing={"fallback": {"input": 10.0, "output": 50.0}})
        async with harness.worker(config):
            result = await harness.run({"task": "echo x"})
        assert result.status == "success"
        assert any(w.startswith("UNKNOWN_MODEL_PRICE") and model in w for w in result.warnings)
        assert result.total_cost == pytest.approx(2 * (1000 * 10.0 + 100 * 50.0) / 1e6)


class TestDefaultModel:
    """The model a newcomer with a key gets is current and priced."""

    def test_default_model_is_not_deprecated_by_the_sdk(self) -> None:
        from anthropic._data import DEPRECATED_MODELS

        from durable_agent.profiles import DEFAULT_CLAUDE_MODEL

        assert DEFAULT_CLAUDE_MODEL not in DEPRECATED_MODELS, (
            f"{DEFAULT_CLAUDE_MODEL} reaches end of life on {DEPRECATED_MODELS.get(DEFAULT_CLAUDE_MODEL)}; move the default on"
        )

    def test_default_model_has_a_price(self) -> None:
        from durable_agent.profiles import DEFAULT_CLAUDE_MODEL

        assert pricing.find_price(DEFAULT_CLAUDE_MODEL, pricing.DEFAULT_PRICES) is not None


class TestHonestEstimates:
    """The next call's estimate follows what will really be sent, and how the cache will bill it."""

    HAIKU = pricing.DEFAULT_PRICES["claude-haiku-4-5"]

    def test_first_call_counts_the_system_prompt_and_tools(self) -> None:
        bare = pricing.estimate_next_call_usd(self.HAIKU, prompt_tokens=0, new_input_chars=300, max_tokens=0)
        with_prompt = pricing.estimate_next_call_usd(self.HAIKU, prompt_tokens=2000, new_input_chars=300, max_tokens=0)
        assert with_prompt - bare == pytest.approx(2000 * 1.25 / 1e6)

    def test_warm_cache_reads_cold_cache_writes_again(self) -> None:
        args = {"prompt_tokens": 100_000, "new_input_chars": 0, "max_tokens": 0, "cached_tokens": 100_000}
        warm = pricing.estimate_next_call_usd(self.HAIKU, cache_warm=True, **args)
        cold = pricing.estimate_next_call_usd(self.HAIKU, cache_warm=False, **args)
        assert warm == pytest.approx((100_000 * 0.1 + 1 * 1.25) / 1e6)
        assert cold == pytest.approx(100_001 * 1.25 / 1e6)  # after expiry the whole prompt is a cache write

    def test_capped_at_what_compaction_lets_through(self) -> None:
        capped = pricing.estimate_next_call_usd(self.HAIKU, prompt_tokens=500_000, new_input_chars=0, max_tokens=0, prompt_limit=30_000)
        assert capped == pytest.approx(30_000 * 1.25 / 1e6)

    def test_cache_writes_priced_by_lifetime(self) -> None:
        assert pricing.cache_write_price(self.HAIKU, "5m") == pytest.approx(1.25)
        assert pricing.cache_write_price(self.HAIKU, "1h") == pytest.approx(2.0)

    @pytest.mark.parametrize(
        ("model", "warned"),
        [("claude-haiku-4-5", False), ("claude-sonnet-4-5-20250929", False), ("claude-opus-4-9", True), ("gpt-x", False)],
    )
    def test_family_prefix_price_warns(self, model: str, warned: bool) -> None:
        warnings = pricing.price_warnings(model, pricing.DEFAULT_PRICES)
        assert bool(warnings) is warned
        if warned:
            assert "PRICE_BY_FAMILY" in warnings[0] and "claude-opus-4'" in warnings[0]
