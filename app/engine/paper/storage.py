"""The paper venue's SQLite file: orders, executions, submit attempts.

Every execution is committed before any poll reports it. Matching writes in a
``BEGIN IMMEDIATE`` transaction that re-reads the orders first (``due_orders``), so
several processes sharing the file never execute a tick twice, and a process killed at
any point leaves each order's matched ticks either all recorded or not at all.
Attempts and refusals are recorded too, so they carry over to a restarted process.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final
from uuid import UUID

from app.engine.paper.matching import Fill, OrderState, execution_id_for
from app.engine.venue import (
    Execution,
    ExecutionReport,
    PermanentVenueError,
    VenueOrder,
    VenueRejection,
)

__all__ = ["BATCH", "PaperStore"]

# Orders per statement/transaction: under SQLite's bound-variable limit, and short.
BATCH: Final = 500

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS orders (
        order_id     TEXT PRIMARY KEY,
        -- NULL order fields: a tombstone left by cancelling an order never submitted
        symbol       TEXT,
        side         TEXT,
        quantity     INTEGER,
        order_type   TEXT,
        price        TEXT,
        status       TEXT NOT NULL
                     CHECK (status IN ('open', 'filled', 'cancelled', 'rejected')),
        filled       INTEGER NOT NULL DEFAULT 0,
        triggered    INTEGER NOT NULL DEFAULT 0,
        next_tick    INTEGER NOT NULL DEFAULT 0,
        exec_count   INTEGER NOT NULL DEFAULT 0,
        accepted_at  TEXT,
        reject_code  TEXT,
        reject_message TEXT,
        stop_price   TEXT,
        time_in_force TEXT NOT NULL DEFAULT 'GTC'
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS executions (
        execution_id TEXT PRIMARY KEY,
        order_id     TEXT NOT NULL REFERENCES orders (order_id),
        seq          INTEGER NOT NULL,
        tick         INTEGER NOT NULL,
        quantity     INTEGER NOT NULL,
        price        TEXT NOT NULL,
        commission   TEXT NOT NULL,
        timestamp    TEXT NOT NULL,
        UNIQUE (order_id, seq)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS submit_attempts (
        order_id TEXT PRIMARY KEY,
        attempts INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS orders_open ON orders (order_id) WHERE status = 'open'",
    """
    CREATE TABLE IF NOT EXISTS venue_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)


# Columns added since the first files were written: (name, definition), added to an older file
# when it is opened (its orders are GTC and have no stop price).
_ADDED_COLUMNS: Final = (
    ("stop_price", "TEXT"),
    ("time_in_force", "TEXT NOT NULL DEFAULT 'GTC'"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    present = {row["name"] for row in conn.execute("PRAGMA table_info(orders)")}
    for name, definition in _ADDED_COLUMNS:
        if name not in present:
            conn.execute(f"ALTER TABLE orders ADD COLUMN {name} {definition}")


def _order_state(row: sqlite3.Row) -> OrderState:
    return OrderState(
        order_id=UUID(row["order_id"]),
        symbol=row["symbol"],
        side=row["side"],
        quantity=row["quantity"],
        order_type=row["order_type"],
        price=None if row["price"] is None else Decimal(row["price"]),
        status=row["status"],
        filled=row["filled"],
        stop_price=None if row["stop_price"] is None else Decimal(row["stop_price"]),
        time_in_force=row["time_in_force"],
        triggered=bool(row["triggered"]),
        next_tick=row["next_tick"],
        exec_count=row["exec_count"],
        accepted_at=datetime.fromisoformat(row["accepted_at"]),
    )


class PaperStore:
    """One connection to the file, used from worker threads one at a time."""

    def __init__(self, path: Path, now: Callable[[], datetime]) -> None:
        """Opens (creating) the file; ``now`` dates its records when it is new."""
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._connect(now)

    def _connect(self, now: Callable[[], datetime]) -> sqlite3.Connection:
        # isolation_level=None: transactions are only the explicit BEGINs below.
        conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a reported execution must survive a power cut, not just a SIGKILL.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                _add_missing_columns(conn)
                conn.execute(
                    "INSERT OR IGNORE INTO venue_state (key, value) VALUES ('records_since', ?)",
                    (now().isoformat(),),
                )
                (since,) = conn.execute(
                    "SELECT value FROM venue_state WHERE key = 'records_since'"
                ).fetchone()
                self.records_since = datetime.fromisoformat(since)
                """When this file's records begin: it cannot know an order routed earlier."""
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        """``mode`` IMMEDIATE takes the write lock up front, so the rows read inside
        cannot change before the writes; DEFERRED gives a consistent read snapshot."""
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the paper venue is closed")
            conn = self._conn
            conn.execute(f"BEGIN {mode}")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # --- within a transaction -------------------------------------------------------------

    @staticmethod
    def read_order(conn: sqlite3.Connection, order_id: UUID) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM orders WHERE order_id = ?", (str(order_id),)
        ).fetchone()
        return row

    @staticmethod
    def count_attempt(conn: sqlite3.Connection, order_id: UUID) -> int:
        """This submit's attempt number for the order (1-based)."""
        # fetchall: a RETURNING statement left half-read would hold up the COMMIT.
        [row] = conn.execute(
            "INSERT INTO submit_attempts (order_id, attempts) VALUES (?, 1) "
            "ON CONFLICT (order_id) DO UPDATE SET attempts = attempts + 1 "
            "RETURNING attempts",
            (str(order_id),),
        ).fetchall()
        return int(row["attempts"])

    @staticmethod
    def insert_order(
        conn: sqlite3.Connection,
        order: VenueOrder,
        status: str,
        tick: int,
        accepted_at: datetime,
        rejection: PermanentVenueError | None,
    ) -> None:
        conn.execute(
            "INSERT INTO orders (order_id, symbol, side, quantity, order_type, price, status,"
            " next_tick, accepted_at, reject_code, reject_message, stop_price, time_in_force)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(order.order_id),
                order.symbol,
                str(order.side),
                # Refused orders may carry junk; stored for the record only.
                order.quantity if isinstance(order.quantity, int) else None,
                str(order.order_type),
                None if order.price is None else str(order.price),
                status,
                tick,
                accepted_at.isoformat(),
                None if rejection is None else rejection.code,
                None if rejection is None else rejection.message,
                None if order.stop_price is None else str(order.stop_price),
                str(order.time_in_force),
            ),
        )

    @staticmethod
    def insert_tombstone(conn: sqlite3.Connection, order_id: UUID, tick: int, at: datetime) -> None:
        """A cancelled order the venue never saw, so that a submit still in flight can never
        execute later."""
        conn.execute(
            "INSERT INTO orders (order_id, status, next_tick, accepted_at)"
            " VALUES (?, 'cancelled', ?, ?)",
            (str(order_id), tick, at.isoformat()),
        )

    @staticmethod
    def mark_cancelled(conn: sqlite3.Connection, order_id: UUID) -> None:
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (str(order_id),))

    @staticmethod
    def open_order_ids(conn: sqlite3.Connection) -> list[UUID]:
        return [
            UUID(row["order_id"])
            for row in conn.execute("SELECT order_id FROM orders WHERE status = 'open'")
        ]

    @staticmethod
    def due_orders(
        conn: sqlite3.Connection, order_ids: Sequence[UUID], now: int
    ) -> dict[UUID, OrderState]:
        """Those of the orders that are open with ticks due up to ``now``."""
        keys = [str(order_id) for order_id in order_ids]
        rows = conn.execute(
            f"SELECT * FROM orders WHERE order_id IN ({', '.join('?' * len(keys))})"
            " AND status = 'open' AND next_tick <= ?",
            [*keys, now],
        )
        return {UUID(row["order_id"]): _order_state(row) for row in rows}

    @staticmethod
    def record(conn: sqlite3.Connection, after: OrderState, fills: list[Fill]) -> None:
        order_id = str(after.order_id)
        conn.executemany(
            "INSERT INTO executions (execution_id, order_id, seq, tick, quantity, price,"
            " commission, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    str(execution_id_for(after.order_id, fill.seq)),
                    order_id,
                    fill.seq,
                    fill.tick,
                    fill.quantity,
                    str(fill.price),
                    str(fill.commission),
                    fill.timestamp.isoformat(),
                )
                for fill in fills
            ],
        )
        conn.execute(
            "UPDATE orders SET status = ?, filled = ?, triggered = ?, next_tick = ?,"
            " exec_count = ? WHERE order_id = ?",
            (
                after.status,
                after.filled,
                int(after.triggered),
                after.next_tick,
                after.exec_count,
                order_id,
            ),
        )

    # --- reports ------------------------------------------------------------------------------

    def reports(
        self,
        order_ids: list[UUID],
        venue: str,
        market_price: Callable[[str], Decimal | None] | None = None,
    ) -> list[ExecutionReport]:
        """One report per known order (at most BATCH of them), in the order asked, each with
        ``market_price`` of its symbol when given."""
        keys = [str(order_id) for order_id in order_ids]
        marks = ", ".join("?" * len(keys))
        with self.transaction("DEFERRED") as conn:
            orders = {
                row["order_id"]: row
                for row in conn.execute(
                    f"SELECT order_id, symbol, status, reject_code, reject_message FROM orders"
                    f" WHERE order_id IN ({marks})",
                    keys,
                )
            }
            executions: dict[str, list[Execution]] = {}
            for row in conn.execute(
                f"SELECT * FROM executions WHERE order_id IN ({marks}) ORDER BY order_id, seq",
                keys,
            ):
                executions.setdefault(row["order_id"], []).append(
                    Execution(
                        execution_id=UUID(row["execution_id"]),
                        order_id=UUID(row["order_id"]),
                        quantity=row["quantity"],
                        price=Decimal(row["price"]),
                        commission=Decimal(row["commission"]),
                        venue=venue,
                        timestamp=datetime.fromisoformat(row["timestamp"]),
                    )
                )
        reports: list[ExecutionReport] = []
        for key, order_id in zip(keys, order_ids, strict=True):
            order = orders.get(key)
            if order is None:
                continue
            rejected = (
                VenueRejection(code=order["reject_code"], message=order["reject_message"] or "")
                if order["status"] == "rejected"
                else None
            )
            reports.append(
                ExecutionReport(
                    order_id=order_id,
                    executions=tuple(executions.get(key, ())),
                    rejected=rejected,
                    done=order["status"] != "open",
                    # A tombstone (a cancel of an order never seen) has no symbol.
                    market_price=(
                        market_price(order["symbol"])
                        if market_price is not None and order["symbol"] is not None
                        else None
                    ),
                )
            )
        return reports
