"""Shared fixtures: a real PostgreSQL for the session and a fresh database per test."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tests import pg
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

    @property
    def owner_url(self) -> URL:
        """The migration owner: bypasses nothing in tests of policies, so use it only to arrange."""
        return self.cluster.url(self.name)

    @property
    def api_url(self) -> URL:
        """The login role production uses: ``authenticator``."""
        return self.cluster.url(self.name, "authenticator")

    def dsn(self, user: str | None = None) -> str:
        return self.cluster.dsn(self.name, user)


@pytest.fixture
async def database(cluster: pg.Cluster) -> AsyncIterator[Db]:
    name = await pg.create_test_database(cluster)
    try:
        yield Db(cluster, name)
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
    """A plain-SQL connection as the API's login role, for attacking the policies directly."""
    conn = await asyncpg.connect(database.dsn("authenticator"))
    try:
        yield conn
    finally:
        await conn.close()


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
