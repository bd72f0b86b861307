"""The stored trusted documents (migration 014): written by the owner, read by the servers.

The owner's side (``python -m app documents``, app/cli/documents.py) adds, lists and
removes; each command is one transaction, so its documents become visible to the servers
together (014's statement trigger raises the version once per statement). The servers'
side, as ``authenticator`` outside any request's role: ``version`` is the one-row read each
process polls, ``load`` reads every document at a version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg  # type: ignore[import-untyped]  # ships no type information
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.urls import libpq_url
from app.graphql.manifests import Document

TABLE = "order_api_private.trusted_documents"

_VERSION = text("SELECT version FROM order_api_private.trusted_documents_version")
# One statement: the documents and the version they are at, from one snapshot.
_LOAD = text(
    "SELECT v.version, d.id, d.body, d.sha256, d.operation_name, d.roles"
    " FROM order_api_private.trusted_documents_version v"
    f" LEFT JOIN {TABLE} d ON true ORDER BY d.id"
)


@dataclass(frozen=True, slots=True)
class Stored:
    id: str
    text: str
    sha256: str
    operation_name: str | None
    roles: tuple[str, ...] | None
    loaded_at: datetime | None = None


class Conflict(Exception):
    """An id already stored with another text or other roles; nothing of the command was stored."""


# --- the servers' side (authenticator) ------------------------------------------------------


async def version(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(_VERSION)).scalar_one())


async def load(engine: AsyncEngine) -> tuple[int, list[Stored]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(_LOAD)).all()
    documents = [
        Stored(r.id, r.body, r.sha256, r.operation_name, tuple(r.roles) if r.roles else None)
        for r in rows
        if r.id is not None
    ]
    return int(rows[0].version), documents


# --- the owner's side (the CLI, DATABASE_URL) ------------------------------------------------


async def add(
    owner_url: str, documents: Sequence[Document], roles: Sequence[str] | None
) -> tuple[int, int]:
    """Store ``documents`` in one transaction: (added, already stored alike)."""
    wanted_roles = sorted(set(roles)) if roles else None
    conn = await asyncpg.connect(libpq_url(owner_url))
    try:
        async with conn.transaction():
            # Two commands adding the same id at once: the second waits, then sees the first's.
            await conn.execute(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
            existing = {
                row["id"]: row
                for row in await conn.fetch(
                    f"SELECT id, sha256, roles FROM {TABLE} WHERE id = ANY($1::text[])",
                    [d.id for d in documents],
                )
            }
            new = []
            for document in documents:
                row = existing.get(document.id)
                if row is None:
                    new.append(document)
                    continue
                stored_roles = sorted(row["roles"]) if row["roles"] else None
                if row["sha256"] != document.sha256 or stored_roles != wanted_roles:
                    what = "another text" if row["sha256"] != document.sha256 else "other roles"
                    raise Conflict(
                        f"id {document.id:.80} is already stored with {what}: remove it first"
                        f" (python -m app documents remove ID); nothing was stored"
                    )
            if new:
                await conn.execute(
                    f"INSERT INTO {TABLE} (id, body, sha256, operation_name, roles)"
                    " SELECT i, b, s, n, $5::text[]"
                    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(i, b, s, n)",
                    [d.id for d in new],
                    [d.text for d in new],
                    [d.sha256 for d in new],
                    [d.operation_name for d in new],
                    wanted_roles,
                )
    finally:
        await conn.close()
    return len(new), len(documents) - len(new)


async def listed(owner_url: str) -> list[Stored]:
    conn = await asyncpg.connect(libpq_url(owner_url))
    try:
        rows = await conn.fetch(
            f"SELECT id, body, sha256, operation_name, roles, loaded_at FROM {TABLE} ORDER BY id"
        )
    finally:
        await conn.close()
    return [
        Stored(
            r["id"],
            r["body"],
            r["sha256"],
            r["operation_name"],
            tuple(r["roles"]) if r["roles"] else None,
            r["loaded_at"],
        )
        for r in rows
    ]


async def remove(owner_url: str, document_id: str) -> bool:
    conn = await asyncpg.connect(libpq_url(owner_url))
    try:
        status: str = await conn.execute(f"DELETE FROM {TABLE} WHERE id = $1", document_id)
    finally:
        await conn.close()
    return status != "DELETE 0"
