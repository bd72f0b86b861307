"""Reading the audit trail from the database as compliance_auditor, streaming.

The reader logs in as the API's login role (``authenticator``) and becomes
``compliance_auditor`` for one read-only REPEATABLE READ transaction: that role reads every
audit row and may write nothing, so neither verification nor an export can change the trail
or need the migration owner's credentials, and both see one consistent snapshot however long
they run. Rows come through a server-side cursor in chain order (order_id, seq; the index of
migration 005), a batch at a time, so memory stays bounded whatever the table's size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any
from uuid import UUID

from sqlalchemy import text

from app.auth.claims import Claims
from app.db.session import Database, create_engine
from app.db.urls import async_url
from app.settings import PoolerMode

BATCH = 5000

AUDITOR = Claims(
    role="compliance_auditor",
    sub=None,
    raw=MappingProxyType({"role": "compliance_auditor"}),
    expires_at=None,
)


@dataclass(frozen=True)
class Selection:
    trader: UUID | None = None
    order: UUID | None = None
    since: datetime | None = None
    """Rows at or after this time."""
    until: datetime | None = None
    """Rows before this time."""


def _query(selection: Selection, *, predecessors: bool) -> tuple[str, dict[str, Any]]:
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if selection.trader is not None:
        conditions.append("e.trader_id = :trader")
        params["trader"] = selection.trader
    if selection.order is not None:
        conditions.append("e.order_id = :order_id")
        params["order_id"] = selection.order
    if selection.since is not None:
        conditions.append('e."timestamp" >= :since')
        params["since"] = selection.since
    if selection.until is not None:
        conditions.append('e."timestamp" < :until')
        params["until"] = selection.until
    # The stored hash of the row before each one in its chain, whether selected or not.
    predecessor = (
        ", (SELECT p.hash FROM public.execution_logs p WHERE p.order_id = e.order_id"
        " AND p.seq < e.seq ORDER BY p.seq DESC LIMIT 1) AS predecessor_hash"
        if predecessors
        else ""
    )
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        "SELECT e.seq, e.id, e.order_id, e.trader_id, e.action::text AS action,"
        ' e.status::text AS status, e."timestamp", e.reason, e.retry_attempt, e.error_code,'
        f" e.created_at, e.prev_hash, e.hash{predecessor}"
        f" FROM public.execution_logs e {where} ORDER BY e.order_id, e.seq"
    )
    return sql, params


async def audit_rows(
    url: str, pooler: PoolerMode, selection: Selection, *, predecessors: bool = False
) -> AsyncIterator[dict[str, Any]]:
    """The selected rows in chain order, as compliance_auditor sees them."""
    # A verification of millions of rows is one long statement: no request timeout here.
    # A transaction pooler the URL was not declared as is the commands' own one line.
    database = Database(
        create_engine(async_url(url), pool_size=1, pooler=pooler),
        statement_timeout_ms=0,
        hint_pooler=False,
    )
    try:
        async with database.transaction(AUDITOR, read_only=True, isolation="REPEATABLE READ") as tx:
            sql, params = _query(selection, predecessors=predecessors)
            result = await tx.conn.stream(text(sql).execution_options(yield_per=BATCH), params)
            async for row in result.mappings():
                yield dict(row)
    finally:
        await database.dispose()
