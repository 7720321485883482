"""Who may see what in the reviewer inbox: each reviewer sees only the approvals they may decide.

Who may decide an agent's approvals is its profile's allow-list (``reviewers``)
and ``delegates``, in the same ``agents.toml`` the workers read. The inbox reads
that file too (profiles and keys only: no tool module is imported), again
whenever it changes, so a reviewer removed from a list stops seeing its
approvals at the next page load. While the file cannot be read, nobody sees
anything (fail closed), and the page says why.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path

import pydantic

from durable_agent.decisions import delegate_may_decide
from durable_agent.errors import ConfigError
from durable_agent.profiles import AgentsConfig

log = logging.getLogger("durable_agent.inbox")


def read_profiles(path: Path) -> AgentsConfig:
    """The profiles of ``agents.toml`` as validated models, without importing any tool module.

    Raises:
        ConfigError: the file is missing, unreadable, or invalid (naming the key).
    """
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "not found; pass --config FILE (the workers' agents.toml)") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(file, "(file)", str(exc)) from None
    try:
        return AgentsConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(file, ".".join(str(part) for part in err["loc"]) or "(top level)", err["msg"]) from None


class Deciders:
    """Who may decide each agent's approvals through this inbox, by ``agents.toml`` as it is now.

    Args:
        path: The workers' ``agents.toml``.
        delegate: The inbox key's name (what profiles list under ``delegates``).

    Raises:
        ConfigError: at start, when the file cannot be read.
    """

    def __init__(self, path: Path, delegate: str) -> None:
        self.path = path
        self.delegate = delegate
        self._config: AgentsConfig | None = read_profiles(path)
        self._stamp = self._stat()
        #: Why nobody sees anything now (the file broke after the inbox started), else ``None``.
        self.problem: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def current(self) -> AgentsConfig | None:
        """The profiles now (re-read when the file changed); ``None`` while it cannot be read."""
        stamp = self._stat()
        if stamp is None or stamp != self._stamp:
            try:
                self._config, self.problem = read_profiles(self.path), None
            except ConfigError as exc:
                if self.problem is None:
                    log.warning("the inbox shows no approval until this is fixed: %s", exc)
                self._config, self.problem = None, str(exc)
            self._stamp = stamp
        return self._config

    def may_decide(self, reviewer: str, agent: str | None) -> bool:
        """Whether ``reviewer`` may decide ``agent``'s approvals through this inbox (an unknown agent: nobody)."""
        config = self.current()
        if config is None or agent is None or agent not in config.agents:
            return False
        return delegate_may_decide(config.agents[agent].approval, reviewer, self.delegate, config.reviewer_keys)
