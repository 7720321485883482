"""The worker's ``agents.toml`` as it is now: re-read when the file changes.

Runs read some of their configuration at the moment they decide (the reviewer
keyring, the approval policy): a platform team edits the file, and runs already
waiting follow it from their next decision, without a worker restart.
"""

from __future__ import annotations

import logging
import os
import threading

from durable_agent.errors import ConfigError
from durable_agent.profiles import AgentsConfig, load_config

log = logging.getLogger("durable_agent.activities")


class ConfigUnreadable(Exception):
    """The configuration file cannot be read or no longer validates (the message says which, and how)."""


class LiveConfig:
    """One worker's configuration, re-read from its file when its modification time changes.

    A configuration built in code (no file) never changes. Call :meth:`current` from
    a thread (it may read the file).
    """

    def __init__(self, config: AgentsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._mtime = self._stat()

    def _stat(self) -> int | None:
        source = self.config.source
        try:
            return os.stat(source).st_mtime_ns if source is not None else None
        except OSError:
            return None

    def current(self) -> AgentsConfig:
        """The configuration as its file says now.

        Raises:
            ConfigUnreadable: the file is gone or unreadable, or its new content is invalid.
        """
        source = self.config.source
        if source is None:
            return self.config
        with self._lock:
            mtime = self._stat()
            if mtime is None:
                raise ConfigUnreadable(f"{source} cannot be read now; restore it")
            if mtime != self._mtime:
                try:
                    self.config = load_config(source)
                except ConfigError as exc:
                    raise ConfigUnreadable(str(exc)) from None
                self._mtime = mtime
                log.info("re-read %s: reviewer keys, allow-lists and approval policy as changed", source)
            return self.config
