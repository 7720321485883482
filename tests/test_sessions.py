"""Signed, expiring cookie values and the inbox's session secret, without a server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from durable_agent.inbox.signin import SignInError, session_secret
from durable_agent.sessions import Sealer, derive_secret

SECRET = b"0123456789abcdef0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class TestSealer:
    """A sealed value opens only with its secret, for its purpose, until it expires."""

    def test_round_trip_and_refusals(self) -> None:
        clock = Clock()
        sealer = Sealer(SECRET, clock=clock)
        value = sealer.seal("inbox-session", {"sub": "alice"}, lifetime=60)
        assert sealer.open("inbox-session", value) == {"sub": "alice", "exp": 1_800_000_060}
        assert sealer.open("inbox-csrf", value) is None  # made for another purpose
        assert Sealer(SECRET[::-1], clock=clock).open("inbox-session", value) is None  # another secret
        body, mac = value.split(".")
        forged = Sealer(SECRET, clock=clock).seal("inbox-session", {"sub": "mallory"}, lifetime=60).split(".")[0]
        assert sealer.open("inbox-session", f"{forged}.{mac}") is None  # another payload under this signature
        for junk in (None, "", "x", "a.b.c", f"{body}."):
            assert sealer.open("inbox-session", junk) is None
        clock.now += 60
        assert sealer.open("inbox-session", value) is None  # expired

    def test_a_short_secret_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 32 bytes"):
            Sealer(b"short")

    def test_derived_secrets_differ_by_purpose_and_material(self) -> None:
        assert derive_secret("token", "codec-session") != derive_secret("token", "other")
        assert derive_secret("token", "codec-session") != derive_secret("token2", "codec-session")
        assert len(derive_secret("token", "codec-session")) == 32


class TestSessionSecret:
    """Where the inbox's session secret comes from, and when it refuses to start without one."""

    def test_configured_first_then_a_file(self, tmp_path: Path) -> None:
        default = tmp_path / "inbox-secret"
        assert session_secret(configured="e" * 40, secret_file=None, default_file=default, host="0.0.0.0") == (b"e" * 40, "AGENT_INBOX_SECRET")
        given = tmp_path / "given"
        given.write_text("f" * 40 + "\n")
        assert session_secret(configured=None, secret_file=given, default_file=default, host="0.0.0.0") == (b"f" * 40, str(given))
        assert not default.exists()

    def test_this_machine_only_keeps_one_in_the_state_folder(self, tmp_path: Path) -> None:
        default = tmp_path / "state" / "inbox-secret"
        first = session_secret(configured=None, secret_file=None, default_file=default, host="127.0.0.1")
        assert first == session_secret(configured=None, secret_file=None, default_file=default, host="localhost")
        assert first[1] == str(default) and stat.S_IMODE(os.stat(default).st_mode) == 0o600

    @pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "inbox.internal"])
    def test_beyond_this_machine_it_must_be_configured(self, tmp_path: Path, host: str) -> None:
        with pytest.raises(SignInError, match="AGENT_INBOX_SECRET .*every replica|same on every replica"):
            session_secret(configured=None, secret_file=None, default_file=tmp_path / "s", host=host)
        assert not (tmp_path / "s").exists()

    def test_short_or_missing_secrets_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(SignInError, match="shorter than 32"):
            session_secret(configured="short", secret_file=None, default_file=tmp_path / "s", host="127.0.0.1")
        with pytest.raises(SignInError, match="cannot read the session secret"):
            session_secret(configured=None, secret_file=tmp_path / "missing", default_file=tmp_path / "s", host="127.0.0.1")
