"""Security lints over a database's catalog: each returns the offenders, as readable lines.

Supabase's database linter (splinter) is the reference; its security lints are covered:
function_search_path_mutable (0011), anon/authenticated_security_definer_function_executable
(0028, 0029), rls_disabled_in_public (0013), policy_exists_rls_disabled (0007),
security_definer_view (0010), materialized_view_in_api (0016), foreign_table_in_api (0017),
extension_in_public (0014), rls_references_user_metadata (0015) and, for the roles that
matter here, rls_policy_always_true (0024). Where splinter is satisfied by less, these go
further:

- a search_path is safe only with ``pg_temp`` explicitly *last*. splinter's 0011 is satisfied
  by any ``SET search_path``, which 001's ``pg_catalog, public`` was: PostgreSQL then searches
  the caller's temporary schema first, which was the escalation. An *empty* search_path is no
  better: the temporary schema is then searched first too (a temporary table called
  ``pg_class`` takes the catalog's place), so it is refused as well;
- every trigger function needs it too, not only SECURITY DEFINER ones: they run inside
  everybody's writes (001's lifecycle trigger derived fills from a caller's temporary table);
- EXECUTE is checked for every API role against an explicit allow-list, not only for
  SECURITY DEFINER functions and not only for anon/authenticated;
- no object may be owned by an API role or by the login role, and a SECURITY DEFINER
  function may not be owned by a superuser or a BYPASSRLS role;
- RLS must be forced as well as enabled (the owner skips unforced RLS), on every table of an
  exposed schema, whoever may read it today (a grant added tomorrow must not find it open);
- no API role may CREATE in a schema (it could plant objects our names resolve to).

The module is independent of this database's shape, so that another fixture (the
Supabase-like cluster) can run the same lints with its own roles and allow-list.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

API_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor", "authenticator")
EXPOSED_SCHEMAS = ("public",)
# What the policies call as each API role, and nothing else.
EXECUTABLE = (
    "auth.uid()",
    "auth.role()",
    "auth.jwt()",
    "round_half_even(numeric,integer)",
    "trader_positions(uuid,cost_basis_method)",
)
"""What every API role may call; the roles that write orders may call more (see below).
012's rounding and its positions reader are SECURITY INVOKER: they read as the caller."""
EXECUTABLE_BY_WRITERS = (
    "orders_checked_money(text,numeric)",
    "session_close(timestamp with time zone)",
    "timestamp_horizon()",
    "checked_timestamp(text,timestamp with time zone)",
)
"""003's price check, 006's session close and 009's horizon check, called by invoker triggers
as whoever inserts an order or a fill (and by the API and the engine for DAY orders)."""
ORDER_WRITERS = ("authenticated", "service_role")
LOGIN_ROLE = "authenticator"
EXECUTABLE_BY_LOGIN = (
    "order_api_private.become(text,text)",
    "order_api_private.submit_order(text,text,jsonb)",
    "order_api_private.cancel_order(text,text,uuid,text,text[])",
)
"""007's compiled writes: they switch to the role they are given, so the login role only."""
TRADER_ROLE = "authenticated"
EXECUTABLE_BY_TRADERS = (
    "order_api_private.place_order(jsonb)",
    "order_api_private.cancel_own_order(uuid,text,text[])",
)
"""011's writers: a trader's submit and cancel as the current role (nothing plain SQL could
not do), called by the API in the request transaction and by 007's functions after become."""

# Schemas of the system, and of extensions' own objects, are not ours to lint.
_OURS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%'
"""
_NOT_FROM_AN_EXTENSION = """
    NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass
                AND d.objid = {oid} AND d.deptype = 'e')
"""


def search_path_is_safe(config: Iterable[str] | None) -> bool:
    """True when the function's own search_path names pg_temp, once, and last."""
    for setting in config or ():
        if setting.startswith("search_path="):
            schemas = [
                s.strip().strip('"') for s in setting.removeprefix("search_path=").split(",")
            ]
            return schemas.count("pg_temp") == 1 and schemas[-1] == "pg_temp"
    return False


async def unsafe_search_paths(conn: asyncpg.Connection) -> list[str]:
    """SECURITY DEFINER and trigger functions whose search_path does not end with pg_temp."""
    rows = await conn.fetch(
        f"""
        SELECT p.oid::regprocedure::text AS name, p.proconfig, p.prosecdef
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE {_OURS}
           AND {_NOT_FROM_AN_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}
           AND (p.prosecdef OR p.prorettype = 'trigger'::regtype)
        """
    )
    return [
        f"{r['name']} ({'SECURITY DEFINER' if r['prosecdef'] else 'trigger'}):"
        f" {r['proconfig'] or 'no search_path'}"
        for r in rows
        if not search_path_is_safe(r["proconfig"])
    ]


async def mutable_search_paths(
    conn: asyncpg.Connection, schemas: Iterable[str] = EXPOSED_SCHEMAS
) -> list[str]:
    """Any function of an exposed schema with a search_path that is not safe (splinter 0011+)."""
    rows = await conn.fetch(
        f"""
        SELECT p.oid::regprocedure::text AS name, p.proconfig
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = ANY($1::text[])
           AND {_NOT_FROM_AN_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}
        """,
        list(schemas),
    )
    return [
        f"{r['name']}: {r['proconfig'] or 'no search_path'}"
        for r in rows
        if not search_path_is_safe(r["proconfig"])
    ]


async def executable_functions(
    conn: asyncpg.Connection,
    roles: Iterable[str] = API_ROLES,
    allowed: Iterable[str] = EXECUTABLE,
    allowed_to_writers: Iterable[str] = EXECUTABLE_BY_WRITERS,
    allowed_to_login: Iterable[str] = EXECUTABLE_BY_LOGIN,
    allowed_to_traders: Iterable[str] = EXECUTABLE_BY_TRADERS,
) -> list[str]:
    """Functions of ours an API role may call (directly or through PUBLIC) beyond the lists."""
    rows = await conn.fetch(
        f"""
        SELECT r.rolname, p.oid::regprocedure::text AS name, p.prosecdef
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
               pg_roles r
         WHERE {_OURS}
           AND {_NOT_FROM_AN_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}
           AND r.rolname = ANY($1::text[])
           AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
           AND NOT p.oid::regprocedure::text = ANY($2::text[])
           AND NOT (r.rolname = ANY($4::text[]) AND p.oid::regprocedure::text = ANY($3::text[]))
           AND NOT (r.rolname = $5 AND p.oid::regprocedure::text = ANY($6::text[]))
           AND NOT (r.rolname = $7 AND p.oid::regprocedure::text = ANY($8::text[]))
        """,
        list(roles),
        list(allowed),
        list(allowed_to_writers),
        list(ORDER_WRITERS),
        LOGIN_ROLE,
        list(allowed_to_login),
        TRADER_ROLE,
        list(allowed_to_traders),
    )
    return [
        f"{r['rolname']} may execute {r['name']}{' (SECURITY DEFINER)' if r['prosecdef'] else ''}"
        for r in rows
    ]


async def objects_owned_by(conn: asyncpg.Connection, roles: Iterable[str] = API_ROLES) -> list[str]:
    """Anything in this database (or shared) owned by an API role: it could alter or grant it."""
    rows = await conn.fetch(
        """
        SELECT r.rolname, pg_describe_object(s.classid, s.objid, s.objsubid) AS object
          FROM pg_shdepend s JOIN pg_roles r ON r.oid = s.refobjid
         WHERE s.deptype = 'o' AND r.rolname = ANY($1::text[])
           AND s.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
        """,
        list(roles),
    )
    return [f"{r['object']} is owned by {r['rolname']}" for r in rows]


async def overpowered_definer_owners(conn: asyncpg.Connection) -> list[str]:
    """SECURITY DEFINER functions that would run as a superuser or a BYPASSRLS role."""
    rows = await conn.fetch(
        f"""
        SELECT p.oid::regprocedure::text AS name, r.rolname, r.rolsuper, r.rolbypassrls
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_roles r ON r.oid = p.proowner
         WHERE {_OURS} AND p.prosecdef AND (r.rolsuper OR r.rolbypassrls)
           AND {_NOT_FROM_AN_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}
        """
    )
    return [
        f"{r['name']} runs as {r['rolname']} ({'superuser' if r['rolsuper'] else 'BYPASSRLS'})"
        for r in rows
    ]


async def tables_without_forced_rls(
    conn: asyncpg.Connection, schemas: Iterable[str] = EXPOSED_SCHEMAS
) -> list[str]:
    """Tables of an exposed schema without RLS enabled and forced (splinter 0013, 0007, +)."""
    rows = await conn.fetch(
        f"""
        SELECT c.oid::regclass::text AS name, c.relrowsecurity, c.relforcerowsecurity
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
           AND {_NOT_FROM_AN_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
        """,
        list(schemas),
    )
    return [
        f"{r['name']}: RLS {'enabled' if r['relrowsecurity'] else 'disabled'},"
        f" {'forced' if r['relforcerowsecurity'] else 'not forced'}"
        for r in rows
    ]


async def relations_that_skip_rls(
    conn: asyncpg.Connection,
    roles: Iterable[str] = API_ROLES,
    schemas: Iterable[str] = EXPOSED_SCHEMAS,
) -> list[str]:
    """Readable views without security_invoker, materialized views and foreign tables
    (splinter 0010, 0016, 0017; 0002 is the special case of auth.users behind a view)."""
    rows = await conn.fetch(
        f"""
        SELECT c.oid::regclass::text AS name, c.relkind::text AS kind, r.rolname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles r
         WHERE n.nspname = ANY($2::text[]) AND r.rolname = ANY($1::text[])
           AND has_table_privilege(r.oid, c.oid, 'SELECT')
           AND (c.relkind IN ('m', 'f')
                OR (c.relkind = 'v' AND NOT coalesce(
                        lower(array_to_string(c.reloptions, ',')) ~ 'security_invoker=(1|true|yes|on)',
                        false)))
           AND {_NOT_FROM_AN_EXTENSION.format(catalog="'pg_class'", oid="c.oid")}
        """,
        list(roles),
        list(schemas),
    )
    kinds = {"v": "view without security_invoker", "m": "materialized view", "f": "foreign table"}
    return [f"{r['rolname']} may read {r['name']} ({kinds[r['kind']]})" for r in rows]


async def extensions_in_exposed_schemas(
    conn: asyncpg.Connection, schemas: Iterable[str] = EXPOSED_SCHEMAS
) -> list[str]:
    """Extensions installed into an exposed schema (splinter 0014)."""
    rows = await conn.fetch(
        "SELECT e.extname, n.nspname FROM pg_extension e"
        " JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE n.nspname = ANY($1::text[]) AND e.extname <> 'plpgsql'",
        list(schemas),
    )
    return [f"extension {r['extname']} in schema {r['nspname']}" for r in rows]


async def risky_policies(conn: asyncpg.Connection) -> list[str]:
    """Policies trusting user-editable claims (splinter 0015), and permissive always-true
    write policies for PUBLIC, anon or authenticated (splinter 0024)."""
    rows = await conn.fetch(
        f"""
        SELECT p.polrelid::regclass::text AS tbl, p.polname, p.polcmd::text AS cmd,
               p.polpermissive,
               ARRAY(SELECT coalesce(nullif(x, 0)::regrole::text, 'PUBLIC')
                       FROM unnest(p.polroles) x) AS roles,
               coalesce(pg_get_expr(p.polqual, p.polrelid), '') AS using_expr,
               coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') AS check_expr
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {_OURS}
        """
    )
    found = []
    for r in rows:
        expressions = f"{r['using_expr']} {r['check_expr']}"
        if "user_metadata" in expressions:
            found.append(f"{r['tbl']} {r['polname']} reads user_metadata, which users may edit")
        exposed = {"PUBLIC", "anon", "authenticated"} & set(r["roles"])
        always = {"true", "(true)"}
        if (
            exposed
            and r["polpermissive"]
            and r["cmd"] != "r"
            and (r["using_expr"] in always or r["check_expr"] in always)
        ):
            found.append(f"{r['tbl']} {r['polname']} lets {sorted(exposed)} write any row")
    return found


async def schemas_api_roles_may_create_in(
    conn: asyncpg.Connection, roles: Iterable[str] = API_ROLES
) -> list[str]:
    """Schemas an API role may create objects in (functions our names could resolve to)."""
    rows = await conn.fetch(
        f"""
        SELECT r.rolname, n.nspname FROM pg_namespace n, pg_roles r
         WHERE {_OURS} AND r.rolname = ANY($1::text[])
           AND has_schema_privilege(r.oid, n.oid, 'CREATE')
        """,
        list(roles),
    )
    return [f"{r['rolname']} may create in schema {r['nspname']}" for r in rows]


LINTS = (
    unsafe_search_paths,
    mutable_search_paths,
    executable_functions,
    objects_owned_by,
    overpowered_definer_owners,
    tables_without_forced_rls,
    relations_that_skip_rls,
    extensions_in_exposed_schemas,
    risky_policies,
    schemas_api_roles_may_create_in,
)
