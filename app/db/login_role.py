"""The API's login role, checked at start: row level security must apply to it.

A superuser, a role with BYPASSRLS, or the owner of the order tables would see every
trader's rows whatever the policies say, so the server refuses to serve through one
(``Database.check_login_role``). The same check says whether the role may call migration
007's functions, which the compiled writes need.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_LOGIN_ROLE_CHECK = text(
    """
    SELECT r.rolname, r.rolsuper, r.rolbypassrls,
           EXISTS (
               SELECT 1 FROM pg_class c
                WHERE c.relnamespace = 'public'::regnamespace
                  AND c.relname IN ('orders', 'fills', 'execution_logs')
                  AND pg_has_role(current_user, c.relowner, 'MEMBER')
           ) AS owns_tables,
           -- Migration 007's compiled writes (on Supabase a login role of one's own needs
           -- the grants of README's step 3); the schema first: without USAGE its functions
           -- cannot even be looked up.
           CASE WHEN coalesce(
                    has_schema_privilege(to_regnamespace('order_api_private')::oid, 'USAGE'), false)
                THEN coalesce(
                    has_function_privilege(
                        to_regprocedure('order_api_private.submit_order(text,text,jsonb)')::oid,
                        'EXECUTE')
                    AND has_function_privilege(
                        to_regprocedure(
                            'order_api_private.cancel_order(text,text,uuid,text,text[])')::oid,
                        'EXECUTE'),
                    false)
                ELSE false END AS compiled_writes
      FROM pg_roles r WHERE r.rolname = current_user
    """
)


class UnsafeLoginRole(RuntimeError):
    """The API's login role would bypass row level security; the server refuses to start."""


@dataclass(frozen=True)
class LoginRole:
    name: str
    superuser: bool
    bypass_rls: bool
    owns_tables: bool
    compiled_writes: bool = False
    """May call migration 007's functions (graphql/compiled/mutations.py)."""


async def login_role(engine: AsyncEngine) -> LoginRole:
    """What the pool's login role is and may do."""
    async with engine.connect() as conn:
        row = (await conn.execute(_LOGIN_ROLE_CHECK)).one()
    return LoginRole(
        name=row.rolname,
        superuser=row.rolsuper,
        bypass_rls=row.rolbypassrls,
        owns_tables=row.owns_tables,
        compiled_writes=row.compiled_writes,
    )


def refuse_unsafe(role: LoginRole) -> LoginRole:
    """``role``, unless row level security would not apply to it (``UnsafeLoginRole``)."""
    problems = [
        reason
        for flag, reason in (
            (role.superuser, "is a superuser"),
            (role.bypass_rls, "has BYPASSRLS"),
            (role.owns_tables, "owns the order tables (or is a member of their owner)"),
        )
        if flag
    ]
    if problems:
        raise UnsafeLoginRole(
            f"refusing to serve: the database login role {role.name!r} "
            + " and ".join(problems)
            + "; row level security would not protect traders. Connect as 'authenticator'"
            " (API_DATABASE_URL)."
        )
    return role
