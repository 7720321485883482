"""The core package, without Temporal: tools, profiles, content store, anomalies, offline model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from durable_agent import anomalies
from durable_agent.errors import ConfigError, InvalidToolArguments, ToolDefinitionError
from durable_agent.models import ModelRequest, OfflineModel
from durable_agent.profiles import DEFAULT_CLAUDE_MODEL, load_config
from durable_agent.schemas import AnomalyThresholds, Autonomy
from durable_agent.store import ContentStore
from durable_agent.tools import ToolContext, ToolRegistry, parse_rate_limit, registry, tool, tool_context


def _ctx(key: str = "k1") -> ToolContext:
    return ToolContext(idempotency_key=key, session_id="s", agent="a", step=1, attempt=1)


class TestToolDecorator:
    """@tool builds the schema, description and metadata the model and the policies read."""

    def test_schema_description_and_metadata(self) -> None:
        @tool(name="t_refund", risk="medium", amount_arg="amount", currency_arg="currency", rate_limit="5/min")
        def refund(order_id: str, amount: float, currency: str = "USD", note: str | None = None) -> dict:
            """Refund an order.

            Longer text the model also reads.
            """
            return {}

        info = registry.get("t_refund").info
        assert info.description.startswith("Refund an order.") and "Longer text" in info.description
        schema = info.input_schema
        assert schema["required"] == ["order_id", "amount"]
        assert schema["properties"]["amount"]["type"] == "number"
        assert schema["properties"]["currency"]["default"] == "USD"
        assert schema["additionalProperties"] is False
        assert (info.risk, info.amount_arg, info.currency_arg, info.rate_limit) == ("medium", "amount", "currency", "5/min")
        assert info.read_only is False and info.destructive is False

    def test_destructive_defaults_to_high_risk(self) -> None:
        @tool(name="t_wipe", destructive=True)
        def wipe(target: str) -> None:
            """Wipe."""

        assert registry.get("t_wipe").info.risk == "high"

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"read_only": True, "destructive": True}, "both read_only and destructive"),
            ({"rate_limit": "lots"}, "not of the form"),
            ({"retry": "forever"}, "unknown retry policy 'forever'"),
            ({"amount_arg": "price"}, "'price' is not one of its arguments"),
            ({"risk": "extreme"}, "risk must be low, medium or high"),
            ({"timeout": 0}, "timeout must be a positive finite number"),
            ({"timeout": float("inf")}, "timeout must be a positive finite number"),
            ({"heartbeat": float("nan")}, "heartbeat must be a positive finite number"),
            ({"name": "has space"}, "must match"),
        ],
    )
    def test_bad_metadata_is_refused(self, kwargs: dict, message: str) -> None:
        with pytest.raises(ToolDefinitionError, match=message):

            @tool(**{"name": "t_bad", **kwargs})
            def bad(amount: float) -> None:
                """Bad."""

    def test_varargs_are_refused(self) -> None:
        with pytest.raises(ToolDefinitionError, match=r"\*args and \*\*kwargs"):

            @tool(name="t_varargs")
            def bad(*items: str) -> None:
                """Bad."""

    def test_a_name_is_taken_once(self) -> None:
        local = ToolRegistry()
        from durable_agent.tools import Tool

        @tool(name="t_once")
        def first(x: str) -> None:
            """First."""

        item = registry.get("t_once")
        local.register(item)

        def second(x: str) -> None:
            """Second."""

        with pytest.raises(ToolDefinitionError, match="already taken"):
            local.register(Tool(fn=second, info=item.info, args_model=item.args_model))

    async def test_arguments_are_validated_and_context_reaches_sync_tools(self) -> None:
        seen: list[str] = []

        @tool(name="t_sync")
        def sync_tool(count: int, label: str = "x") -> str:
            """Sync."""
            seen.append(tool_context().idempotency_key)
            return label * count

        item = registry.get("t_sync")
        assert await item.invoke({"count": "3"}, _ctx("key-42")) == "xxx"  # "3" coerced, as pydantic does
        assert seen == ["key-42"]
        with pytest.raises(InvalidToolArguments, match="count: Input should be a valid integer"):
            await item.invoke({"count": "many"}, _ctx())
        with pytest.raises(InvalidToolArguments, match="colour: Extra inputs are not permitted"):
            await item.invoke({"count": 1, "colour": "red"}, _ctx())
        with pytest.raises(InvalidToolArguments, match="count: Field required"):
            await item.invoke({}, _ctx())

    def test_tool_context_outside_a_call_is_an_error(self) -> None:
        with pytest.raises(RuntimeError, match="only available while a tool runs"):
            tool_context()

    @pytest.mark.parametrize(
        ("spec", "expected"),
        [("10/min", (10, 60.0)), ("2/s", (2, 1.0)), ("100 / hour", (100, 3600.0)), ("5/day", (5, 86400.0))],
    )
    def test_rate_limit_parsing(self, spec: str, expected: tuple[int, float]) -> None:
        assert parse_rate_limit(spec) == expected

    @pytest.mark.parametrize("spec", ["0/min", "ten/min", "5/fortnight", "5"])
    def test_bad_rate_limits(self, spec: str) -> None:
        with pytest.raises(ValueError):
            parse_rate_limit(spec)


class TestProfiles:
    """agents.toml is validated at start; every error names the file and the key."""

    def _load(self, tmp_path: Path, text: str):
        path = tmp_path / "agents.toml"
        path.write_text(text)
        return path, lambda: load_config(path)

    def test_the_shipped_file_loads(self) -> None:
        config = load_config(Path(__file__).parent.parent / "agents.toml")
        support = config.agents["support"]
        assert config.default_agent == "support"
        assert support.autonomy is Autonomy.SUPERVISED
        assert support.approval.max_amount == 1000.0
        assert support.tools == ["lookup_order", "search_kb", "issue_refund", "cancel_order"]

    @pytest.mark.parametrize(
        ("text", "key", "message"),
        [
            ('[agents.a]\ntools = ["nope"]\n', "agents.a.tools[0]", "no tool named 'nope'"),
            ('[agents.a]\nautonomy = "yolo"\n', "agents.a.autonomy", "Input should be"),
            ('[agents.a]\ncolour = "red"\n', "agents.a.colour", "unknown key; the keys here are: description, model, system_prompt"),
            # Typos are answered with the key meant (issue 23).
            ("[agents.a]\n[agents.a.approval]\nmax_ammount = 10\n", "agents.a.approval.max_ammount", "unknown key; did you mean 'max_amount'?"),
            ("[agents.a]\n[agents.a.aproval]\nmax_amount = 10\n", "agents.a.aproval", "unknown key; did you mean 'approval'?"),
            ("tool_module = []\n[agents.a]\n", "tool_module", "unknown key; did you mean 'tool_modules'?"),
            ("[agents.a]\n[agents.a.anomalies]\nStep_Tokens = 10\n", "agents.a.anomalies.Step_Tokens", "did you mean 'step_tokens'?"),
            # Numbers in quotes are refused, naming the key (pydantic would read "1.00" as 1.0).
            ('[agents.a]\nbudget_usd = "1.00"\n', "agents.a.budget_usd", 'must be a number, not the string "1.00": write budget_usd = 1.00 (no quotes)'),
            ("[agents.a]\n[agents.a.approval]\nmax_amount = true\n", "agents.a.approval.max_amount", "must be a number, not true"),
            ('[agents.a]\n[agents.a.approval]\ntimeout_seconds = "300"\n', "agents.a.approval.timeout_seconds", "write timeout_seconds = 300"),
            ('[pricing.models."m"]\ninput = "2"\noutput = 10\n[agents.a]\n', "pricing.models.m.input", 'not the string "2"'),
            ('[agents.a]\nmax_tokens = "lots"\n', "agents.a.max_tokens", "valid integer"),
            ('[agents.a]\n[agents.a.approval]\ntimeout_seconds = -1\n', "agents.a.approval.timeout_seconds", "greater than 0"),
            ('[defaults]\nagent = "b"\n[agents.a]\n', "(top level)", "defaults.agent names 'b'"),
            ('[agents.a]\ntools = ["lookup_order"]\n[agents.a.rate_limits]\nsearch_kb = "1/s"\n', "agents.a.rate_limits.search_kb", "not one of this agent's tools"),
            ('[agents.a]\n[agents.a.rate_limits]\nx = "often"\n', "agents.a.rate_limits", "not of the form"),
            ("agents = 3\n", "agents", "valid dictionary"),
            ("[agents\n", "(syntax)", ""),
            ('tool_modules = ["no.such.module"]\n[agents.a]\n', "tool_modules[0]", "cannot import module 'no.such.module'"),
        ],
    )
    def test_errors_name_file_and_key(self, tmp_path: Path, text: str, key: str, message: str) -> None:
        path, load = self._load(tmp_path, 'tool_modules = ["durable_agent.demo.shop"]\n' + text if "tool_modules" not in text else text)
        with pytest.raises(ConfigError) as info:
            load()
        assert info.value.file == str(path)
        assert info.value.key == key
        assert message in info.value.message
        assert str(info.value).startswith(f"{path}: {key}: ")

    @pytest.mark.parametrize(
        ("typed", "meant"), [("max_ammount = 1000.0", "max_amount = 1000.0"), ('budget_usd = "1.00"', "budget_usd = 1.00")]
    )
    def test_the_readme_shows_what_a_typo_in_the_shipped_file_gives(self, tmp_path: Path, typed: str, meant: str) -> None:
        shipped = (Path(__file__).parent.parent / "agents.toml").read_text()
        assert meant in shipped
        path, load = self._load(tmp_path, shipped.replace(meant, typed))
        with pytest.raises(ConfigError) as info:
            load()
        readme = (Path(__file__).parent.parent / "README.md").read_text()
        assert f"worker: configuration error: {str(info.value).replace(str(path), 'agents.toml')}\n" in readme

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not found"):
            load_config(tmp_path / "absent.toml")

    def test_model_resolution(self, tmp_path: Path) -> None:
        _, load = self._load(tmp_path, '[agents.a]\n[agents.b]\nmodel = "claude-haiku-4-5"\n')
        config = load()
        a, b = config.agents["a"], config.agents["b"]
        assert config.resolve_model(a, None, {}) == "offline"
        assert config.resolve_model(a, None, {"ANTHROPIC_API_KEY": "k"}) == DEFAULT_CLAUDE_MODEL
        assert config.resolve_model(b, None, {}) == "claude-haiku-4-5"
        assert config.resolve_model(b, "offline", {"ANTHROPIC_API_KEY": "k"}) == "offline"


class TestContentStore:
    """Content is addressed by its hash; conversations are chains any worker can read."""

    async def test_put_is_idempotent_and_get_round_trips(self, tmp_path: Path) -> None:
        store = ContentStore(tmp_path)
        ref = await store.put({"b": 1, "a": [1, 2]})
        assert ref == await store.put({"a": [1, 2], "b": 1})
        assert await store.get(ref) == {"a": [1, 2], "b": 1}
        with pytest.raises(KeyError, match="not in the store"):
            await store.get("sha256:" + "0" * 64)
        with pytest.raises(KeyError, match="not a content reference"):
            await store.get("../../etc/passwd")

    async def test_a_chain_reads_back_in_order_from_a_fresh_store(self, tmp_path: Path) -> None:
        writer = ContentStore(tmp_path)
        head = None
        for i in range(5):
            head = await writer.append(head, {"role": "user", "content": f"m{i}"})
        reader = ContentStore(tmp_path)  # another worker: nothing cached
        assert [m["content"] for m in await reader.messages(head)] == [f"m{i}" for i in range(5)]
        # A branch from the middle leaves the original intact.
        middle = await writer.append(None, {"role": "user", "content": "m0"})
        assert await writer.messages(middle) == [{"role": "user", "content": "m0"}]
        assert len(await writer.messages(head)) == 5

    async def test_retried_appends_give_the_same_head(self, tmp_path: Path) -> None:
        store = ContentStore(tmp_path)
        first = await store.append(None, {"role": "user", "content": "task"})
        again = await store.append(first, {"role": "assistant", "content": "x"})
        assert again == await store.append(first, {"role": "assistant", "content": "x"})


class TestAnomalies:
    """The anomaly rules, table-driven."""

    @pytest.mark.parametrize(
        ("actions", "cost", "tokens", "expected"),
        [
            (["a{}", "a{}", "a{}"], 0.0, 10, ["POSSIBLE_LOOP"]),
            (["a{}", "b{}", "a{}"], 0.0, 10, []),
            (["a{}", "a{}"], 0.0, 10, []),
            ([], 0.9, 10, ["HIGH_COST"]),
            ([], 0.0, 90_000, ["HIGH_TOKEN_USAGE"]),
            (["a{}"] * 3, 1.0, 60_000, ["POSSIBLE_LOOP", "HIGH_COST", "HIGH_TOKEN_USAGE"]),
        ],
    )
    def test_detect(self, actions: list[str], cost: float, tokens: int, expected: list[str]) -> None:
        found = anomalies.detect(actions, step_cost=cost, step_tokens=tokens, thresholds=AnomalyThresholds(step_cost_usd=0.5))
        assert [a.kind for a in found] == expected

    def test_signature_ignores_argument_order(self) -> None:
        assert anomalies.action_signature("t", {"a": 1, "b": 2}) == anomalies.action_signature("t", {"b": 2, "a": 1})


class TestOfflineModel:
    """The offline playbook reacts to what the tools returned."""

    TOOLS = [{"name": n, "description": "", "input_schema": {}} for n in ("lookup_order", "search_kb", "issue_refund", "cancel_order")]

    def _step(self, messages: list[dict]) -> list[dict]:
        response = asyncio.run(OfflineModel().complete(ModelRequest("offline", "sys", self.TOOLS, messages, 100)))
        return response.content

    def _reply(self, messages: list[dict], content: list[dict], result: str, is_error: bool = False) -> None:
        messages.append({"role": "assistant", "content": content})
        call = next(b for b in content if b["type"] == "tool_use")
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": result, "is_error": is_error}]})

    def test_refund_playbook_and_rejection(self) -> None:
        messages = [{"role": "user", "content": [{"type": "text", "text": "Please refund order ORD-789"}]}]
        first = self._step(messages)
        assert first[1]["name"] == "lookup_order" and first[1]["input"] == {"order_id": "ord-789"}
        assert "offline model" in first[0]["text"]
        self._reply(messages, first, '{"total": 4999.0, "currency": "USD", "refunded": 0}')
        second = self._step(messages)
        assert second[1]["name"] == "search_kb"
        self._reply(messages, second, "[]")
        third = self._step(messages)
        assert third[1]["name"] == "issue_refund"
        assert third[1]["input"] == {"order_id": "ord-789", "amount": 4999.0, "currency": "USD"}
        self._reply(messages, third, "REJECTED by alice: too much. The action was not executed.", is_error=True)
        final = self._step(messages)
        assert len(final) == 1
        assert "Not done: the refund of 4999 USD on order ord-789 did not go through: REJECTED by alice" in final[0]["text"]

    def test_unknown_order_ends_the_run(self) -> None:
        messages = [{"role": "user", "content": [{"type": "text", "text": "Cancel ord-000"}]}]
        first = self._step(messages)
        self._reply(messages, first, "order ord-000 does not exist", is_error=True)
        final = self._step(messages)
        assert len(final) == 1 and "could not look up order ord-000" in final[0]["text"]

    def test_explicit_amount_wins(self) -> None:
        messages = [{"role": "user", "content": [{"type": "text", "text": "Refund $20 on ord-789"}]}]
        for result in ('{"total": 4999.0, "currency": "USD"}', "[]"):
            self._reply(messages, self._step(messages), result)
        assert self._step(messages)[1]["input"]["amount"] == 20.0
