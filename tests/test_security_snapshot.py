"""Every change of who-can-do-what is a one-file diff in review.

tests/security/privileges.snapshot is what the migrated database grants (see
tests/privileges.py for what is rendered and how). After a migration changes a
grant, a policy, a trigger or a function's privileges on purpose, regenerate it
and review the diff with the change:

    UPDATE_SNAPSHOT=1 pytest tests/test_security_snapshot.py
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from tests import pg, privileges

SNAPSHOT = Path(__file__).parent / "security" / "privileges.snapshot"


async def test_the_database_grants_exactly_what_the_snapshot_says(cluster: pg.Cluster) -> None:
    # The template is migrated in place (per-test copies do not inherit database-level
    # grants such as TEMPORARY); read it, then let it go so it can be copied again.
    conn = await asyncpg.connect(cluster.dsn(pg.TEMPLATE))
    try:
        actual = await privileges.render(conn)
    finally:
        await conn.close()
    if os.environ.get("UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text("\n".join(actual) + "\n")
    expected = SNAPSHOT.read_text().splitlines()
    assert actual == expected, (
        "the database's grants differ from tests/security/privileges.snapshot"
        " (if on purpose: UPDATE_SNAPSHOT=1 pytest tests/test_security_snapshot.py)\n"
        + privileges.diff(expected, actual)
    )
