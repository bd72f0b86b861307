"""The latest price the venue reported per symbol, stored for positions (migration 012).

A venue's execution reports may carry the current price of the order's symbol (the paper
venue: the price of the current tick). The engine stores the newest per symbol in
``market_prices``, as service_role, the only role that may write it; positions read it under
each reader's row level security. Written only when it changed since this worker last wrote
it, so a poll of unchanged prices costs no transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal

from sqlalchemy import text

from app.db.session import Database
from app.engine import order_rows

__all__ = ["MarketPrices"]

log = logging.getLogger(__name__)

_UPSERT = text(
    "INSERT INTO public.market_prices (symbol, price, reported_at)"
    " SELECT s, p, now() FROM unnest(CAST(:symbols AS text[]), CAST(:prices AS numeric[]))"
    " AS reported(s, p)"
    " ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, reported_at = excluded.reported_at"
    " WHERE market_prices.price <> excluded.price"
)


class MarketPrices:
    """One worker's writer of the prices its venue reports."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._written: dict[str, Decimal] = {}

    async def record(self, prices: Mapping[str, Decimal]) -> None:
        changed = {s: p for s, p in prices.items() if self._written.get(s) != p}
        if not changed:
            return
        try:
            async with order_rows.transaction(self.database) as tx:
                await tx.conn.execute(
                    _UPSERT, {"symbols": list(changed), "prices": list(changed.values())}
                )
        except Exception:
            # Prices only inform positions; the fills must still be recorded. Written again
            # at the next poll, since nothing was remembered as written.
            log.exception("storing the venue's prices of %d symbols failed", len(changed))
            return
        self._written.update(changed)
