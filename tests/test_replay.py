"""New worker code must replay the histories of runs recorded with earlier code.

The histories in tests/histories/ come from ``python -m tests.record_histories``.
A change that breaks one of them would break runs in flight: guard it with
``workflow.patched`` instead of re-recording.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from durable_agent.workflows import WORKFLOWS
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from durable_agent.cli.worker import workflow_runner
from durable_agent.converter import guarded_data_converter

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 8, "run `python -m tests.record_histories` to record them"


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    text = path.read_text()
    # The workflow id and namespace the run had: signed decisions name them, and the workers replaying them know them.
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    history = WorkflowHistory.from_json(started.get("workflowId") or f"replay-{path.stem}", text)
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=guarded_data_converter, workflow_runner=workflow_runner(), namespace="default"
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
