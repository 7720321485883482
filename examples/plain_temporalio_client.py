"""Drive a durable-agent run from any service with plain ``temporalio``, by names only.

Nothing here imports durable_agent: a run is the workflow type ``AgentWorkflow`` on
task queue ``agents``, its progress is the ``status`` query, and a decision is the
``review`` update, all carrying plain JSON (see the contracts in the README). With
a worker running (``python worker.py``)::

    python examples/plain_temporalio_client.py "Refund order ord-789"

starts the run, approves each action it holds for review as reviewer
``example-service`` and prints the result. The connection comes from the standard
Temporal environment (``TEMPORAL_ADDRESS``..., default ``localhost:7233``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.envconfig import ClientConfig

AGENT_WORKFLOW = "AgentWorkflow"
STATUS_QUERY = "status"
REVIEW_UPDATE = "review"


async def connect() -> Client:
    """A client configured from the environment, as the ``temporal`` CLI and every SDK read it."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if not config.get("target_host"):
        config["target_host"] = "localhost:7233"
    return await Client.connect(**config)


async def main(
    client: Client | None = None,
    task: str = "Refund order ord-789",
    *,
    agent: str = "support",
    task_queue: str | None = None,
    reviewer: str = "example-service",
    poll_interval: float = 0.5,
) -> dict[str, Any]:
    """Start a run, approve what it holds for review, and return its result as JSON.

    Args:
        client: A connected client; one from the environment when ``None`` (tests pass theirs).
        task: What the agent should do.
        agent: The profile to run.
        task_queue: Where the worker polls; ``AGENT_TASK_QUEUE`` or ``agents`` by default.
        reviewer: The name recorded with each decision (it must be on the profile's allow-list, if any).
        poll_interval: Seconds between looks at the run's status.
    """
    client = client or await connect()
    handle = await client.start_workflow(
        AGENT_WORKFLOW,
        {"task": task, "agent": agent},
        id=f"example-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue or os.environ.get("AGENT_TASK_QUEUE") or "agents",
    )
    print(f"started run {handle.id}")
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        status = await handle.query(STATUS_QUERY)
        for pending in status["pending_approvals"]:
            print(f"{pending['approval_id']} waits: {pending['tool']} {json.dumps(pending['args'])} ({pending['reason']})")
            # The update answers with the decided record, or fails with the reason the run refused it.
            record = await handle.execute_update(
                REVIEW_UPDATE,
                {"approval_id": pending["approval_id"], "approved": True, "reviewer": reviewer, "comment": "approved by the example"},
            )
            print(f"{record['approval_id']}: {record['status']} by {record['reviewer']}")
        if not status["pending_approvals"]:
            await asyncio.sleep(poll_interval)
    result: dict[str, Any] = await handle.result()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    asyncio.run(main(task=" ".join(sys.argv[1:]) or "Refund order ord-789"))
