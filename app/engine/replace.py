"""Replacing an order: the engine's side of migration 006's replace protocol.

A trader asks to replace order O by inserting N with ``replaces_id`` = O. N waits, PENDING
and not approvable, for the engine; admission skips both (``order_rows.CLAIM_NEW``), and the
owner of O keeps recording O's fills but leaves an O the venue stopped to this module. For
each waiting N, oldest first, any worker:

1. cancels O at the venue when O was approved (it is there, or on its way: a cancel of an
   order the venue never saw leaves a tombstone, so a submit still in flight never executes);
2. under O's and N's row locks, records what the venue executed of O until the cancel;
3. confirms, when ``lifecycle`` allows it (O still open, no fill of O since N was
   requested): O becomes REPLACED with ``replaced_by_id`` = N, and N is from then on an
   ordinary order, admitted like any new one (in the same pass: this stage runs first);
4. otherwise rejects N: ``FILLED_FIRST`` when O filled after N was requested (a fill the
   cancel's report brought included), ``ORIGINAL_CLOSED`` when O ended otherwise first
   (cancelled by its trader, expired, rejected). O's fills stand; the rest of an O that was
   stopped at the venue in step 1 is cancelled in the same transaction.

Workers racing on one N are harmless: the venue cancel is idempotent and each step re-reads
both orders under their locks; the database's trigger refuses a second confirmation.
"""

from __future__ import annotations

import logging
from typing import Final
from uuid import UUID

from app.db.session import Database
from app.engine import order_rows
from app.engine.order_rows import OrderRow
from app.engine.venue import Venue, report_of
from app.models.order import OrderStatusEnum as Status
from app.orders import ledger as writes
from app.orders import lifecycle
from app.orders.lifecycle import Change

__all__ = ["ORIGINAL_CLOSED", "Replacements"]

log = logging.getLogger(__name__)

ORIGINAL_CLOSED: Final = "ORIGINAL_CLOSED"
"""The error code of a replacement rejected because the order it would replace ended
(cancelled, expired, rejected) before the engine could confirm it."""


class Replacements:
    """One worker's replace stage; see the module docstring."""

    def __init__(
        self, database: Database, venue: Venue, *, retry_base: float, batch_size: int
    ) -> None:
        self.database = database
        self.venue = venue
        self.retry_base = retry_base
        self.batch_size = batch_size

    async def settle_waiting(self) -> int:
        """Confirm or reject the waiting replacements; returns the orders changed."""
        async with order_rows.transaction(self.database, read_only=True) as tx:
            rows = (
                await tx.conn.execute(order_rows.WAITING_REPLACEMENTS, {"limit": self.batch_size})
            ).all()
        work = 0
        for row in rows:
            try:
                work += await self.settle(row.replaces_id, row.id)
            except Exception:
                log.exception(
                    "replacement %s of order %s: failed; will retry", row.id, row.replaces_id
                )
        return work

    async def settle(self, original_id: UUID, replacement_id: UUID) -> int:
        """Steps 1-4 of the module docstring for one replacement."""
        async with order_rows.transaction(self.database, read_only=True) as tx:
            rows = await tx.conn.execute(
                order_rows.READ_MANY, order_rows.row_params(self.retry_base, ids=[original_id])
            )
            approved = any(row.approved_at is not None for row in rows)
        report = None
        if approved:
            # Outside any transaction: the venue call never holds row locks.
            await self.venue.cancel(original_id)
            report = await report_of(self.venue, original_id)
        async with order_rows.transaction(self.database) as tx:
            # O before N, as the database's triggers lock them.
            original = await order_rows.lock(tx, original_id, self.retry_base)
            replacement = await order_rows.lock(tx, replacement_id, self.retry_base)
            if (
                original is None
                or replacement is None
                or replacement.status is not Status.PENDING
                or not replacement.awaiting_confirmation
            ):
                return 0  # withdrawn by its trader, or settled by another worker
            if original.approved_at is not None and not approved:
                return 0  # approved meanwhile: the next pass stops it at the venue first
            if report is not None and report.executions:
                original, _ = await order_rows.record_fills(
                    tx, original, report.executions, self.retry_base
                )
            if lifecycle.allows(original.state, Change.REPLACE):
                await writes.confirm_replace(tx, original_id, replacement=replacement_id)
                outcome = "confirmed"
            else:
                code, reason = _refusal(original)
                await writes.reject_replacement(tx, replacement_id, code=code, reason=reason)
                if approved and not original.final:
                    await order_rows.close_order(
                        tx,
                        original,
                        Status.CANCELLED,
                        f"cancelled at the venue for replacement {replacement_id}, which was"
                        " rejected: this order filled first",
                        None,
                    )
                outcome = f"rejected ({code})"
        log.info("replacement %s of order %s: %s", replacement_id, original_id, outcome)
        return 1


def _refusal(original: OrderRow) -> tuple[str, str]:
    """Why a replacement of ``original`` cannot be confirmed: its error code and reason."""
    if original.filled_since_replacement:
        return (
            writes.FILLED_FIRST,
            f"order {original.id} filled after this replacement was requested: its fills stand",
        )
    return (
        ORIGINAL_CLOSED,
        f"order {original.id} is {original.status}: it can no longer be replaced",
    )
