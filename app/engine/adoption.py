"""Adoption: taking over the orders in flight that no live worker holds.

An order in flight is owned by exactly one live worker, which holds its advisory-lock
lease; an approved, non-final order whose lease is free has been abandoned, and any worker
adopts it (a RECOVERED row) and carries on from its state. The rule and its consequences
are set out in ``app.engine.leases``.

A takeover is logged by what it says to an operator: orders left in flight before this
worker started (a restart, a deploy, the dev seed) are resumed as a starting worker's
routine (INFO); an order a peer left while this worker ran means that peer crashed or lost
its connection (WARNING). The RECOVERED row records both.
"""

from __future__ import annotations

import logging
from uuid import UUID

from app.db.session import Database
from app.engine import order_rows
from app.engine.holdings import Holdings
from app.engine.leases import FIND_ABANDONED, Leases
from app.orders import ledger as writes

__all__ = ["Adoption"]

log = logging.getLogger(__name__)


class Adoption:
    """One worker's recovery stage; see the module docstring."""

    def __init__(
        self,
        database: Database,
        *,
        worker_id: str,
        retry_base: float,
        batch_size: int,
        holdings: Holdings,
        leases: Leases,
    ) -> None:
        self.database = database
        self.worker_id = worker_id
        self.retry_base = retry_base
        self.batch_size = batch_size
        self.holdings = holdings
        self.leases = leases
        self._left_before_start: set[UUID] = set()
        """In-flight orders no live worker owned when this one started."""
        self._looked_for_left = False

    async def note_left_before_start(self) -> int:
        """Once, before this worker takes its first lease: every in-flight order without a
        live owner then was left by workers that stopped before this one started."""
        if not self._looked_for_left:
            async with order_rows.transaction(self.database, read_only=True) as tx:
                found = await tx.conn.execute(FIND_ABANDONED, {"owned": [], "limit": 1_000_000})
                self._left_before_start = set(found.scalars())
            self._looked_for_left = True
        return 0

    async def adopt_abandoned(self) -> int:
        """Adopt abandoned orders, as many as admission capacity leaves room for."""
        room = min(self.batch_size, self.holdings.room)
        if room <= 0:
            return 0
        async with order_rows.transaction(self.database, read_only=True) as tx:
            ids: list[UUID] = list(
                (
                    await tx.conn.execute(
                        FIND_ABANDONED, {"owned": list(self.holdings.owned), "limit": room}
                    )
                ).scalars()
            )
        work = 0
        for order_id in ids:
            if not self.leases.connected:
                break  # leases lost mid-pass: the next pass starts over
            try:
                work += await self._adopt(order_id)
            except Exception:
                log.exception("order %s: recovery failed; will retry", order_id)
        return work

    async def _adopt(self, order_id: UUID) -> int:
        if not await self.leases.acquire(order_id):
            return 0  # its owner is alive after all (or shares the lease key)
        adopted = False
        try:
            async with order_rows.transaction(self.database) as tx:
                order = await order_rows.lock(tx, order_id, self.retry_base)
                recover = order is not None and order.in_flight
                if order is not None and recover:
                    where = "at the venue" if order.routed_at else "in flight"
                    reason = (
                        f"resumed by worker {self.worker_id}: the previous worker stopped"
                        f" while the order was {where}"
                    )
                    await writes.recover(tx, order_id, reason=reason)
            adopted = recover  # only now is the RECOVERED row committed
        finally:
            # Owned only once the RECOVERED row is committed, so every takeover is logged.
            if adopted:
                self.holdings.add(order_id)
            elif self.leases.connected:
                await self.leases.release(order_id)
        if adopted:
            if order_id in self._left_before_start:
                log.info("order %s: resumed (left in flight before this worker started)", order_id)
            else:
                log.warning("order %s: recovered from an interrupted worker", order_id)
            self._left_before_start.discard(order_id)
            return 1
        return 0
