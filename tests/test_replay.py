"""New worker code must replay the histories of runs recorded with earlier code.

The histories in tests/histories/ come from ``python -m tests.record_histories``.
A change that breaks one of them would break runs in flight: guard it with
``workflow.patched`` instead of re-recording. ``tests/histories/builds.toml``
names the build that recorded each one (docs/versioning.md says when a build's
histories, and the patches only they need, may go).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from durable_agent.workflows import WORKFLOWS
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from durable_agent.cli.worker import workflow_runner
from durable_agent.converter import guarded_data_converter
from tests import history_builds

HISTORIES = sorted(history_builds.HISTORIES.glob("*.json"))
MANIFEST = history_builds.load()


def test_there_are_recorded_histories() -> None:
    assert len(HISTORIES) >= 8, "run `python -m tests.record_histories` to record them"


def test_every_history_is_listed_with_its_build() -> None:
    """A history the manifest does not name (or names wrongly) could not be retired with its build."""
    on_disk = {path.stem for path in HISTORIES}
    assert sorted(on_disk - MANIFEST.keys()) == [], "list these in tests/histories/builds.toml (with their build and commit)"
    assert sorted(MANIFEST.keys() - on_disk) == [], "tests/histories/builds.toml lists histories that are not there"
    for path in HISTORIES:
        entry = MANIFEST[path.stem]
        assert history_builds.builds_in(path.read_text()) == {entry.build}, f"{path.name} was recorded by another build than {entry.build}"
        assert re.fullmatch(r"[0-9a-f]{7,40}", entry.commit), f"{path.name}: commit {entry.commit!r} is not a commit id"


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
    recorded = MANIFEST.get(path.stem)
    by = f"build {recorded.build}, commit {recorded.commit}" if recorded else "not in builds.toml"
    assert result.replay_failure is None, f"{path.name} ({by}) no longer replays: {result.replay_failure}"
