"""Read one run's decision records: ``durable-agent trace WORKFLOW_ID [--json] [--follow]``.

Prints a table (step, action, tool, status, duration, tokens, cost, warnings)
from the records kept in the content store (``AGENT_STORE_URL`` /
``AGENT_STATE_DIR``, as the workers use it), each record whole. With ``--json``,
one record per line, as the trace sink writes them. With ``--follow``, keeps
printing new records while the run runs and stops when it closes. With ``--tree``,
each call of a sub-agent is followed by the sub-agent run's own records, indented
(and theirs by their sub-agents').

A run recorded before records were stored has none there: then the workflow's
``trace`` query answers (a worker must be polling), with long texts cut.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError

from durable_agent import contracts, trace
from durable_agent.connection import connect
from durable_agent.schemas import DecisionRecord
from durable_agent.encryption import DecryptionError, KeyRing
from durable_agent.store import ContentIntegrityError, ContentStore, open_store

COLUMNS = ("STEP", "ACTION", "TOOL", "STATUS", "DURATION", "TOKENS", "COST", "WARNINGS")
WIDTHS = (5, 7, 18, 18, 9, 8, 10)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``trace`` subcommand's options."""
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="the run's workflow id")
    parser.add_argument("--run", default=None, metavar="RUN_ID", help="the first run id of the chain (default: the latest)")
    parser.add_argument("--json", action="store_true", help="one JSON record per line instead of a table")
    parser.add_argument("--follow", action="store_true", help="keep printing new records until the run closes")
    parser.add_argument("--tree", action="store_true", help="show each sub-agent run's records beneath the call that started it")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between looks with --follow (default 1)")
    parser.add_argument("--address", default=None, help="Temporal address (default: TEMPORAL_ADDRESS or localhost:7233)")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _kinds(warnings: list[str]) -> str:
    """``POSSIBLE_LOOP, HIGH_COST`` of the warnings' texts."""
    return ", ".join(dict.fromkeys(w.split(":", 1)[0] for w in warnings))


def header() -> str:
    """The table's heading line."""
    return "  ".join(name.ljust(width) for name, width in zip(COLUMNS, WIDTHS)) + "  " + COLUMNS[-1]


def row(record: DecisionRecord) -> str:
    """One record as a table line."""
    cost = record.cost
    tokens = cost.input_tokens + cost.output_tokens + cost.cache_creation_input_tokens + cost.cache_read_input_tokens
    duration = record.observation.get("duration_ms")
    cells = (
        str(record.step),
        {"final_answer": "answer", "compaction": "compact"}.get(record.action.type, "tool"),
        record.action.tool or "-",
        str(record.observation.get("status", "?")),
        f"{duration / 1000:.2f}s" if isinstance(duration, (int, float)) else "-",
        str(tokens),
        f"${cost.estimated_cost:.4f}",
    )
    return "  ".join(_cut(cell, width).ljust(width) for cell, width in zip(cells, WIDTHS)) + "  " + (_kinds(record.warnings) or "-")


def print_records(records: list[DecisionRecord], out: TextIO, *, as_json: bool) -> None:
    """Print records as JSON lines or table rows."""
    for record in records:
        print(record.model_dump_json() if as_json else row(record), file=out, flush=True)


async def _from_query(client: Client, workflow_id: str, run_id: str | None) -> list[DecisionRecord]:
    # The run asked for, never silently the latest one: another run's records would pass for its own.
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    return await handle.query(contracts.QUERY_TRACE, result_type=list[DecisionRecord])


async def _is_open(client: Client, workflow_id: str) -> bool:
    description = await client.get_workflow_handle(workflow_id).describe()
    return description.status == WorkflowExecutionStatus.RUNNING


#: How deep ``--tree`` follows sub-agents (configurations allow 20 at most).
TREE_MAX_DEPTH = 20


async def _records(store: ContentStore, client: Client | None, workflow_id: str, run: str | None) -> list[DecisionRecord]:
    """A run's records: from the store, else from its ``trace`` query."""
    records = await trace.read_records(store, workflow_id, run)
    if not records and client is not None:
        records = await _from_query(client, workflow_id, run)
    return records


async def show_tree(args: argparse.Namespace, store: ContentStore, client: Client | None, out: TextIO) -> int:
    """Print the run's records, each sub-agent run's records indented beneath the call that started it."""
    count = 0

    async def walk(workflow_id: str, run: str | None, depth: int) -> None:
        nonlocal count
        for record in await _records(store, client, workflow_id, run):
            count += 1
            indent = "    " * depth
            print(record.model_dump_json() if args.json else indent + row(record), file=out, flush=True)
            child = record.observation.get("child_workflow_id")
            if isinstance(child, str) and depth < TREE_MAX_DEPTH:
                if not args.json:
                    print(f"{indent}    sub-agent {child}:", file=out)
                await walk(child, None, depth + 1)

    if not args.json:
        print(header(), file=out)
    await walk(args.workflow_id, args.run, 0)
    if not count:
        print(f"trace: no decision records for {args.workflow_id}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{count} records, the sub-agents' included", file=out)
    return 0


async def show(args: argparse.Namespace, store: ContentStore, client: Client | None, out: TextIO) -> int:
    """Print the run's records (and, following, the new ones until it closes); the exit status."""
    if getattr(args, "tree", False):
        return await show_tree(args, store, client, out)
    shown: set[str] = set()
    printed_header = False
    from_store = True
    while True:
        open_now = args.follow and client is not None and await _is_open(client, args.workflow_id)
        records = await trace.read_records(store, args.workflow_id, args.run)
        if not records and not shown and client is not None:
            from_store = False
            records = await _from_query(client, args.workflow_id, args.run)
        fresh = [r for r in records if (r.record_id or f"{r.step}/{r.timestamp}/{r.action.tool}") not in shown]
        shown.update(r.record_id or f"{r.step}/{r.timestamp}/{r.action.tool}" for r in fresh)
        if not printed_header and not args.json:
            print(header(), file=out)
            printed_header = True
        print_records(fresh, out, as_json=args.json)
        if not open_now:
            break
        await asyncio.sleep(args.interval)
    if not shown:
        print(f"trace: no decision records for {args.workflow_id}", file=sys.stderr)
        return 1
    if not args.json:
        where = "the content store" if from_store else "the trace query (texts cut)"
        print(f"{len(shown)} records, from {where}", file=out)
    return 0


async def main(args: argparse.Namespace, out: Any = None) -> int:
    """Print the records of ``args.workflow_id``; 1 when there are none."""
    out = out or sys.stdout
    try:
        store = open_store(KeyRing.from_env())  # as the workers see it: AGENT_STORE_URL, AGENT_ENCRYPTION_KEYS
    except ValueError as exc:
        print(f"trace: configuration error: {exc}", file=sys.stderr)
        return 2
    client: Client | None = None
    try:
        client = await connect(args.address)
    except Exception as exc:  # noqa: BLE001 - the store alone answers for a finished run
        if args.follow:
            print(f"trace: cannot reach Temporal to follow the run: {exc}", file=sys.stderr)
            return 2
    try:
        return await show(args, store, client, out)
    except RPCError as exc:
        print(f"trace: {args.workflow_id}: {exc.message}", file=sys.stderr)
        return 1
    except WorkflowQueryFailedError as exc:  # e.g. a --run that names no run of this workflow
        print(f"trace: {args.workflow_id}: {exc}", file=sys.stderr)
        return 1
    except (DecryptionError, ContentIntegrityError) as exc:
        print(f"trace: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
