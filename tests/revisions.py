"""A revision's round trip: upgraded to it and downgraded again, the database must be exactly
what the revision before it made (grants, policies, structure, the private functions)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tests import pg, privileges
from tests.conftest import Db
from tests.test_migrations import _structure, alembic


async def private_functions(conn: asyncpg.Connection) -> list[str]:
    """order_api_private's functions: signature, oid and definition."""
    rows = await conn.fetch(
        "SELECT format('function %s %s %s', p.oid::regprocedure, p.oid,"
        " md5(pg_get_functiondef(p.oid)))"
        " FROM pg_proc p WHERE p.pronamespace = 'order_api_private'::regnamespace ORDER BY 1"
    )
    return [r[0] for r in rows]


@dataclass(frozen=True)
class RoundTrip:
    before: list[str]
    """The facts at the revision before."""
    after: list[str]
    """At the revision."""
    back: list[str]
    """After its downgrade."""
    downgrade_log: str


async def round_trip(cluster: pg.Cluster, before: str, after: str) -> RoundTrip:
    """An empty database upgraded to ``before``, then ``after``, then downgraded to ``before``
    and finally upgraded to head again (each step must succeed); the facts at each point."""
    database = Db(cluster, await pg.create_empty_database(cluster))

    async def facts() -> list[str]:
        conn = await asyncpg.connect(database.dsn())
        try:
            return (
                await privileges.render(conn)
                + await _structure(conn)
                + await private_functions(conn)
            )
        finally:
            await conn.close()

    try:
        first = alembic(database, "upgrade", before)
        assert first.returncode == 0, first.stderr
        at_before = await facts()
        up = alembic(database, "upgrade", after)
        assert up.returncode == 0, up.stderr
        at_after = await facts()
        down = alembic(database, "downgrade", before)
        assert down.returncode == 0, down.stderr
        back = await facts()
        again = alembic(database, "upgrade", "head")
        assert again.returncode == 0, again.stderr
        return RoundTrip(at_before, at_after, back, down.stderr)
    finally:
        await pg.drop_test_database(cluster, database.name)
