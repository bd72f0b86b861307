"""The engine's queue as an operator sees it: orders not final yet, per stage.

Counted in the database as service_role when ``/metrics`` is scraped; ``app.metrics``
is handed ``count`` rather than importing the engine, so that the metrics, which the
database and the engine count into, import neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from app.db.session import Database
from app.engine import order_rows
from app.models.order import OrderStatusEnum as Status
from app.orders import lifecycle

__all__ = ["ENGINE_QUEUE", "QUEUE_COUNT_SECONDS", "QUEUE_STAGES", "count"]

log = logging.getLogger(__name__)

# Orders the engine has yet to finish, per stage: one statement, read as service_role.
ENGINE_QUEUE: Final = text(
    f"""
    SELECT count(*) FILTER (WHERE approved_at IS NULL AND status = '{Status.PENDING}') AS new,
           count(*) FILTER (WHERE approved_at IS NOT NULL AND routed_at IS NULL) AS approved,
           count(*) FILTER (WHERE routed_at IS NOT NULL) AS routed
      FROM orders WHERE status IN {lifecycle.sql_list(lifecycle.OPEN)}
    """
)
QUEUE_STAGES: Final = ("new", "approved", "routed")
QUEUE_COUNT_SECONDS: Final = 2.0


async def count(database: Database) -> Mapping[str, int] | None:
    """The orders not final yet, per stage; None when they cannot be counted now."""
    pool = database.engine.sync_engine.pool
    if isinstance(pool, QueuePool) and pool.checkedin() == 0 and pool.checkedout() >= pool.size():
        return None  # every connection is busy: a scrape must not queue behind requests
    try:
        async with asyncio.timeout(QUEUE_COUNT_SECONDS):
            async with order_rows.transaction(database, read_only=True) as tx:
                row = await tx.first(ENGINE_QUEUE)
    except Exception as error:  # not migrated, unreachable: /readyz says which
        log.debug("metrics: engine queue not counted: %s", error)
        return None
    return None if row is None else {stage: int(row[stage]) for stage in QUEUE_STAGES}
