"""The bundled demo: a small shop in SQLite and the four tools of the ``support`` agent.

The database is created on first use at ``SHOP_DB`` (default
``<state dir>/shop.sqlite``) with a few orders, ``ord-789`` among them. It keeps
what the demo runs did (refunds, cancellations) from one run to the next, as the
external system it stands for would; ``durable-agent demo reset`` puts it back as
it was seeded. The README's walkthrough refunds a different order in each section
(``ord-789``, ``ord-790``, ``ord-791``), so each shows what it says however many
of the others ran before.
``issue_refund`` shows how a tool with a side effect stays exactly-once: it
records the call's idempotency key with the refund, atomically, so a retry after
a crash returns the first refund instead of paying twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from durable_agent.errors import ToolError
from durable_agent.store import state_dir
from durable_agent.tools import tool, tool_context

SEED_ORDERS = [
    ("ord-123", "alice@example.com", "Wireless mouse", 49.99, "USD", "delivered"),
    ("ord-456", "bob@example.com", "USB-C cable pack", 20.00, "USD", "shipped"),
    ("ord-789", "carol@example.com", "Laptop Pro 16", 4999.00, "USD", "delivered"),
    # Large orders for the walkthrough's approvals, one per section (see the module's docstring).
    ("ord-790", "erin@example.com", "Laptop Pro 16", 4999.00, "USD", "delivered"),
    ("ord-791", "frank@example.com", "Studio Display", 1599.00, "USD", "delivered"),
    ("ord-1001", "dan@example.com", "Coffee beans", 15.00, "EUR", "processing"),
]

_KB = [
    ("refund-policy", "Refund policy", "Delivered orders can be refunded in full within 30 days. Refunds above 1,000 USD need a supervisor's approval. Refunds go back to the original payment method."),
    ("cancellation-policy", "Cancellation policy", "Orders can be cancelled until they ship. Cancelling a shipped order needs a supervisor and a return label."),
    ("shipping", "Shipping times", "Standard shipping takes 3-5 business days; express 1-2."),
    ("warranty", "Warranty", "Electronics carry a 1-year warranty against defects."),
]

_lock = threading.Lock()


def db_path() -> Path:
    return Path(os.environ.get("SHOP_DB") or state_dir() / "shop.sqlite")


def connect() -> sqlite3.Connection:
    """Open the shop database, creating and seeding it on first use."""
    path = db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    with _lock:
        conn.executescript(
            """
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS orders (
                order_id TEXT PRIMARY KEY, customer TEXT, item TEXT, total REAL, currency TEXT, status TEXT);
            CREATE TABLE IF NOT EXISTS refunds (
                refund_id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT, amount REAL, currency TEXT,
                idempotency_key TEXT UNIQUE, created_at TEXT DEFAULT CURRENT_TIMESTAMP);
            CREATE TABLE IF NOT EXISTS kb (slug TEXT PRIMARY KEY, title TEXT, body TEXT);
            """
        )
        seeded = conn.execute(
            f"SELECT COUNT(*) FROM orders WHERE order_id IN ({','.join('?' * len(SEED_ORDERS))})", [o[0] for o in SEED_ORDERS]
        ).fetchone()[0]
        if seeded < len(SEED_ORDERS):  # a new file, or one from before some seed orders were added
            _seed(conn)
    return conn


def _seed(conn: sqlite3.Connection) -> None:
    conn.executemany("INSERT OR IGNORE INTO orders VALUES (?,?,?,?,?,?)", SEED_ORDERS)
    conn.executemany("INSERT OR IGNORE INTO kb VALUES (?,?,?)", _KB)


def reset() -> Path:
    """Put the shop back as it was seeded: the seed orders as they were, no refunds. Returns the database's path.

    Safe while workers run: one transaction, and a tool call waits for it (refunds already
    recorded are forgotten, so the demo's idempotency keys start afresh as well).
    """
    conn = connect()
    try:
        with _lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM refunds")
                conn.execute("DELETE FROM orders")
                conn.execute("DELETE FROM kb")
                _seed(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    finally:
        conn.close()
    return db_path()


def _order(conn: sqlite3.Connection, order_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id.lower(),)).fetchone()
    if row is None:
        raise ToolError(f"order {order_id} does not exist", retryable=False)
    return dict(row)


def refunds_for(order_id: str) -> list[dict[str, Any]]:
    """Every refund recorded for ``order_id`` (for tests and operators)."""
    with connect() as conn:
        return [dict(r) for r in conn.execute("SELECT * FROM refunds WHERE order_id = ? ORDER BY refund_id", (order_id,))]


@tool(read_only=True)
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order by id (e.g. 'ord-789'): customer, item, total, currency, status and refunds so far."""
    conn = connect()
    try:
        order = _order(conn, order_id)
        refunded = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE order_id = ?", (order["order_id"],)).fetchone()[0]
        order["refunded"] = refunded
        return order
    finally:
        conn.close()


@tool(read_only=True)
def search_kb(query: str) -> list[dict[str, str]]:
    """Search the support knowledge base (policies, shipping, warranty); returns matching articles."""
    words = [w for w in query.lower().split() if len(w) > 2]
    conn = connect()
    try:
        rows = [dict(r) for r in conn.execute("SELECT slug, title, body FROM kb ORDER BY slug")]
    finally:
        conn.close()
    scored = sorted(
        ((sum(w in (r["title"] + " " + r["body"]).lower() for w in words), r) for r in rows),
        key=lambda pair: -pair[0],
    )
    return [r for score, r in scored if score > 0][:3] or rows[:1]


@tool(risk="medium", amount_arg="amount", currency_arg="currency", idempotent=True)
def issue_refund(order_id: str, amount: float, currency: str = "USD") -> dict[str, Any]:
    """Refund part or all of an order to the original payment method. Amount in the order's currency."""
    ctx = tool_context()
    conn = connect()
    try:
        order = _order(conn, order_id)
        if amount <= 0:
            raise ToolError("amount must be positive", retryable=False)
        if currency.upper() != order["currency"]:
            raise ToolError(f"order {order_id} is in {order['currency']}, not {currency}", retryable=False)
        conn.execute("BEGIN IMMEDIATE")
        try:
            existing = conn.execute("SELECT * FROM refunds WHERE idempotency_key = ?", (ctx.idempotency_key,)).fetchone()
            if existing is not None:
                conn.execute("COMMIT")
                return {**dict(existing), "status": "refunded", "replayed": True}
            refunded = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE order_id = ?", (order["order_id"],)).fetchone()[0]
            if refunded + amount > order["total"] + 1e-9:
                conn.execute("ROLLBACK")
                raise ToolError(
                    f"refund of {amount:g} would exceed the order total {order['total']:g} (already refunded {refunded:g})",
                    retryable=False,
                )
            cur = conn.execute(
                "INSERT INTO refunds (order_id, amount, currency, idempotency_key) VALUES (?,?,?,?)",
                (order["order_id"], amount, order["currency"], ctx.idempotency_key),
            )
            conn.execute("COMMIT")
        except ToolError:
            raise
        except Exception:
            conn.execute("ROLLBACK")
            raise
        return {"refund_id": cur.lastrowid, "order_id": order["order_id"], "amount": amount, "currency": order["currency"], "status": "refunded"}
    finally:
        conn.close()


@tool(destructive=True, idempotent=True)
def cancel_order(order_id: str) -> dict[str, Any]:
    """Cancel an order that has not shipped yet."""
    conn = connect()
    try:
        order = _order(conn, order_id)
        if order["status"] == "cancelled":
            return {"order_id": order["order_id"], "status": "cancelled", "note": "already cancelled"}
        if order["status"] in ("shipped", "delivered"):
            raise ToolError(f"order {order_id} has already {order['status']}; it cannot be cancelled", retryable=False)
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (order["order_id"],))
        return {"order_id": order["order_id"], "status": "cancelled"}
    finally:
        conn.close()


def dump() -> str:
    """The shop's orders and refunds as JSON (``python -m durable_agent.demo.shop``)."""
    conn = connect()
    try:
        return json.dumps(
            {
                "orders": [dict(r) for r in conn.execute("SELECT * FROM orders ORDER BY order_id")],
                "refunds": [dict(r) for r in conn.execute("SELECT * FROM refunds ORDER BY refund_id")],
            },
            indent=2,
        )
    finally:
        conn.close()


if __name__ == "__main__":
    print(dump())
