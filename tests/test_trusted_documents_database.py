"""Migration 014's stored trusted documents as plain SQL meets them: no API role may write
them, the servers' login role may only read them, and the hash rules hold for every writer."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from tests import pg, privileges
from tests.revisions import round_trip
from tests.sql import as_role

TEXT = "query Viewer { viewer { role } }"
HEX = hashlib.sha256(TEXT.encode()).hexdigest()
TABLES = ("order_api_private.trusted_documents", "order_api_private.trusted_documents_version")
API_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
WRITES = {
    "order_api_private.trusted_documents": (
        f"INSERT INTO order_api_private.trusted_documents (id, body, sha256)"
        f" VALUES ('x', '{TEXT}', '{HEX}')",
        "UPDATE order_api_private.trusted_documents SET body = body",
        "DELETE FROM order_api_private.trusted_documents",
        "TRUNCATE order_api_private.trusted_documents",
    ),
    "order_api_private.trusted_documents_version": (
        "UPDATE order_api_private.trusted_documents_version SET version = 0",
        "DELETE FROM order_api_private.trusted_documents_version",
    ),
}


async def stored(owner: asyncpg.Connection) -> None:
    await owner.execute(
        "INSERT INTO order_api_private.trusted_documents (id, body, sha256) VALUES ($1, $2, $3)",
        "v",
        TEXT,
        HEX,
    )


@pytest.mark.parametrize("role", API_ROLES)
async def test_no_api_role_may_read_or_write_the_stored_documents(
    owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection, role: str
) -> None:
    await stored(owner_conn)
    for table, statements in WRITES.items():
        for statement in (f"SELECT * FROM {table}", *statements):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with as_role(authenticator_conn, role):
                    await authenticator_conn.execute(statement)


async def test_the_login_role_reads_the_documents_and_writes_none(
    owner_conn: asyncpg.Connection, authenticator_conn: asyncpg.Connection
) -> None:
    await stored(owner_conn)
    assert (
        await authenticator_conn.fetchval(
            "SELECT body FROM order_api_private.trusted_documents WHERE id = 'v'"
        )
        == TEXT
    )
    for statements in WRITES.values():
        for statement in statements:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await authenticator_conn.execute(statement)


async def test_each_change_raises_the_version_once_per_statement(
    owner_conn: asyncpg.Connection,
) -> None:
    version = "SELECT version FROM order_api_private.trusted_documents_version"
    before = await owner_conn.fetchval(version)
    await owner_conn.execute(
        "INSERT INTO order_api_private.trusted_documents (id, body, sha256)"
        " SELECT 'a' || n, $1 || repeat(' ', n), encode(sha256(convert_to($1 || repeat(' ', n),"
        " 'UTF8')), 'hex') FROM generate_series(1, 3) n",
        TEXT,
    )
    assert await owner_conn.fetchval(version) == before + 1
    await owner_conn.execute("DELETE FROM order_api_private.trusted_documents")
    assert await owner_conn.fetchval(version) == before + 2


@pytest.mark.parametrize(
    ("document_id", "digest"),
    [("v", "0" * 64), (f"sha256:{'0' * 64}", HEX), ("sha256:short", HEX)],
    ids=["hash-not-the-texts", "sha256-id-not-the-hash", "sha256-id-malformed"],
)
async def test_the_owner_too_cannot_store_a_hash_that_is_not_the_texts(
    owner_conn: asyncpg.Connection, document_id: str, digest: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await owner_conn.execute(
            "INSERT INTO order_api_private.trusted_documents (id, body, sha256)"
            " VALUES ($1, $2, $3)",
            document_id,
            TEXT,
            digest,
        )


async def test_roles_name_api_roles_only(owner_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await owner_conn.execute(
            "INSERT INTO order_api_private.trusted_documents (id, body, sha256, roles)"
            " VALUES ('v', $1, $2, ARRAY['authenticator'])",
            TEXT,
            HEX,
        )


async def test_the_downgrade_gives_back_exactly_what_the_previous_revision_made(
    cluster: pg.Cluster,
) -> None:
    trip = await round_trip(cluster, "013", "014")
    assert trip.after != trip.before
    assert trip.back == trip.before, privileges.diff(trip.before, trip.back)
