"""A paper-trading venue: simulated prices and fills, state in a SQLite file.

Prices
    Each symbol has a reference price per *tick*, where
    ``tick = floor(unix_time / tick_seconds)`` read from the clock, so separate
    processes agree on the price at a given moment. The price at a tick comes
    from ``app.engine.prices``: a seeded random walk by default, or the series
    of a ``prices_csv`` file (symbols absent from it are unknown to the venue).

Matching happens when orders are polled, cancelled or ``advance`` is called,
one tick at a time from the order's acceptance up to the current tick, so fills
depend only on the order and the clock, never on how often anybody polls (up to
``max_catch_up_ticks``: older unmatched ticks are skipped, as if the venue had
been closed, so a long-idle file does not replay days of ticks):

* MARKET fills at the tick's reference price.
* LIMIT BUY fills on ticks with price <= limit, LIMIT SELL on price >= limit, at
  the reference price (the limit or better).
* STOP BUY triggers on the first tick with price >= trigger, STOP SELL with
  price <= trigger, and from that tick on fills as MARKET.
* At most ``liquidity`` shares per order per tick, so large orders fill in parts.
* Commission per execution: ``max(minimum, per_share * quantity)``, to the cent.

Execution ids are ``uuid5(order_id, "execution:<seq>")`` (seq = 1, 2, ...) and
every execution is committed before any poll reports it. Matching writes in a
``BEGIN IMMEDIATE`` transaction that re-reads the orders first, so several
processes sharing the file never execute a tick twice, and a process killed at
any point leaves each order's matched ticks either all recorded or not at all.

Submitting a known order id does nothing (the terms first accepted stay; fills
are not reset). Cancelling executes what was already due, then stops the order;
cancelling an id the venue never saw leaves a cancelled tombstone, so a submit
of it still in flight can never execute afterwards.

Failure injection (for tests and chaos runs), in the order checked on submit:

* invalid orders are refused: ``UNKNOWN_SYMBOL`` (not 1-10 chars of A-Z0-9.-,
  or absent from the prices CSV), ``INVALID_SIDE``, ``INVALID_ORDER_TYPE``,
  ``INVALID_QUANTITY``, ``INVALID_PRICE``;
* ``reject_symbols``: symbol -> code, every order for it is refused with that code;
* ``fail_transient_times``: symbol -> n, each order for it fails its first n
  submit attempts with ``VENUE_BUSY``;
* random: with probability ``transient_failure_rate`` a submit fails with
  ``VENUE_BUSY``, with ``permanent_failure_rate`` the order is refused with
  ``VENUE_REJECTED``; the draw is keyed by ``(seed, order_id, attempt number)``.

Attempts are counted in the file, so they carry over to a restarted process.
A refusal is recorded too: re-submitting a refused order raises the same
``PermanentVenueError`` and polls report it as rejected.

All processes sharing a file must use the same seed, prices, liquidity and tick
length; the file does not record them.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final
from uuid import UUID, uuid5

from app.engine.draws import unit_draw
from app.engine.prices import CENT, ReferencePrices
from app.engine.venue import (
    Execution,
    ExecutionReport,
    PermanentVenueError,
    TransientVenueError,
    VenueError,
    VenueOrder,
    VenueRejection,
)

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["PaperVenue", "execution_id_for"]

_SIDES: Final = frozenset({"BUY", "SELL"})
_ORDER_TYPES: Final = frozenset({"MARKET", "LIMIT", "STOP"})

# Orders per statement/transaction: under SQLite's bound-variable limit, and short.
_BATCH: Final = 500

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
        reject_message TEXT
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


@dataclass(frozen=True)
class _OrderState:
    order_id: UUID
    symbol: str
    side: str
    quantity: int
    order_type: str
    price: Decimal | None
    status: str
    filled: int
    triggered: bool
    next_tick: int
    exec_count: int
    accepted_at: datetime

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> _OrderState:
        return cls(
            order_id=UUID(row["order_id"]),
            symbol=row["symbol"],
            side=row["side"],
            quantity=row["quantity"],
            order_type=row["order_type"],
            price=None if row["price"] is None else Decimal(row["price"]),
            status=row["status"],
            filled=row["filled"],
            triggered=bool(row["triggered"]),
            next_tick=row["next_tick"],
            exec_count=row["exec_count"],
            accepted_at=datetime.fromisoformat(row["accepted_at"]),
        )


@dataclass(frozen=True)
class _Fill:
    seq: int
    tick: int
    quantity: int
    price: Decimal
    commission: Decimal
    timestamp: datetime


def execution_id_for(order_id: UUID, seq: int) -> UUID:
    """The id of an order's ``seq``-th execution (1-based), the same in every process."""
    return uuid5(order_id, f"execution:{seq}")


class PaperVenue:
    """The ``Venue`` used when no broker is configured; see the module docstring."""

    name: str = "Mock"

    def __init__(
        self,
        path: Path | str,
        *,
        seed: int,
        liquidity: int,
        tick_seconds: float,
        commission_per_share: Decimal,
        commission_minimum: Decimal,
        transient_failure_rate: float = 0.0,
        permanent_failure_rate: float = 0.0,
        prices_csv: Path | str | None = None,
        clock: Callable[[], datetime] | None = None,
        fail_transient_times: Mapping[str, int] | None = None,
        reject_symbols: Mapping[str, str] | None = None,
        max_catch_up_ticks: int = 20_000,
    ) -> None:
        """``clock`` returns timezone-aware "now" (default: the system clock).
        ``max_catch_up_ticks`` bounds how many past ticks one match replays.
        """
        if liquidity < 1:
            raise ValueError(f"liquidity must be at least 1, got {liquidity}")
        if not tick_seconds > 0:
            raise ValueError(f"tick_seconds must be positive, got {tick_seconds}")
        if commission_per_share < 0 or commission_minimum < 0:
            raise ValueError("commissions must not be negative")
        for label, rate in (
            ("transient_failure_rate", transient_failure_rate),
            ("permanent_failure_rate", permanent_failure_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be within 0..1, got {rate}")
        if transient_failure_rate + permanent_failure_rate > 1.0:
            raise ValueError("failure rates must not add up to more than 1")
        if max_catch_up_ticks < 1:
            raise ValueError(f"max_catch_up_ticks must be at least 1, got {max_catch_up_ticks}")
        forced = dict(fail_transient_times or {})
        if any(times < 0 for times in forced.values()):
            raise ValueError("fail_transient_times must not be negative")

        self.path = Path(path)
        self.seed = seed
        self.liquidity = liquidity
        self.tick_seconds = tick_seconds
        self.commission_per_share = commission_per_share
        self.commission_minimum = commission_minimum
        self.transient_failure_rate = transient_failure_rate
        self.permanent_failure_rate = permanent_failure_rate
        self.max_catch_up_ticks = max_catch_up_ticks
        self._clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._fail_transient_times = forced
        self._reject_symbols = dict(reject_symbols or {})
        self._prices = ReferencePrices(seed, None if prices_csv is None else Path(prices_csv))
        # One connection per instance, used from worker threads one at a time.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._connect()

    @classmethod
    def from_settings(cls, settings: Settings) -> PaperVenue:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            settings.data_dir / "paper_venue.sqlite3",
            seed=settings.venue_seed,
            liquidity=settings.venue_liquidity,
            tick_seconds=settings.venue_tick_seconds,
            commission_per_share=settings.venue_commission_per_share,
            commission_minimum=settings.venue_commission_minimum,
            transient_failure_rate=settings.venue_transient_failure_rate,
            permanent_failure_rate=settings.venue_permanent_failure_rate,
            prices_csv=settings.venue_prices_csv,
        )

    # --- prices and time ------------------------------------------------------

    def current_tick(self) -> int:
        return self._tick_of(self._now())

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the venue clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    def _tick_of(self, moment: datetime) -> int:
        return math.floor(moment.timestamp() / self.tick_seconds)

    def tick_start(self, tick: int) -> datetime:
        return datetime.fromtimestamp(tick * self.tick_seconds, UTC)

    def reference_price(self, symbol: str, tick: int | None = None) -> Decimal:
        """The price of ``symbol`` at ``tick`` (default: now).

        Raises ``PermanentVenueError("UNKNOWN_SYMBOL")`` for a symbol the venue does
        not trade.
        """
        self._check_symbol(symbol)
        return self._price(symbol, self.current_tick() if tick is None else tick)

    def commission(self, quantity: int) -> Decimal:
        amount = max(self.commission_minimum, self.commission_per_share * quantity)
        return max(Decimal(0), amount).quantize(CENT, rounding=ROUND_HALF_UP)

    def _price(self, symbol: str, tick: int) -> Decimal:
        return self._prices.at(symbol, tick)

    def _check_symbol(self, symbol: str) -> None:
        if not self._prices.knows(symbol):
            raise PermanentVenueError("UNKNOWN_SYMBOL", f"the venue does not trade {symbol!r}")

    # --- Venue ------------------------------------------------------------------

    async def submit(self, order: VenueOrder) -> None:
        await asyncio.to_thread(self._submit_sync, order)

    async def cancel(self, order_id: UUID) -> bool:
        return await asyncio.to_thread(self._cancel_sync, order_id)

    async def poll(self, order_ids: Sequence[UUID]) -> list[ExecutionReport]:
        """Match the given orders up to the current tick, then report on them.

        One report per known order id, in the order asked (duplicates and unknown
        ids left out), each carrying all executions so far, oldest first.
        """
        return await asyncio.to_thread(self._poll_sync, list(dict.fromkeys(order_ids)))

    async def advance(self) -> None:
        """Match every open order up to the current tick (``poll`` does this itself
        for the orders it reports on)."""
        await asyncio.to_thread(self._advance_all_sync)

    async def close(self) -> None:
        # In a thread: the lock may be held by a call waiting on another process's lock.
        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- storage ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
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
                conn.execute(
                    "INSERT OR IGNORE INTO venue_state (key, value) VALUES ('records_since', ?)",
                    (self._clock().isoformat(),),
                )
                (since,) = conn.execute(
                    "SELECT value FROM venue_state WHERE key = 'records_since'"
                ).fetchone()
                self.records_since = datetime.fromisoformat(since)
                """When this venue's records begin: it cannot know an order routed earlier."""
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
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

    @staticmethod
    def _read_order(conn: sqlite3.Connection, order_id: UUID) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM orders WHERE order_id = ?", (str(order_id),)
        ).fetchone()
        return row

    # --- submit and cancel --------------------------------------------------------------

    def _submit_sync(self, order: VenueOrder) -> None:
        accepted_at = self._now()
        tick = self._tick_of(accepted_at)
        outcome: VenueError | None = None
        with self._transaction("IMMEDIATE") as conn:
            known = self._read_order(conn, order.order_id)
            if known is not None:
                if known["status"] == "rejected":
                    outcome = PermanentVenueError(known["reject_code"], known["reject_message"])
            else:
                attempt = self._count_attempt(conn, order.order_id)
                outcome = self._refusal(order, attempt)
                if isinstance(outcome, PermanentVenueError):
                    self._insert_order(conn, order, "rejected", tick, accepted_at, outcome)
                elif outcome is None:
                    self._insert_order(conn, order, "open", tick, accepted_at, None)
        # Raised only after COMMIT: the attempt count and any refusal must be kept.
        if outcome is not None:
            raise outcome

    @staticmethod
    def _count_attempt(conn: sqlite3.Connection, order_id: UUID) -> int:
        # fetchall: a RETURNING statement left half-read would hold up the COMMIT.
        [row] = conn.execute(
            "INSERT INTO submit_attempts (order_id, attempts) VALUES (?, 1) "
            "ON CONFLICT (order_id) DO UPDATE SET attempts = attempts + 1 "
            "RETURNING attempts",
            (str(order_id),),
        ).fetchall()
        return int(row["attempts"])

    def _refusal(self, order: VenueOrder, attempt: int) -> VenueError | None:
        try:
            self._check_symbol(order.symbol)
        except PermanentVenueError as error:
            return error
        invalid = self._invalid(order)
        if invalid is not None:
            return invalid
        if order.symbol in self._reject_symbols:
            return PermanentVenueError(
                self._reject_symbols[order.symbol], f"orders for {order.symbol} are refused"
            )
        if attempt <= self._fail_transient_times.get(order.symbol, 0):
            return TransientVenueError("VENUE_BUSY", f"forced failure, attempt {attempt}")
        draw = unit_draw("submit", self.seed, order.order_id, attempt)
        if draw < self.transient_failure_rate:
            return TransientVenueError("VENUE_BUSY", "the venue is busy, try again later")
        if draw < self.transient_failure_rate + self.permanent_failure_rate:
            return PermanentVenueError("VENUE_REJECTED", "the venue rejected the order")
        return None

    @staticmethod
    def _invalid(order: VenueOrder) -> PermanentVenueError | None:
        if order.side not in _SIDES:
            return PermanentVenueError("INVALID_SIDE", f"side must be BUY or SELL: {order.side!r}")
        if order.order_type not in _ORDER_TYPES:
            return PermanentVenueError(
                "INVALID_ORDER_TYPE", f"unsupported order type {order.order_type!r}"
            )
        if isinstance(order.quantity, bool) or not isinstance(order.quantity, int):
            return PermanentVenueError("INVALID_QUANTITY", "quantity must be an integer")
        if order.quantity <= 0:
            return PermanentVenueError("INVALID_QUANTITY", "quantity must be positive")
        price = order.price
        if order.order_type == "MARKET":
            if price is not None:
                return PermanentVenueError("INVALID_PRICE", "a MARKET order takes no price")
            return None
        if (
            not isinstance(price, Decimal)
            or not price.is_finite()
            or price <= 0
            or price != price.quantize(CENT)
        ):
            return PermanentVenueError(
                "INVALID_PRICE",
                f"a {order.order_type} order needs a positive price in cents, got {price}",
            )
        return None

    @staticmethod
    def _insert_order(
        conn: sqlite3.Connection,
        order: VenueOrder,
        status: str,
        tick: int,
        accepted_at: datetime,
        rejection: PermanentVenueError | None,
    ) -> None:
        conn.execute(
            "INSERT INTO orders (order_id, symbol, side, quantity, order_type, price, status,"
            " next_tick, accepted_at, reject_code, reject_message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )

    def _cancel_sync(self, order_id: UUID) -> bool:
        # Executions already due (ticks up to now) happen before the cancel lands.
        now = self.current_tick()
        self._match_orders([order_id], now)
        with self._transaction("IMMEDIATE") as conn:
            row = self._read_order(conn, order_id)
            if row is None:
                # A tombstone, so that a submit still in flight can never execute later.
                conn.execute(
                    "INSERT INTO orders (order_id, status, next_tick, accepted_at)"
                    " VALUES (?, 'cancelled', ?, ?)",
                    (str(order_id), now, self._now().isoformat()),
                )
                return True
            status: str = row["status"]
            if status == "open":
                conn.execute(
                    "UPDATE orders SET status = 'cancelled' WHERE order_id = ?", (str(order_id),)
                )
                return True
            return status == "cancelled"

    # --- matching -----------------------------------------------------------------------

    def _advance_all_sync(self) -> None:
        now = self.current_tick()
        with self._transaction("DEFERRED") as conn:
            open_ids = [
                UUID(row["order_id"])
                for row in conn.execute("SELECT order_id FROM orders WHERE status = 'open'")
            ]
        self._match_orders(open_ids, now)

    def _match_orders(self, order_ids: Sequence[UUID], now: int) -> None:
        """Execute the orders' due ticks, each tick at most once across all processes.

        Fills are worked out before taking the write lock (prices can be slow to
        compute over a long gap) and applied only to orders nobody matched in
        between; the others are worked out again under the lock. One write
        transaction per batch keeps a poll of many orders to one fsync.
        """
        for start in range(0, len(order_ids), _BATCH):
            batch = order_ids[start : start + _BATCH]
            with self._transaction("DEFERRED") as conn:
                seen = self._due_orders(conn, batch, now)
            if not seen:
                continue
            plans = {order_id: self._simulate(state, now) for order_id, state in seen.items()}
            with self._transaction("IMMEDIATE") as conn:
                for order_id, current in self._due_orders(conn, list(seen), now).items():
                    if current == seen[order_id]:
                        after, fills = plans[order_id]
                    else:
                        after, fills = self._simulate(current, now)
                    self._record(conn, after, fills)

    @staticmethod
    def _due_orders(
        conn: sqlite3.Connection, order_ids: Sequence[UUID], now: int
    ) -> dict[UUID, _OrderState]:
        keys = [str(order_id) for order_id in order_ids]
        rows = conn.execute(
            f"SELECT * FROM orders WHERE order_id IN ({', '.join('?' * len(keys))})"
            " AND status = 'open' AND next_tick <= ?",
            [*keys, now],
        )
        return {UUID(row["order_id"]): _OrderState.from_row(row) for row in rows}

    @staticmethod
    def _record(conn: sqlite3.Connection, after: _OrderState, fills: list[_Fill]) -> None:
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

    def _simulate(self, state: _OrderState, now: int) -> tuple[_OrderState, list[_Fill]]:
        """Pure: the order's state and new fills after matching ticks up to ``now``."""
        filled, triggered, seq = state.filled, state.triggered, state.exec_count
        fills: list[_Fill] = []
        tick = max(state.next_tick, now - self.max_catch_up_ticks + 1)
        limit = state.price
        buying = state.side == "BUY"
        while tick <= now and filled < state.quantity:
            price = self._price(state.symbol, tick)
            if state.order_type == "MARKET":
                executes = True
            elif state.order_type == "LIMIT":
                assert limit is not None
                executes = price <= limit if buying else price >= limit
            else:
                assert limit is not None
                triggered = triggered or (price >= limit if buying else price <= limit)
                executes = triggered
            if executes:
                quantity = min(self.liquidity, state.quantity - filled)
                filled += quantity
                seq += 1
                fills.append(
                    _Fill(
                        seq=seq,
                        tick=tick,
                        quantity=quantity,
                        price=price,
                        commission=self.commission(quantity),
                        timestamp=max(self.tick_start(tick), state.accepted_at),
                    )
                )
            tick += 1
        after = replace(
            state,
            status="filled" if filled >= state.quantity else "open",
            filled=filled,
            triggered=triggered,
            next_tick=max(tick, state.next_tick),
            exec_count=seq,
        )
        return after, fills

    # --- reporting ----------------------------------------------------------------------

    def _poll_sync(self, order_ids: list[UUID]) -> list[ExecutionReport]:
        self._match_orders(order_ids, self.current_tick())
        reports: list[ExecutionReport] = []
        for start in range(0, len(order_ids), _BATCH):
            reports.extend(self._read_reports(order_ids[start : start + _BATCH]))
        return reports

    def _read_reports(self, order_ids: list[UUID]) -> list[ExecutionReport]:
        keys = [str(order_id) for order_id in order_ids]
        marks = ", ".join("?" * len(keys))
        with self._transaction("DEFERRED") as conn:
            orders = {
                row["order_id"]: row
                for row in conn.execute(
                    f"SELECT order_id, status, reject_code, reject_message FROM orders"
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
                        venue=self.name,
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
                )
            )
        return reports
