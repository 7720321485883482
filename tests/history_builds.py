"""The manifest of recorded histories, ``tests/histories/builds.toml``: which build recorded each one.

``build`` is the Worker Deployment version of the worker that recorded it, as
the ``TemporalWorkerDeploymentVersion`` search attribute writes it
(``DEPLOYMENT:BUILD``), or ``unversioned``; ``commit`` is the commit checked out
when it was recorded. The replay test reads it; ``tests.record_histories``
writes it. See docs/versioning.md for what a build's histories are for.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

HISTORIES = Path(__file__).resolve().parent / "histories"
MANIFEST = HISTORIES / "builds.toml"
UNVERSIONED = "unversioned"
_SECTION = "[histories]\n"


@dataclass(frozen=True)
class Recorded:
    """One history's entry in the manifest."""

    build: str
    commit: str


def load() -> dict[str, Recorded]:
    """Every entry of the manifest, by history name (the file name without ``.json``)."""
    table = tomllib.loads(MANIFEST.read_text())["histories"]
    return {name: Recorded(build=entry["build"], commit=entry["commit"]) for name, entry in table.items()}


def builds_in(history_json: str) -> set[str]:
    """The versions that completed the history's workflow tasks (``DEPLOYMENT:BUILD``, or ``unversioned``)."""
    found = set()
    for event in json.loads(history_json)["events"]:
        completed = event.get("workflowTaskCompletedEventAttributes")
        if completed is None:
            continue
        version = completed.get("deploymentVersion") or {}
        found.add(f"{version['deploymentName']}:{version['buildId']}" if version.get("buildId") else UNVERSIONED)
    return found


def head_commit() -> str:
    """The commit checked out now (what a recording's ``commit`` is)."""
    done = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=HISTORIES, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot name the commit checked out (git rev-parse HEAD): {done.stderr.strip()}")
    return done.stdout.strip()


def list_recorded(name: str, build: str, commit: str) -> None:
    """Add or replace ``name``'s entry; the entries stay sorted by name under the file's own header."""
    text = MANIFEST.read_text()
    header = text[: text.index(_SECTION) + len(_SECTION)]
    entries = {**load(), name: Recorded(build, commit)}
    lines = [f'{key} = {{ build = "{entry.build}", commit = "{entry.commit}" }}\n' for key, entry in sorted(entries.items())]
    MANIFEST.write_text(header + "".join(lines))
