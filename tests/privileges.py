"""What a database actually grants, rendered as sorted text lines, one fact per line.

``render(conn)`` reads the catalog (not the migrations) of the database ``conn`` is
connected to, for the schemas the migrations touch: owners, grants per role
(PUBLIC included) on the database, schemas, tables, columns, sequences, functions
and types, default privileges, policies with their roles, commands and expressions,
triggers, SECURITY DEFINER and search_path of functions, and the attributes and
memberships of the roles the API and the migrations use. test_security_snapshot.py
diffs it against tests/security/privileges.snapshot; a fixture for another setup
(e.g. the Supabase-like cluster) can render its own database and keep its own file.

Lines are independent of the server version and of the name of the migrating role:
- the migrating role is shown as ``<migration owner>`` (by default: the owner of
  ``public.alembic_version``), other roles by name, PUBLIC as ``PUBLIC``;
- an owner's own privileges are shown as what it *lacks* against the server's
  default for owners (PostgreSQL 17 added MAINTAIN to it), so a revocation from the
  owner is visible and a new default privilege of a newer server is not noise;
- names are rendered with ``search_path = pg_catalog``, so every name outside
  pg_catalog is schema-qualified whatever the session's search_path was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg

SCHEMAS = ("public", "auth", "order_api_private")
ROLES = (
    "anon",
    "authenticated",
    "service_role",
    "compliance_auditor",
    "authenticator",
    "order_audit_writer",
)
OWNER_ALIAS = "<migration owner>"

_RELKINDS = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "f": "foreign table",
}

# One ACL, exploded: every (grantee, privilege, grantable) the object grants, with the
# owner's default for comparison. $1 is the object's kind letter for acldefault().
_ACL_ROWS = """
SELECT coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') AS grantee,
       a.privilege_type AS privilege, a.is_grantable AS grantable
  FROM aclexplode(coalesce($2::text::aclitem[], acldefault($1::text::"char", $3::oid))) a
"""
_OWNER_DEFAULT = """
SELECT a.privilege_type AS privilege
  FROM aclexplode(acldefault($1::text::"char", $2::oid)) a WHERE a.grantee = $2::oid
"""


async def render(
    conn: asyncpg.Connection,
    *,
    schemas: Iterable[str] = SCHEMAS,
    roles: Iterable[str] = ROLES,
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """The sorted fact lines of the database ``conn`` is connected to."""
    schemas = list(schemas)
    roles = list(roles)
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL search_path = pg_catalog")
        if aliases is None:
            owner = await conn.fetchval(
                "SELECT relowner::regrole::text FROM pg_class"
                " WHERE oid = to_regclass('public.alembic_version')"
            )
            aliases = {owner: OWNER_ALIAS} if owner else {}
        renderer = _Renderer(conn, aliases)
        await renderer.database()
        await renderer.roles(roles)
        await renderer.default_privileges(schemas)
        await renderer.schemas(schemas)
        await renderer.relations(schemas)
        await renderer.policies(schemas)
        await renderer.triggers(schemas)
        await renderer.functions(schemas)
        await renderer.types(schemas)
    return sorted(set(renderer.lines))


class _Renderer:
    def __init__(self, conn: asyncpg.Connection, aliases: Mapping[str, str]) -> None:
        self.conn = conn
        self.aliases = aliases
        self.lines: list[str] = []

    def name(self, role: str) -> str:
        return self.aliases.get(role, role)

    def add(self, line: str) -> None:
        self.lines.append(line)

    async def acl(self, subject: str, kind: str, acl: str | None, owner_oid: int) -> None:
        """Grants of one object: each grantee's privileges; the owner's as what it lacks."""
        owner = await self.conn.fetchval("SELECT $1::oid::regrole::text", owner_oid)
        rows = await self.conn.fetch(_ACL_ROWS, kind, acl, owner_oid)
        owner_default = {
            r["privilege"] for r in await self.conn.fetch(_OWNER_DEFAULT, kind, owner_oid)
        }
        owner_has = {r["privilege"] for r in rows if r["grantee"] == owner}
        for missing in sorted(owner_default - owner_has):
            self.add(f"{subject}: owner lacks {missing}")
        for r in rows:
            if r["grantee"] == owner and r["privilege"] in owner_default:
                continue
            option = " WITH GRANT OPTION" if r["grantable"] and r["grantee"] != owner else ""
            self.add(f"{subject}: grants {r['privilege']} to {self.name(r['grantee'])}{option}")

    async def database(self) -> None:
        row = await self.conn.fetchrow(
            "SELECT datdba, datdba::regrole::text AS owner, datacl::text FROM pg_database"
            " WHERE datname = current_database()"
        )
        self.add(f"database: owner {self.name(row['owner'])}")
        await self.acl("database", "d", row["datacl"], row["datdba"])

    async def roles(self, roles: list[str]) -> None:
        for r in await self.conn.fetch(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,"
            " rolreplication, rolbypassrls FROM pg_roles WHERE rolname = ANY($1::text[])",
            roles,
        ):
            flags = [
                ("SUPERUSER" if r["rolsuper"] else "NOSUPERUSER"),
                ("LOGIN" if r["rolcanlogin"] else "NOLOGIN"),
                ("INHERIT" if r["rolinherit"] else "NOINHERIT"),
                ("BYPASSRLS" if r["rolbypassrls"] else "NOBYPASSRLS"),
                ("CREATEROLE" if r["rolcreaterole"] else "NOCREATEROLE"),
                ("CREATEDB" if r["rolcreatedb"] else "NOCREATEDB"),
                ("REPLICATION" if r["rolreplication"] else "NOREPLICATION"),
            ]
            self.add(f"role {self.name(r['rolname'])}: {' '.join(flags)}")
        for r in await self.conn.fetch(
            "SELECT m.roleid::regrole::text AS role, m.member::regrole::text AS member,"
            " m.admin_option FROM pg_auth_members m"
            " WHERE m.roleid::regrole::text = ANY($1::text[])"
            " OR m.member::regrole::text = ANY($1::text[])",
            roles,
        ):
            admin = " WITH ADMIN OPTION" if r["admin_option"] else ""
            self.add(f"role {self.name(r['member'])}: member of {self.name(r['role'])}{admin}")

    async def default_privileges(self, schemas: list[str]) -> None:
        kinds = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas"}
        for r in await self.conn.fetch(
            "SELECT d.defaclrole::regrole::text AS role, coalesce(n.nspname, '*') AS schema,"
            " d.defaclobjtype::text AS kind, coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC')"
            " AS grantee, a.privilege_type AS privilege"
            " FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,"
            " aclexplode(d.defaclacl) a"
            " WHERE n.nspname IS NULL OR n.nspname = ANY($1::text[])",
            schemas,
        ):
            self.add(
                f"default privileges of {self.name(r['role'])} in schema {r['schema']}:"
                f" {kinds.get(r['kind'], r['kind'])} grant {r['privilege']}"
                f" to {self.name(r['grantee'])}"
            )

    async def schemas(self, schemas: list[str]) -> None:
        for r in await self.conn.fetch(
            "SELECT nspname, nspowner, nspowner::regrole::text AS owner, nspacl::text"
            " FROM pg_namespace WHERE nspname = ANY($1::text[])",
            schemas,
        ):
            subject = f"schema {r['nspname']}"
            self.add(f"{subject}: owner {self.name(r['owner'])}")
            await self.acl(subject, "n", r["nspacl"], r["nspowner"])

    async def relations(self, schemas: list[str]) -> None:
        for r in await self.conn.fetch(
            "SELECT c.oid, c.oid::regclass::text AS name, c.relkind::text AS relkind, c.relowner,"
            " c.relowner::regrole::text AS owner, c.relacl::text, c.relrowsecurity,"
            " c.relforcerowsecurity, c.reloptions"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = ANY($1::text[]) AND c.relkind::text = ANY($2::text[])",
            schemas,
            list(_RELKINDS),
        ):
            subject = f"{_RELKINDS[r['relkind']]} {r['name']}"
            self.add(f"{subject}: owner {self.name(r['owner'])}")
            if r["relkind"] in ("r", "p"):
                rls = "enabled" if r["relrowsecurity"] else "DISABLED"
                force = "forced" if r["relforcerowsecurity"] else "NOT forced"
                self.add(f"{subject}: row level security {rls}, {force}")
            if r["reloptions"]:
                self.add(f"{subject}: options {', '.join(sorted(r['reloptions']))}")
            kind = "s" if r["relkind"] == "S" else "r"
            await self.acl(subject, kind, r["relacl"], r["relowner"])
            for col in await self.conn.fetch(
                "SELECT a.attname, coalesce(nullif(x.grantee, 0)::regrole::text, 'PUBLIC')"
                " AS grantee, x.privilege_type AS privilege, x.is_grantable AS grantable"
                " FROM pg_attribute a, aclexplode(a.attacl) x"
                " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                r["oid"],
            ):
                option = " WITH GRANT OPTION" if col["grantable"] else ""
                self.add(
                    f"{subject} column {col['attname']}: grants {col['privilege']}"
                    f" to {self.name(col['grantee'])}{option}"
                )

    async def policies(self, schemas: list[str]) -> None:
        commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
        for r in await self.conn.fetch(
            "SELECT p.polrelid::regclass::text AS tbl, p.polname, p.polpermissive, p.polcmd::text AS polcmd,"
            " ARRAY(SELECT coalesce(nullif(x, 0)::regrole::text, 'PUBLIC')"
            "       FROM unnest(p.polroles) x ORDER BY 1) AS roles,"
            " pg_get_expr(p.polqual, p.polrelid) AS using_expr,"
            " pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr"
            " FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1::text[])",
            schemas,
        ):
            kind = "PERMISSIVE" if r["polpermissive"] else "RESTRICTIVE"
            roles = ", ".join(self.name(role) for role in r["roles"])
            line = f"policy {r['tbl']} {r['polname']}: {kind} {commands[r['polcmd']]} to {roles}"
            if r["using_expr"] is not None:
                line += f" USING {r['using_expr']}"
            if r["check_expr"] is not None:
                line += f" WITH CHECK {r['check_expr']}"
            self.add(" ".join(line.split()))

    async def triggers(self, schemas: list[str]) -> None:
        for r in await self.conn.fetch(
            "SELECT t.tgrelid::regclass::text AS tbl, t.tgname, t.tgenabled::text AS tgenabled,"
            " pg_get_triggerdef(t.oid) AS def"
            " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = ANY($1::text[]) AND NOT t.tgisinternal",
            schemas,
        ):
            # The definition without its "CREATE TRIGGER name" prefix: when, on what, which function.
            definition = r["def"].split(f"{r['tgname']} ", 1)[1]
            enabled = {"O": "", "D": " (DISABLED)", "R": " (replica only)", "A": " (always)"}
            self.add(f"trigger {r['tbl']} {r['tgname']}: {definition}{enabled[r['tgenabled']]}")

    async def functions(self, schemas: list[str]) -> None:
        for r in await self.conn.fetch(
            "SELECT p.oid, p.oid::regprocedure::text AS name, p.proowner,"
            " p.proowner::regrole::text AS owner, p.prosecdef, p.proconfig, p.proacl::text,"
            " l.lanname, p.prokind::text AS prokind"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " JOIN pg_language l ON l.oid = p.prolang WHERE n.nspname = ANY($1::text[])",
            schemas,
        ):
            kind = "procedure" if r["prokind"] == "p" else "function"
            subject = f"{kind} {r['name']}"
            security = "SECURITY DEFINER" if r["prosecdef"] else "SECURITY INVOKER"
            self.add(f"{subject}: owner {self.name(r['owner'])}, {security}, {r['lanname']}")
            config = r["proconfig"] or []
            search_path = [c for c in config if c.startswith("search_path=")]
            self.add(f"{subject}: {search_path[0] if search_path else 'search_path NOT SET'}")
            for setting in config:
                if not setting.startswith("search_path="):
                    self.add(f"{subject}: SET {setting}")
            await self.acl(subject, "f", r["proacl"], r["proowner"])

    async def types(self, schemas: list[str]) -> None:
        # Enums, domains and standalone composites; a table's row type and arrays follow it.
        for r in await self.conn.fetch(
            "SELECT t.oid::regtype::text AS name, t.typowner, t.typowner::regrole::text AS owner,"
            " t.typacl::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            " LEFT JOIN pg_class c ON c.oid = t.typrelid"
            " WHERE n.nspname = ANY($1::text[]) AND t.typcategory <> 'A'"
            " AND (t.typrelid = 0 OR c.relkind = 'c')",
            schemas,
        ):
            subject = f"type {r['name']}"
            self.add(f"{subject}: owner {self.name(r['owner'])}")
            await self.acl(subject, "T", r["typacl"], r["typowner"])


def diff(expected: list[str], actual: list[str]) -> str:
    """The lines only one side has, as a review would read them."""
    gone = sorted(set(expected) - set(actual))
    new = sorted(set(actual) - set(expected))
    return "\n".join([*(f"- {line}" for line in gone), *(f"+ {line}" for line in new)])
