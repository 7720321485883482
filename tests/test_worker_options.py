"""Worker sizing and shutdown settings: flags over environment over defaults, checked values."""

from __future__ import annotations

import argparse

import pytest

from durable_agent.worker_options import MIN_SHUTDOWN_GRACE_SECONDS, WorkerTuning, add_arguments, from_args, shutdown_grace


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


class TestWorkerTuning:
    """Each setting has a flag and an AGENT_* variable; the flag wins; bad values are named."""

    def test_defaults_suit_llm_work(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("AGENT_MAX_CONCURRENT_ACTIVITIES", "AGENT_SHUTDOWN_GRACE_SECONDS", "AGENT_TOOL_THREADS"):
            monkeypatch.delenv(name, raising=False)
        tuning = from_args(parse())
        assert tuning == WorkerTuning()
        assert tuning.max_concurrent_activities > tuning.max_concurrent_workflow_tasks

    def test_flag_over_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AGENT_MAX_CONCURRENT_ACTIVITIES", "50")
        monkeypatch.setenv("AGENT_TOOL_THREADS", "4")
        tuning = from_args(parse("--max-concurrent-activities", "80", "--shutdown-grace-seconds", "30"))
        assert (tuning.max_concurrent_activities, tuning.tool_threads, tuning.shutdown_grace_seconds) == (80, 4, 30.0)

    @pytest.mark.parametrize(
        ("argv", "env", "message"),
        [
            ((), {"AGENT_WORKFLOW_POLLERS": "many"}, "AGENT_WORKFLOW_POLLERS='many' is not a number"),
            ((), {"AGENT_TOOL_THREADS": "0"}, "AGENT_TOOL_THREADS must be at least 1"),
            (("--max-concurrent-activities", "0"), {}, "--max-concurrent-activities must be at least 1"),
            (("--shutdown-grace-seconds", "-1"), {}, "--shutdown-grace-seconds must be at least 0"),
        ],
    )
    def test_bad_values_are_named(self, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str], message: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValueError, match=message):
            from_args(parse(*argv))

    @pytest.mark.parametrize(
        ("configured", "tools", "grace"),
        [
            (None, [], MIN_SHUTDOWN_GRACE_SECONDS),
            (None, [60.0, 300.0], 300.0),
            (None, [30.0], MIN_SHUTDOWN_GRACE_SECONDS),
            (10.0, [300.0], 10.0),
            (0.0, [300.0], 0.0),
        ],
    )
    def test_grace_covers_the_longest_tool(self, configured: float | None, tools: list[float], grace: float) -> None:
        assert shutdown_grace(WorkerTuning(shutdown_grace_seconds=configured), tools) == grace
