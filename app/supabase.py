"""What the API takes from a Supabase project: its URL and the names it gives the keys.

``SUPABASE_URL`` implies where tokens' public keys are (its Auth server's JWKS) and their
issuer; Supabase calls the HS256 secret ``SUPABASE_JWT_SECRET``, which we accept beside our
``JWT_SECRET``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from app.env_parsing import Reader, SettingsError, parse_one_of, parse_str, reads

AUTH_PATH = "/auth/v1"
"""Where a Supabase project serves Auth: its tokens' ``iss``, and its JWKS below it."""
JWKS_PATH = AUTH_PATH + "/.well-known/jwks.json"


def project_url(env: Mapping[str, str]) -> str | None:
    raw = parse_str(env, "SUPABASE_URL")
    if raw is None:
        return None
    url = urllib.parse.urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/"):
        raise SettingsError(
            f"SUPABASE_URL must be the project URL, like https://<ref>.supabase.co, got {raw!r}"
        )
    if url.query or url.fragment or url.username or url.password:
        raise SettingsError(f"SUPABASE_URL must be a bare project URL, got {raw!r}")
    return f"{url.scheme}://{url.netloc}"


def jwt_secret(env: Mapping[str, str]) -> str | None:
    # Supabase names the project's HS256 secret SUPABASE_JWT_SECRET; accept either name.
    ours, theirs = parse_str(env, "JWT_SECRET"), parse_str(env, "SUPABASE_JWT_SECRET")
    if ours is not None and theirs is not None and ours != theirs:
        raise SettingsError("JWT_SECRET and SUPABASE_JWT_SECRET are both set and differ; set one")
    return ours if ours is not None else theirs


# --- readers of the settings' declarations (app/settings.py) ---


def implied(path: str, kind: str) -> Reader:
    """The variable's value, or the one SUPABASE_URL implies (``path`` below the project)."""

    @reads(kind)
    def read(env: Mapping[str, str], name: str, default: None) -> str | None:
        project = project_url(env)
        implied = None if project is None else project + path
        return parse_one_of(env, name, implied, "SUPABASE_URL")

    return read


@reads("URL")
def url_reader(env: Mapping[str, str], name: str, default: None) -> str | None:
    return project_url(env)
