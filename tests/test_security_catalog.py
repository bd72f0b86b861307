"""The catalog holds no hole of the escalation's kind (see tests/security_lints.py).

Each lint must find nothing in the migrated database, and must find the hole it is about
when that hole is opened (inside a transaction that is rolled back), so that a lint which
silently stopped matching anything cannot pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests import pg, security_lints

Lint = Callable[[asyncpg.Connection], Awaitable[list[str]]]

# One hole per lint, opened as the migration owner.
HOLES: dict[str, tuple[str, ...]] = {
    "unsafe_search_paths": (
        # 001's setting: the caller's temporary schema is searched first.
        "ALTER FUNCTION public.orders_enforce_lifecycle() SET search_path = pg_catalog, public",
    ),
    "mutable_search_paths": (
        "CREATE FUNCTION public.answer() RETURNS integer LANGUAGE sql AS 'SELECT 42'",
    ),
    "executable_functions": ("GRANT EXECUTE ON FUNCTION public.orders_write_audit() TO anon",),
    "objects_owned_by": (
        "CREATE TABLE public.scratch (id integer)",
        "ALTER TABLE public.scratch OWNER TO authenticated",
    ),
    "overpowered_definer_owners": (
        "CREATE ROLE lint_bypassrls_owner NOLOGIN BYPASSRLS",
        "GRANT CREATE ON SCHEMA public TO lint_bypassrls_owner",
        "ALTER FUNCTION public.orders_write_audit() OWNER TO lint_bypassrls_owner",
    ),
    "tables_without_forced_rls": (
        "ALTER TABLE public.alembic_version NO FORCE ROW LEVEL SECURITY",
    ),
    "relations_that_skip_rls": (
        "CREATE VIEW public.all_orders AS SELECT * FROM public.orders",
        "GRANT SELECT ON public.all_orders TO anon",
    ),
    # {extension}: whichever this server ships (the embedded one has vector, Debian's contrib).
    "extensions_in_exposed_schemas": ("CREATE EXTENSION {extension} SCHEMA public",),
    "risky_policies": (
        "CREATE POLICY anyone_cancels ON public.orders FOR UPDATE TO authenticated"
        " USING (true) WITH CHECK (status = 'CANCELLED')",
        "CREATE POLICY by_metadata ON public.fills FOR SELECT TO authenticated"
        " USING (auth.jwt() -> 'user_metadata' ->> 'desk' = 'A')",
    ),
    "schemas_api_roles_may_create_in": ("GRANT CREATE ON SCHEMA public TO service_role",),
}


@pytest.fixture(scope="module")
async def owner(cluster: pg.Cluster) -> AsyncIterator[asyncpg.Connection]:
    name = await pg.create_test_database(cluster)
    conn = await asyncpg.connect(cluster.dsn(name))
    try:
        yield conn
    finally:
        await conn.close()
        await pg.drop_test_database(cluster, name)


def test_every_lint_has_its_hole() -> None:
    assert {lint.__name__ for lint in security_lints.LINTS} == set(HOLES)


@pytest.mark.parametrize("lint", security_lints.LINTS, ids=lambda lint: lint.__name__)
async def test_the_migrated_database_has_no_such_hole(
    owner: asyncpg.Connection, lint: Lint
) -> None:
    assert await lint(owner) == []


@pytest.mark.parametrize("lint", security_lints.LINTS, ids=lambda lint: lint.__name__)
async def test_the_lint_finds_its_hole(owner: asyncpg.Connection, lint: Lint) -> None:
    hole = HOLES[lint.__name__]
    tx = owner.transaction()
    await tx.start()
    try:
        extension = await owner.fetchval(
            "SELECT name FROM pg_available_extensions"
            " WHERE name IN ('vector', 'citext', 'hstore', 'pgcrypto') ORDER BY name LIMIT 1"
        )
        for statement in hole:
            if "{extension}" in statement and extension is None:
                pytest.skip("this server ships no extension to install into public")
            await owner.execute(statement.format(extension=extension))
        assert await lint(owner) != []
    finally:
        await tx.rollback()


@pytest.mark.parametrize(
    ("config", "safe"),
    [
        (["search_path=pg_catalog, pg_temp"], True),
        (['search_path="pg_catalog", "pg_temp"'], True),
        (["search_path=pg_catalog, public, pg_temp"], True),
        (["search_path=pg_catalog, public"], False),  # 001: pg_temp implicitly first
        (['search_path=""'], False),  # empty: pg_temp implicitly first as well
        (["search_path=pg_temp, pg_catalog"], False),
        (["search_path=pg_temp, pg_catalog, pg_temp"], False),
        (["work_mem=64kB"], False),
        (None, False),
    ],
)
def test_a_search_path_is_safe_only_with_pg_temp_last(config: list[str] | None, safe: bool) -> None:
    assert security_lints.search_path_is_safe(config) is safe


async def test_an_empty_search_path_lets_a_temporary_table_replace_the_catalog(
    owner: asyncpg.Connection,
) -> None:
    """Why an empty search_path is refused: the temporary schema then comes first."""
    tx = owner.transaction()
    await tx.start()
    try:
        await owner.execute(
            "CREATE FUNCTION public.first_relname_empty() RETURNS text LANGUAGE plpgsql"
            " SET search_path = '' AS $$ BEGIN"
            " RETURN (SELECT relname::text FROM pg_class ORDER BY oid LIMIT 1); END $$"
        )
        await owner.execute(
            "CREATE FUNCTION public.first_relname_last() RETURNS text LANGUAGE plpgsql"
            " SET search_path = pg_catalog, pg_temp AS $$ BEGIN"
            " RETURN (SELECT relname::text FROM pg_class ORDER BY oid LIMIT 1); END $$"
        )
        await owner.execute("CREATE TEMP TABLE pg_class (relname text, oid integer)")
        await owner.execute("INSERT INTO pg_temp.pg_class VALUES ('shadowed', 0)")
        assert await owner.fetchval("SELECT public.first_relname_empty()") == "shadowed"
        assert await owner.fetchval("SELECT public.first_relname_last()") != "shadowed"
    finally:
        await tx.rollback()
