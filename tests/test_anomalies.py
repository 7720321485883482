"""Sharper anomaly rules and the action each one triggers: pure functions, no Temporal."""

from __future__ import annotations

import pytest

from durable_agent import anomalies
from durable_agent.anomalies import HIGH_COST, HIGH_TOKEN_USAGE, POSSIBLE_LOOP, Anomaly
from durable_agent.schemas import AnomalyThresholds

A, B, C = "a{\"x\":1}", "b{}", "c{}"


class TestLoopRule:
    """Loops are repeats of one call or cycles of a few."""

    @pytest.mark.parametrize(
        ("actions", "found"),
        [
            ([A, A, A], "a called 3 times in a row"),
            ([A, B, A, B], "the cycle a -> b repeated 2 times"),
            ([C, A, B, C, A, B], "the cycle c -> a -> b repeated 2 times"),
            ([A, B, A], None),
            ([A, B, A, C], None),
            ([A, A, B, B], None),
            (["a{\"x\":1}", "b{}", "a{\"x\":2}", "b{}"], None),  # different arguments: progress, not a loop
        ],
    )
    def test_repeats_and_cycles(self, actions: list[str], found: str | None) -> None:
        anomaly = anomalies.find_loop(actions, AnomalyThresholds())
        if found is None:
            assert anomaly is None
        else:
            assert anomaly is not None and anomaly.kind == POSSIBLE_LOOP and found in anomaly.message

    def test_cycle_repeats_is_a_setting(self) -> None:
        assert anomalies.find_loop([A, B, A, B], AnomalyThresholds(cycle_repeats=3)) is None
        assert anomalies.find_loop([A, B] * 3, AnomalyThresholds(cycle_repeats=3)) is not None


class TestCostRule:
    """A costly step is above the threshold, or far above the run's own median."""

    @pytest.mark.parametrize(
        ("cost", "previous", "expected"),
        [
            (0.9, [], "above $0.5000"),
            (0.05, [0.001] * 5, "50.0 times the run's median"),
            (0.005, [0.001] * 5, None),  # 5x: under the factor
            (0.05, [0.001] * 4, None),  # too few steps for a median
            (0.05, [0.0] * 6, None),  # free steps give no median to compare with
        ],
    )
    def test_threshold_and_median(self, cost: float, previous: list[float], expected: str | None) -> None:
        anomaly = anomalies.find_high_cost(cost, previous, AnomalyThresholds(step_cost_usd=0.5))
        if expected is None:
            assert anomaly is None
        else:
            assert anomaly is not None and anomaly.kind == HIGH_COST and expected in anomaly.message


class TestActions:
    """Each profile says what each kind does; the strongest wins."""

    def test_default_is_warn(self) -> None:
        found = [Anomaly(POSSIBLE_LOOP, "x"), Anomaly(HIGH_COST, "y")]
        assert anomalies.strongest_action(found, AnomalyThresholds()) == ("warn", found)

    def test_stop_beats_pause_beats_warn(self) -> None:
        thresholds = AnomalyThresholds(on_loop="pause", on_high_cost="stop", on_high_tokens="warn")
        loop, cost, tokens = Anomaly(POSSIBLE_LOOP, "l"), Anomaly(HIGH_COST, "c"), Anomaly(HIGH_TOKEN_USAGE, "t")
        assert anomalies.strongest_action([loop, cost, tokens], thresholds) == ("stop", [cost])
        assert anomalies.strongest_action([tokens, loop], thresholds) == ("pause", [loop])
        assert anomalies.strongest_action([], thresholds) == ("warn", [])

    def test_unknown_action_is_a_config_error(self) -> None:
        with pytest.raises(ValueError, match="on_loop"):
            AnomalyThresholds.model_validate({"on_loop": "explode"})
