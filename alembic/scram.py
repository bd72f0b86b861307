"""SCRAM-SHA-256 password verifiers, computed client-side (RFC 5802, RFC 7677).

``ALTER ROLE ... PASSWORD`` given a verifier stores it as is, so the password
itself never reaches the server: not its statement log, not ``--sql`` output.
The format is PostgreSQL's: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``.

Migration 001's alone (it sets AUTHENTICATOR_PASSWORD), kept beside the revisions and loaded
by path, so that the frozen revision does not depend on the application's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

ITERATIONS = 4096
"""PostgreSQL's default (scram_iterations)."""


class UnsupportedPassword(ValueError):
    """A password PostgreSQL would first normalise (SASLprep): we refuse to guess that step."""


def scram_sha_256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS
) -> str:
    # PostgreSQL applies SASLprep to non-ASCII passwords before hashing; printable ASCII
    # passes through it unchanged, so for those this verifier is exactly the server's.
    if not password or not all(" " <= ch <= "~" for ch in password):
        raise UnsupportedPassword(
            "AUTHENTICATOR_PASSWORD must be 1 or more printable ASCII characters"
        )
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
