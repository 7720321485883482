"""The bundled demo shop: `durable-agent demo reset` puts its orders back as they were seeded.

The demo's tools work on a small SQLite shop (SHOP_DB, default
<AGENT_STATE_DIR>/shop.sqlite) that keeps what the runs did, as the external
system it stands for would: an order refunded in full stays refunded. Reset it to
try the walkthrough again; `durable-agent demo show` prints its orders and refunds.
"""

from __future__ import annotations

import argparse

from durable_agent.cli.hints import shown_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options."""
    parser.add_argument("action", choices=["reset", "show"], help="reset: back to the seeded orders, no refunds; show: print them as JSON")


def main(args: argparse.Namespace) -> int:
    """Reset or show the demo shop."""
    from durable_agent.demo import shop

    if args.action == "show":
        print(shop.dump())
        return 0
    path = shop.reset()
    orders = ", ".join(order[0] for order in shop.SEED_ORDERS)
    print(f"Reset the demo shop at {shown_path(path)}: orders {orders} as seeded, no refunds")
    return 0
