"""Look after the content store: ``durable-agent store gc --older-than DAYS``.

The store is the one ``AGENT_STORE_URL`` names (default ``<AGENT_STATE_DIR>/content``),
with the keys of ``AGENT_ENCRYPTION_KEYS``. ``gc`` deletes content not written for
DAYS days; named records are kept. Choose DAYS above the namespace's retention
period plus the longest run: content that runs still use is rewritten, and so stays
young, but a run waiting weeks for an approval reads what it wrote at its start.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from durable_agent.encryption import KeyRing
from durable_agent.store import open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``store`` subcommand's actions and options."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gc = actions.add_parser("gc", help="delete content older than --older-than days (named records are kept)")
    gc.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="age in days (fractions allowed)")
    gc.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    gc.add_argument("--url", default=None, help="the store (default: AGENT_STORE_URL, else <AGENT_STATE_DIR>/content)")


async def main(args: argparse.Namespace) -> int:
    """Run the action; 2 for bad settings, 1 when the store cannot be used."""
    if args.older_than <= 0:
        print("store gc: --older-than must be a positive number of days", file=sys.stderr)
        return 2
    try:
        store = open_store(KeyRing.from_env(), url=args.url)
    except ValueError as exc:
        print(f"store gc: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        report = await store.collect_garbage(timedelta(days=args.older_than), dry_run=args.dry_run)
    except Exception as exc:  # noqa: BLE001 - reported with the store's location, then exit
        print(f"store gc: the content store at {store.location} is not usable: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"store gc: {store.location}: {verb} {report.deleted} objects ({report.deleted_bytes} bytes) older than "
          f"{args.older_than:g} days; kept {report.kept}")
    return 0
