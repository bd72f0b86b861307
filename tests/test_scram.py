"""AUTHENTICATOR_PASSWORD reaches the server only as a SCRAM verifier computed here."""

from __future__ import annotations

import base64
import uuid

import asyncpg
import pytest
from alembic.util import load_python_file

from app.db.migrations import PROJECT_ROOT

# Migration 001's own helper, beside the revisions (no importable module name: loaded by path).
scram = load_python_file(PROJECT_ROOT / "alembic", "scram.py")
UnsupportedPassword = scram.UnsupportedPassword
scram_sha_256_verifier = scram.scram_sha_256_verifier


async def test_the_verifier_is_the_one_postgresql_computes_for_the_password(
    owner_conn: asyncpg.Connection,
) -> None:
    role = f"scram_{uuid.uuid4().hex[:12]}"
    password = "Tr0ub4dor&3 horse-battery"
    await owner_conn.execute("SET password_encryption = 'scram-sha-256'")
    await owner_conn.execute(f"CREATE ROLE {role} PASSWORD '{password}'")
    try:
        stored = await owner_conn.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role
        )
        iterations, salt = stored.split("$")[1].split(":")
        ours = scram_sha_256_verifier(
            password, salt=base64.b64decode(salt), iterations=int(iterations)
        )
        assert ours == stored
    finally:
        await owner_conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("password", ["", "pässword", "tab\tinside"])
def test_a_password_postgresql_would_normalise_first_is_refused(password: str) -> None:
    with pytest.raises(UnsupportedPassword, match="AUTHENTICATOR_PASSWORD"):
        scram_sha_256_verifier(password)


def test_two_verifiers_of_one_password_differ_by_their_salt() -> None:
    assert scram_sha_256_verifier("same") != scram_sha_256_verifier("same")
