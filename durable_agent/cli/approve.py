"""Decide a held action: `durable-agent approve WORKFLOW_ID --approval-id ID --reviewer NAME [--key FILE]`.

Sends the decision as the run's `review` update, which answers: it prints the
decided record as JSON, or the run's refusal (an unknown or already decided id,
with the ids that wait; a reviewer not on the allow-list) and exits 1. --reject
rejects instead; --comment is kept in the record, and a rejection's comment is
what the model reads.

With --key FILE (from `durable-agent keys new`) the decision is signed (Ed25519,
bound to the run, the approval and its arguments; see docs/approvals.md): the only
kind that profiles with `require_signature = true` accept.

Connects as the worker does (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS, API key).
"""

from __future__ import annotations

import argparse
import json
import sys

from durable_agent import signing
from durable_agent.cli.hints import cannot_connect
from durable_agent.client import DEFAULT_DECISION_TTL_SECONDS, AgentClient, ApprovalRefused
from durable_agent.connection import target_address

#: Exit as soon as the decision is printed (see durable_agent.cli.entry): nothing is left to clean up.
SKIP_INTERPRETER_TEARDOWN = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``approve`` subcommand's options."""
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID", help="the run's workflow id")
    parser.add_argument("--approval-id", required=True, help="the approval to decide, as the run lists it (status query, inbox, notice)")
    parser.add_argument("--reviewer", required=True, help="your name as the profile's reviewers list writes it")
    parser.add_argument(
        "--key", metavar="FILE", help="sign with your key file (from `durable-agent keys new`); required by profiles that require signatures"
    )
    parser.add_argument("--reject", action="store_true", help="reject the action instead of approving it")
    parser.add_argument(
        "--args-sha256", metavar="DIGEST",
        help="the digest of the arguments you saw (status query, inbox, the starter's command): refused if the action waits with others",
    )
    parser.add_argument("--comment", help="kept in the record; on a rejection, the model reads it")
    parser.add_argument(
        "--expires-in", type=int, default=DEFAULT_DECISION_TTL_SECONDS, metavar="SECONDS",
        help=f"the signature is refused after this (default {DEFAULT_DECISION_TTL_SECONDS})",
    )
    parser.add_argument("--address", help="Temporal address (default: TEMPORAL_ADDRESS or localhost:7233)")


async def main(args: argparse.Namespace) -> int:
    """Sign and send the decision; print the decided record (exit 0) or the refusal (exit 1)."""
    try:
        key = signing.load_key_file(args.key) if args.key else None
    except signing.KeyFileError as exc:
        print(f"approve: {exc}", file=sys.stderr)
        return 2
    try:
        agents = await AgentClient.connect(args.address)
    except Exception as exc:  # noqa: BLE001 - any connection failure is reported the same way
        print(cannot_connect("approve", target_address(args.address), exc), file=sys.stderr)
        return 2
    decide = agents.reject if args.reject else agents.approve
    try:
        record = await decide(
            args.workflow_id, args.approval_id, reviewer=args.reviewer, comment=args.comment, key=key, expires_in=args.expires_in,
            args_sha256=args.args_sha256,
        )
    except ApprovalRefused as exc:
        print(f"approve: refused: {exc.reason}", file=sys.stderr)
        return 1
    print(json.dumps(record.model_dump(mode="json"), indent=2))
    return 0
