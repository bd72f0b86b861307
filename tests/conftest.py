"""Shared fixtures: a real PostgreSQL for the session and a fresh database per test."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import URL

from app.db.urls import libpq_url
from tests import pg, pooler, supabase
from tests.api import SECRET


@pytest.fixture(scope="session")
def cluster() -> Iterator[pg.Cluster]:
    with pg.cluster() as c:
        asyncio.run(pg.create_template(c))
        pg.migrate_template(c)
        yield c


@dataclass(frozen=True)
class Db:
    cluster: pg.Cluster
    name: str
    pooler: URL | None = None
    """A transaction-mode pooler the API's connections go through (tests/pooler.py)."""

    @property
    def owner_url(self) -> URL:
        """The migration owner: bypasses nothing in tests of policies, so use it only to arrange."""
        return self.cluster.url(self.name)

    @property
    def api_url(self) -> URL:
        """The login role production uses: ``authenticator`` (through the pooler, if any)."""
        url = self.cluster.url(self.name, "authenticator")
        return url if self.pooler is None else pooler.through(url, self.pooler)

    def dsn(self, user: str | None = None) -> str:
        return self.cluster.dsn(self.name, user)


@pytest.fixture
async def database(cluster: pg.Cluster) -> AsyncIterator[Db]:
    name = await pg.create_test_database(cluster)
    try:
        yield Db(cluster, name, pooler.pooler_url())
    finally:
        await pg.drop_test_database(cluster, name)


@pytest.fixture
async def owner_conn(database: Db) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.dsn())
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def authenticator_conn(database: Db) -> AsyncIterator[asyncpg.Connection]:
    """A plain-SQL connection as the API's login role, for attacking the policies directly
    (through the pooler, if any: then without named prepared statements, as the API)."""
    conn = await asyncpg.connect(
        libpq_url(database.api_url), statement_cache_size=0 if database.pooler else 100
    )
    try:
        yield conn
    finally:
        await conn.close()


@dataclass(frozen=True)
class SupabaseSession:
    cluster: supabase.SupabaseCluster
    roles_before: list[dict[str, object]]
    """The catalog of the platform's roles and auth schema before the migration ran."""
    roles_after: list[dict[str, object]]
    """The same, right after the migration (before the README's own login role)."""
    migration_log: list[str]


@pytest.fixture(scope="session")
def supabase_cluster() -> Iterator[SupabaseSession]:
    """A Supabase-like cluster (tests/supabase.py), migrated by its non-superuser owner."""
    with supabase.server() as url:
        cluster = asyncio.run(supabase.prepare(url))
        before = asyncio.run(supabase.platform_catalog(cluster))
        with supabase.migration_log() as lines:
            supabase.migrate(cluster)
        after = asyncio.run(supabase.platform_catalog(cluster))
        asyncio.run(supabase.create_own_login_role(cluster))
        yield SupabaseSession(cluster, before, after, lines)


@pytest.fixture
async def supabase_database(
    supabase_cluster: SupabaseSession,
) -> AsyncIterator[supabase.SupabaseDb]:
    name = await supabase.create_database(supabase_cluster.cluster)
    try:
        yield supabase.SupabaseDb(supabase_cluster.cluster, name)
    finally:
        await supabase.drop_database(supabase_cluster.cluster, name)


# Anything shaped like a JWT (header.payload.signature, each base64url, the first two JSON
# objects), or a claim set as JSON: neither may reach a log line in any test.
_JWT = re.compile(r"eyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*")
_CLAIM_SET = re.compile(r"""["']aud["']\s*:""")


@pytest.fixture(autouse=True)
def no_secret_is_logged(request: pytest.FixtureRequest) -> Iterator[None]:
    """Session-wide: each test's captured log records (WARNING and up, or whatever level the
    test set) hold no token, no claim set and not the test JWT secret."""
    if not request.config.pluginmanager.has_plugin("logging"):  # pytest -p no:logging
        yield
        return
    caplog: pytest.LogCaptureFixture = request.getfixturevalue("caplog")
    yield
    for record in caplog.get_records("call"):
        line = logging.Formatter("%(name)s %(message)s").format(record)
        assert SECRET not in line, line
        assert not _JWT.search(line), line
        assert not _CLAIM_SET.search(line), line


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Finalizers of objects left in reference cycles run here, at a known point, rather than
    in the middle of a later import: CPython 3.11 fails an assertion-rewriting compile that a
    finalizer interrupts ("AST constructor recursion depth mismatch")."""
    gc.collect()
