"""``PaperVenue``: the ``Venue`` the engine uses when no broker is configured.

Prices come from ``prices`` (one per symbol per tick, ``tick = floor(unix_time /
tick_seconds)`` read from the clock, so separate processes agree on the price at a given
moment), fills from ``matching``, refusals from ``failures``, and everything is kept in
``storage``'s SQLite file, which several processes may share.

Matching happens when orders are polled, cancelled or ``advance`` is called, one tick at a
time from the order's acceptance up to the current tick, so fills depend only on the order
and the clock, never on how often anybody polls. Commission per execution:
``max(minimum, per_share * quantity)``, to the cent.

Time in force: GTC and DAY orders work until filled or cancelled (the engine cancels them at
their expiry); IOC and FOK orders are matched at once, when accepted, on the acceptance tick
(``matching``), and are then done: filled, or cancelled with what that tick gave (IOC) or
nothing (FOK).

Submitting a known order id does nothing (the terms first accepted stay; fills are not
reset). A refusal is recorded: re-submitting a refused order raises the same
``PermanentVenueError`` and polls report it as rejected. Cancelling executes what was
already due, then stops the order; cancelling an id the venue never saw leaves a cancelled
tombstone, so a submit of it still in flight can never execute afterwards.

All processes sharing a file must use the same seed, prices, liquidity and tick length;
the file does not record them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from app.engine.paper.failures import FailureInjection, invalid
from app.engine.paper.matching import AT_ONCE, Fill, MatchingTerms, OrderState, simulate
from app.engine.paper.prices import CENT, ReferencePrices
from app.engine.paper.storage import BATCH, PaperStore
from app.engine.venue import ExecutionReport, PermanentVenueError, VenueError, VenueOrder

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["PaperVenue"]


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
        ``max_catch_up_ticks`` bounds how many past ticks one match replays (older
        unmatched ticks are skipped, as if the venue had been closed, so a long-idle file
        does not replay days of ticks).
        """
        if liquidity < 1:
            raise ValueError(f"liquidity must be at least 1, got {liquidity}")
        if not tick_seconds > 0:
            raise ValueError(f"tick_seconds must be positive, got {tick_seconds}")
        if commission_per_share < 0 or commission_minimum < 0:
            raise ValueError("commissions must not be negative")
        self._failures = FailureInjection(
            seed=seed,
            transient_failure_rate=transient_failure_rate,
            permanent_failure_rate=permanent_failure_rate,
            fail_transient_times=dict(fail_transient_times or {}),
            reject_symbols=dict(reject_symbols or {}),
        )
        if max_catch_up_ticks < 1:
            raise ValueError(f"max_catch_up_ticks must be at least 1, got {max_catch_up_ticks}")

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
        self._prices = ReferencePrices(seed, None if prices_csv is None else Path(prices_csv))
        self._terms = MatchingTerms(
            price_at=self._prices.at,
            tick_start=self.tick_start,
            commission=self.commission,
            liquidity=liquidity,
            max_catch_up_ticks=max_catch_up_ticks,
        )
        self._store = PaperStore(self.path, self._clock)
        self.records_since: datetime = self._store.records_since
        """When this venue's records begin: it cannot know an order routed earlier."""

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
        return self._prices.at(symbol, self.current_tick() if tick is None else tick)

    def commission(self, quantity: int) -> Decimal:
        amount = max(self.commission_minimum, self.commission_per_share * quantity)
        return max(Decimal(0), amount).quantize(CENT, rounding=ROUND_HALF_UP)

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
        await asyncio.to_thread(self._store.close)

    # --- submit and cancel --------------------------------------------------------------

    def _submit_sync(self, order: VenueOrder) -> None:
        accepted_at = self._now()
        tick = self._tick_of(accepted_at)
        outcome: VenueError | None = None
        with self._store.transaction("IMMEDIATE") as conn:
            known = self._store.read_order(conn, order.order_id)
            if known is not None:
                if known["status"] == "rejected":
                    outcome = PermanentVenueError(known["reject_code"], known["reject_message"])
            else:
                attempt = self._store.count_attempt(conn, order.order_id)
                outcome = self._refusal(order, attempt)
                if isinstance(outcome, PermanentVenueError):
                    self._store.insert_order(conn, order, "rejected", tick, accepted_at, outcome)
                elif outcome is None:
                    self._store.insert_order(conn, order, "open", tick, accepted_at, None)
        # Raised only after COMMIT: the attempt count and any refusal must be kept.
        if outcome is not None:
            raise outcome
        if order.time_in_force in AT_ONCE:
            # At once: matched now, on the acceptance tick, and done (see matching).
            self._match_orders([order.order_id], tick)

    def _refusal(self, order: VenueOrder, attempt: int) -> VenueError | None:
        try:
            self._check_symbol(order.symbol)
        except PermanentVenueError as error:
            return error
        return invalid(order) or self._failures.refusal(order, attempt)

    def _cancel_sync(self, order_id: UUID) -> bool:
        # Executions already due (ticks up to now) happen before the cancel lands.
        now = self.current_tick()
        self._match_orders([order_id], now)
        with self._store.transaction("IMMEDIATE") as conn:
            row = self._store.read_order(conn, order_id)
            if row is None:
                self._store.insert_tombstone(conn, order_id, now, self._now())
                return True
            status: str = row["status"]
            if status == "open":
                self._store.mark_cancelled(conn, order_id)
                return True
            return status == "cancelled"

    # --- matching -----------------------------------------------------------------------

    def _advance_all_sync(self) -> None:
        now = self.current_tick()
        with self._store.transaction("DEFERRED") as conn:
            open_ids = self._store.open_order_ids(conn)
        self._match_orders(open_ids, now)

    def _match_orders(self, order_ids: Sequence[UUID], now: int) -> None:
        """Execute the orders' due ticks, each tick at most once across all processes.

        Fills are worked out before taking the write lock (prices can be slow to
        compute over a long gap) and applied only to orders nobody matched in
        between; the others are worked out again under the lock. One write
        transaction per batch keeps a poll of many orders to one fsync.
        """
        for start in range(0, len(order_ids), BATCH):
            batch = order_ids[start : start + BATCH]
            with self._store.transaction("DEFERRED") as conn:
                seen = self._store.due_orders(conn, batch, now)
            if not seen:
                continue
            plans = {order_id: self._simulate(state, now) for order_id, state in seen.items()}
            with self._store.transaction("IMMEDIATE") as conn:
                for order_id, current in self._store.due_orders(conn, list(seen), now).items():
                    if current == seen[order_id]:
                        after, fills = plans[order_id]
                    else:
                        after, fills = self._simulate(current, now)
                    self._store.record(conn, after, fills)

    def _simulate(self, state: OrderState, now: int) -> tuple[OrderState, list[Fill]]:
        return simulate(state, now, self._terms)

    # --- reporting ----------------------------------------------------------------------

    def _poll_sync(self, order_ids: list[UUID]) -> list[ExecutionReport]:
        now = self.current_tick()
        self._match_orders(order_ids, now)
        reports: list[ExecutionReport] = []
        for start in range(0, len(order_ids), BATCH):
            reports.extend(
                self._store.reports(
                    order_ids[start : start + BATCH],
                    self.name,
                    # A refused order's symbol may be one the venue does not price.
                    lambda symbol: (
                        self._prices.at(symbol, now) if self._prices.knows(symbol) else None
                    ),
                )
            )
        return reports
