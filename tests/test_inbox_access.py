"""Who the inbox shows an agent's approvals to, read from agents.toml as it is now; nobody while it is broken."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from durable_agent import signing
from durable_agent.errors import ConfigError
from durable_agent.inbox import Deciders

INBOX = signing.generate_key("inbox").public_key


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))  # a rewrite within the same tick still counts as a change
    return path


def profiles(support_reviewers: str) -> str:
    return f"""[reviewer_keys]
inbox = "{INBOX}"
[agents.support]
tools = ["issue_refund"]
[agents.support.approval]
require_signature = true
reviewers = {support_reviewers}
delegates = ["inbox"]
[agents.open]
tools = ["search_kb"]
"""


class TestDeciders:
    """The allow-lists as the file says now: a name removed stops seeing at once; a broken file shows nobody anything."""

    def test_follows_the_file(self, tmp_path: Path) -> None:
        path = write(tmp_path / "agents.toml", profiles('["alice", "bob"]'))
        deciders = Deciders(path, "inbox")
        assert deciders.may_decide("alice", "support") and deciders.may_decide("bob", "support")
        assert not deciders.may_decide("mallory", "support")
        assert deciders.may_decide("mallory", "open")  # unsigned, no list: anyone
        assert not deciders.may_decide("alice", "finance") and not deciders.may_decide("alice", None)  # unknown agents: nobody

        write(path, profiles('["alice"]'))
        assert not deciders.may_decide("bob", "support")

        write(path, "this is [not toml")
        assert not deciders.may_decide("alice", "support") and not deciders.may_decide("mallory", "open")
        assert deciders.problem is not None and str(path) in deciders.problem

        write(path, profiles('["alice"]'))
        assert deciders.may_decide("alice", "support") and deciders.problem is None

    def test_a_broken_file_stops_the_inbox_at_start(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="agents.support.approval.reviewers"):
            Deciders(write(tmp_path / "agents.toml", profiles('"alice"')), "inbox")
        with pytest.raises(ConfigError, match="not found"):
            Deciders(tmp_path / "missing.toml", "inbox")
