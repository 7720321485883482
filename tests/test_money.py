"""Money limits as pure functions, their configuration, and the component that feeds them a run's state (no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durable_agent import money
from durable_agent.errors import ConfigError
from durable_agent.policy import evaluate
from durable_agent.profiles import load_config, money_limit_warnings
from durable_agent.schemas import ApprovalPolicy, Autonomy, ToolInfo
from durable_agent.workflows.money_limits import PATCH_MONEY_LIMITS, PATCH_OMITTED_AMOUNT_HOLDS, MoneyLimits
from tests.component_kit import settings
from tests.workflow_host import FakeHost

ROOT = Path(__file__).parent.parent
REFUND = ToolInfo(name="issue_refund", risk="medium", amount_arg="amount", currency_arg="currency", currency_default="USD")
PAY = ToolInfo(name="pay", amount_arg="amount", currency_arg="currency")  # no default: the tool decides
WIRE = ToolInfo(name="wire", amount_arg="amount")  # takes no currency: the profile's
SUPPORT = ApprovalPolicy(max_amount=1000.0, rates={"EUR": 1.08, "JPY": 0.0067})


def usd(amount: Any, currency: Any = "USD") -> dict[str, Any]:
    return {"order_id": "ord-789", "amount": amount, "currency": currency}


class TestCheck:
    """What one call may move, given what the run has moved without a person."""

    @pytest.mark.parametrize(
        ("tool", "args", "policy", "moved", "value", "hold"),
        [
            # Within both limits; the limit itself is within.
            (REFUND, usd(20), SUPPORT, 0, 20, None),
            (REFUND, usd(1000), SUPPORT, 0, 1000, None),
            (REFUND, usd(500), SUPPORT, 500, 500, None),
            # One call over max_amount: the words the README and the inbox show.
            (REFUND, usd(4999), SUPPORT, 0, 4999, "amount 4999 USD is above the limit of 1000"),
            # The run's total: the second part of 2 x 900 waits, and so does 999.98 after 999.99.
            (REFUND, usd(900), SUPPORT, 900, 900,
             "amount 900 USD would take what this run has moved without approval from 900 to 1800 USD, above the run's limit "
             "of 1000 USD (approval.max_amount_per_run)"),
            (REFUND, usd(999.98), SUPPORT, 999.99, 999.98, "from 999.99 to 1999.97 USD"),
            (REFUND, usd(0.01), SUPPORT, 999.99, 0.01, None),  # exactly the limit: no rounding holds it
            # Currencies: valued through the rates, case aside; no rate, or no currency code, waits.
            (REFUND, usd(900_000, "JPY"), SUPPORT, 0, 6030, "amount 900000 JPY (6030 USD) is above the limit of 1000 USD"),
            (REFUND, usd(100_000, "jpy"), SUPPORT, 0, 670, None),
            (REFUND, usd(900, "EUR"), SUPPORT, 100, 972, "from 100 to 1072 USD"),
            (REFUND, usd(999, "BTC"), SUPPORT, 0, None,
             "the amount 999 BTC cannot be compared with the limit of 1000 USD: this profile has no rate for BTC "
             "(approval.rates has: EUR, JPY)"),
            (REFUND, usd(1, 5), SUPPORT, 0, None, "the currency 5 is not a currency code"),
            # A currency left out: the tool's default; none, and the tool takes one: it cannot be told.
            (REFUND, {"amount": 4999}, SUPPORT, 0, 4999, "amount 4999 USD is above the limit"),
            (PAY, {"amount": 5}, SUPPORT, 0, None, "no currency is given"),
            (WIRE, {"amount": 5}, SUPPORT, 0, 5, None),
            # The size counts: -500 moves 500.
            (REFUND, usd(-900), SUPPORT, 900, 900, "from 900 to 1800 USD"),
            # Not a number: waits (money fails closed).
            (REFUND, usd("lots"), SUPPORT, 0, None, "the amount 'lots' is not a number"),
            (REFUND, usd(float("inf")), SUPPORT, 0, None, "is not a number"),
            (REFUND, usd(True), SUPPORT, 0, None, "is not a number"),
            (REFUND, usd(1.7e308, "EUR"), SUPPORT, 0, float("inf"), "above the limit"),  # overflows to inf: waits
            # No limit at all: every amount waits.
            (REFUND, usd(1), ApprovalPolicy(), 0, None, "issue_refund moves money and this profile sets no limit (approval.max_amount)"),
            # A per-run limit of its own: above max_amount, parts add up to it; zero holds every amount.
            (REFUND, usd(900), ApprovalPolicy(max_amount=1000, max_amount_per_run=5000), 3600, 900, None),
            (REFUND, usd(900), ApprovalPolicy(max_amount=1000, max_amount_per_run=5000), 4500, 900, "above the run's limit of 5000 USD"),
            (REFUND, usd(1), ApprovalPolicy(max_amount=1000, max_amount_per_run=0), 0, 1, "above the run's limit of 0 USD"),
            # Only a per-run limit: it bounds each call too.
            (REFUND, usd(1200), ApprovalPolicy(max_amount_per_run=1000), 0, 1200, "above the limit of 1000"),
            # A profile in euros.
            (REFUND, usd(1050, "USD"), ApprovalPolicy(max_amount=1000, currency="EUR", rates={"USD": 0.93}), 0, 976.5, None),
        ],
    )
    def test_verdicts(self, tool: ToolInfo, args: dict[str, Any], policy: ApprovalPolicy, moved: float, value: float | None,
                      hold: str | None) -> None:
        found = money.check(tool, args, policy, moved)
        assert found is not None
        assert found.value == pytest.approx(value) if value is not None else found.value is None
        if hold is None:
            assert found.hold is None
        else:
            assert found.hold is not None and hold in found.hold, found.hold

    @pytest.mark.parametrize("args", [{}, {"order_id": "ord-789"}])
    def test_a_call_without_an_amount_waits(self, args: dict[str, Any]) -> None:
        """What it moves is then the tool's to decide (a whole order): no limit can be checked."""
        found = money.check(REFUND, args, SUPPORT, 0)
        assert found is not None and found.value is None
        assert found.hold == (
            "issue_refund moves money and the call gives no amount (amount), so what it moves is the tool's "
            "to decide and cannot be checked against a limit"
        )
        # Runs begun before it waited replay with their rule: such a call moved nothing.
        assert money.check(REFUND, args, SUPPORT, 0, hold_omitted=False) is None

    def test_a_tool_that_names_no_amount_moves_nothing(self) -> None:
        assert money.check(ToolInfo(name="lookup_order", read_only=True), usd(5), SUPPORT, 0) is None

    def test_moved_by_counts_the_value_in_the_profile_currency(self) -> None:
        assert money.moved_by(REFUND, usd(100_000, "JPY"), SUPPORT) == pytest.approx(670)
        assert money.moved_by(REFUND, usd(-20), SUPPORT) == 20
        assert money.moved_by(REFUND, usd("x"), SUPPORT) == 0
        # Let through by the rules of runs begun before money limits, with no rate: its bare size, the nearest there is.
        assert money.moved_by(REFUND, usd(999, "BTC"), SUPPORT) == 999


class TestEvaluate:
    """The policy asks the money rules when given the run's total, and the rules of older runs otherwise."""

    def test_split_parts_wait_only_with_the_run_total(self) -> None:
        assert evaluate(REFUND, usd(900), Autonomy.SUPERVISED, SUPPORT).verdict == "allow"  # before money limits
        decision = evaluate(REFUND, usd(900), Autonomy.SUPERVISED, SUPPORT, run_total=900)
        assert (decision.verdict, decision.risk) == ("needs_approval", "medium")

    def test_no_limit_waits_only_with_money_limits(self) -> None:
        assert evaluate(REFUND, usd(10**9), Autonomy.SUPERVISED, ApprovalPolicy()).verdict == "allow"
        assert evaluate(REFUND, usd(1), Autonomy.SUPERVISED, ApprovalPolicy(), run_total=0).verdict == "needs_approval"

    def test_a_low_risk_tool_that_waits_for_money_is_shown_as_high_risk(self) -> None:
        assert evaluate(WIRE, {"amount": 5000}, Autonomy.SUPERVISED, SUPPORT, run_total=0).risk == "high"

    @pytest.mark.parametrize(("autonomy", "verdict"), [(Autonomy.AUTONOMOUS, "allow"), (Autonomy.READ_ONLY, "refuse")])
    def test_other_autonomy_levels_ask_nobody(self, autonomy: Autonomy, verdict: str) -> None:
        assert evaluate(REFUND, usd(999, "BTC"), autonomy, ApprovalPolicy(), run_total=5000).verdict == verdict


class TestCurrencyDefaults:
    """A tool's currency argument and its default, read from its schema when a run's profile is resolved."""

    SCHEMA = {"properties": {"amount": {"type": "number"}, "currency": {"type": "string", "default": "usd"}}}

    def test_an_argument_named_currency_is_the_currency(self) -> None:
        info = money.with_currency_defaults(ToolInfo(name="refund", amount_arg="amount", input_schema=self.SCHEMA))
        assert (info.currency_arg, info.currency_default) == ("currency", "USD")

    def test_a_named_currency_argument_and_its_default(self) -> None:
        schema = {"properties": {"sum": {"type": "number"}, "ccy": {"type": "string", "default": "EUR"}}}
        info = money.with_currency_defaults(ToolInfo(name="t", amount_arg="sum", currency_arg="ccy", input_schema=schema))
        assert (info.currency_arg, info.currency_default) == ("ccy", "EUR")

    def test_tools_without_money_or_a_currency_are_left_as_they_are(self) -> None:
        plain = ToolInfo(name="lookup", input_schema=self.SCHEMA)
        assert money.with_currency_defaults(plain) is plain
        no_currency = ToolInfo(name="wire", amount_arg="amount", input_schema={"properties": {"amount": {}}})
        assert money.with_currency_defaults(no_currency) is no_currency

    def test_the_demo_refund_tool_gets_usd(self) -> None:
        from durable_agent.tools import registry

        load_config(ROOT / "agents.toml")
        tool = registry.get("issue_refund")
        assert tool is not None
        assert money.with_currency_defaults(tool.info).currency_default == "USD"


def _load(tmp_path: Path, approval: str, tools: str = '["issue_refund"]') -> Any:
    path = tmp_path / "agents.toml"
    path.write_text(f'tool_modules = ["durable_agent.demo.shop"]\n[agents.a]\ntools = {tools}\n[agents.a.approval]\n{approval}\n')
    return load_config(path)


class TestConfiguration:
    """The keys are checked when the worker starts: the key meant for a typo, numbers as numbers, codes as codes."""

    def test_the_keys_load(self, tmp_path: Path) -> None:
        config = _load(tmp_path, 'max_amount = 1000\nmax_amount_per_run = 2500\ncurrency = "eur"\nrates = { usd = 0.93, JPY = 0.0062 }')
        approval = config.agents["a"].approval
        assert (approval.max_amount_per_run, approval.currency, approval.rates) == (2500, "EUR", {"USD": 0.93, "JPY": 0.0062})

    @pytest.mark.parametrize(
        ("text", "key", "message"),
        [
            ("max_amount_per_ru = 10", "agents.a.approval.max_amount_per_ru", "unknown key; did you mean 'max_amount_per_run'?"),
            ("rate = { JPY = 0.0067 }", "agents.a.approval.rate", "did you mean 'rates'?"),
            ('rates = { JPY = "0.0067" }', "agents.a.approval.rates.JPY", 'must be a number, not the string "0.0067": write JPY = 0.0067'),
            ('max_amount_per_run = "900"', "agents.a.approval.max_amount_per_run", "write max_amount_per_run = 900 (no quotes)"),
            ("rates = { JPY = 0 }", "agents.a.approval.rates.JPY", "greater than 0"),
            ("rates = { BTC = nan }", "agents.a.approval.rates.BTC", "finite number"),
            ("max_amount = inf", "agents.a.approval.max_amount", "finite number"),
            ("max_amount = -1", "agents.a.approval.max_amount", "must be 0 or more"),
            ("max_amount_per_run = -1", "agents.a.approval.max_amount_per_run", "greater than or equal to 0"),
            ('currency = "US Dollar"', "agents.a.approval.currency", "'US Dollar' is not a currency code"),
            ('rates = { "₿" = 1 }', "agents.a.approval.rates", "is not a currency code"),
            ("max_amount = 10\nrates = { USD = 0.9 }", "agents.a.approval", "rates.USD is 0.9, but USD is this profile's currency"),
        ],
    )
    def test_errors_name_the_key(self, tmp_path: Path, text: str, key: str, message: str) -> None:
        with pytest.raises(ConfigError) as info:
            _load(tmp_path, text)
        assert (info.value.key, message in info.value.message) == (key, True), info.value.message


class TestWarnings:
    """The worker names a supervised profile whose tools move money with no limit, the tools, and the key to set."""

    def test_no_max_amount_is_named(self, tmp_path: Path) -> None:
        config = _load(tmp_path, "timeout_seconds = 60", tools='["lookup_order", "issue_refund"]')
        [warning] = money_limit_warnings(config, "agents.toml")
        assert warning.startswith("agents.toml: agents.a.approval.max_amount is not set, and issue_refund moves money (amount_arg)")
        assert "set max_amount = N under [agents.a.approval] (in USD;" in warning

    def test_no_approval_section_at_all(self, tmp_path: Path) -> None:
        path = tmp_path / "agents.toml"
        path.write_text('tool_modules = ["durable_agent.demo.shop"]\n[agents.b]\ntools = ["issue_refund"]\n')
        assert "agents.b.approval.max_amount is not set" in money_limit_warnings(load_config(path), "f")[0]

    @pytest.mark.parametrize(
        "text",
        [
            'tool_modules = ["durable_agent.demo.shop"]\n[agents.a]\ntools = ["issue_refund"]\n[agents.a.approval]\nmax_amount = 5\n',
            'tool_modules = ["durable_agent.demo.shop"]\n[agents.a]\ntools = ["issue_refund"]\n[agents.a.approval]\nmax_amount_per_run = 5\n',
            'tool_modules = ["durable_agent.demo.shop"]\n[agents.a]\ntools = ["lookup_order", "search_kb"]\n',
            'tool_modules = ["durable_agent.demo.shop"]\n[agents.a]\nautonomy = "read_only"\ntools = ["issue_refund"]\n',
        ],
    )
    def test_nothing_to_say(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "agents.toml"
        path.write_text(text)
        assert money_limit_warnings(load_config(path), "f") == []

    def test_the_shipped_file_sets_its_limit_and_values_its_euro_orders(self) -> None:
        shipped = load_config(ROOT / "agents.toml")
        assert money_limit_warnings(shipped, "agents.toml") == []
        approval = shipped.agents["support"].approval
        # The demo shop's ord-1001 is 15 EUR: refunding it runs; 4,999 USD waits, as the README's walkthrough shows.
        assert money.check(REFUND, usd(15, "EUR"), approval, 0) == money.MoneyCheck(pytest.approx(16.2), None)
        assert money.check(REFUND, usd(4999), approval, 0) == money.MoneyCheck(4999, "amount 4999 USD is above the limit of 1000")

    def test_a_tool_policy_that_names_an_amount(self, tmp_path: Path) -> None:
        path = tmp_path / "agents.toml"
        path.write_text(
            'tool_modules = ["durable_agent.demo.shop"]\n[agents.a]\ntools = ["lookup_order"]\n'
            '[agents.a.tool_policy.lookup_order]\namount_arg = "order_id"\n'
        )
        assert "lookup_order moves money" in money_limit_warnings(load_config(path), "f")[0]


class TestMoneyLimitsComponent:
    """The run's total: counted for calls that ran unapproved, carried, and fed to the rules under the patch."""

    def limits(self, host: FakeHost | None = None) -> MoneyLimits:
        return MoneyLimits(host or FakeHost(), settings())

    def test_the_total_grows_with_unapproved_calls_and_holds_the_next_part(self) -> None:
        limits = self.limits()
        refund = limits._settings.profile.tool("issue_refund")
        assert refund is not None
        assert limits.judge(refund, usd(900)).verdict == "allow"
        limits.ran_without_approval(refund, usd(900))
        assert limits.moved == 900
        decision = limits.judge(refund, usd(900))
        assert decision.verdict == "needs_approval" and "from 900 to 1800 USD" in decision.reason

    def test_a_run_begun_before_money_limits_keeps_its_rules(self) -> None:
        host = FakeHost(unpatched=[PATCH_MONEY_LIMITS])
        limits = self.limits(host)
        refund = limits._settings.profile.tool("issue_refund")
        assert refund is not None
        limits.ran_without_approval(refund, usd(900))
        assert limits.judge(refund, usd(900)).verdict == "allow"
        assert host.patches == [PATCH_MONEY_LIMITS]

    def test_a_run_begun_before_an_omitted_amount_waited_keeps_its_rule(self) -> None:
        for unpatched, verdict in (([PATCH_OMITTED_AMOUNT_HOLDS], "allow"), ([], "needs_approval")):
            host = FakeHost(unpatched=unpatched)
            limits = self.limits(host)
            refund = limits._settings.profile.tool("issue_refund")
            assert refund is not None
            assert limits.judge(refund, {"order_id": "ord-789"}).verdict == verdict
            assert host.patches == [PATCH_OMITTED_AMOUNT_HOLDS]

    def test_the_patch_is_asked_only_where_the_rules_differ(self) -> None:
        host = FakeHost()
        limits = self.limits(host)
        refund = limits._settings.profile.tool("issue_refund")
        assert refund is not None
        limits.judge(refund, usd(20))
        limits.judge(refund, usd(4999))
        assert host.patches == []  # the same verdicts either way: no marker in the history
