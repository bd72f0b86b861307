"""Plain-SQL helpers for tests that attack the database as each role."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


@asynccontextmanager
async def as_role(
    conn: asyncpg.Connection,
    role: str,
    sub: uuid.UUID | str | None = None,
    *,
    extra_claims: dict[str, Any] | None = None,
    commit: bool = False,
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction as ``role`` with the claims the API would set; rolled back unless commit."""
    claims: dict[str, Any] = {"role": role, **(extra_claims or {})}
    if sub is not None:
        claims["sub"] = str(sub)
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            role,
            json.dumps(claims),
        )
        yield conn
    except BaseException:
        await tx.rollback()
        raise
    else:
        if commit:
            await tx.commit()
        else:
            await tx.rollback()
