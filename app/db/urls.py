"""Connection URLs: one spelling in, the right driver out.

Users give libpq-style URLs (``postgresql://user:pass@host/db``, as in the
migration guide and Supabase's dashboard); SQLAlchemy needs the asyncpg driver
named, and asyncpg spells TLS options differently from libpq.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

from app.settings import Settings, SettingsError

_LIBPQ_ONLY_QUERY_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "channel_binding")


def async_url(url: str) -> URL:
    """The SQLAlchemy URL for asyncpg, from any postgres URL spelling."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    query = dict(parsed.query)
    sslmode = query.pop("sslmode", None)
    for key in _LIBPQ_ONLY_QUERY_KEYS:
        query.pop(key, None)
    if sslmode is not None and sslmode != "disable":
        # asyncpg takes libpq's sslmode values under the name "ssl".
        query["ssl"] = sslmode
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def libpq_url(url: str | URL) -> str:
    """The URL for psql and other libpq tools (no driver suffix)."""
    parsed = make_url(url) if isinstance(url, str) else url
    query = dict(parsed.query)
    if "ssl" in query:
        query["sslmode"] = query.pop("ssl")
    return parsed.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def with_user(url: str | URL, user: str, password: str | None = None) -> URL:
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.set(username=user, password=password)


def api_database_url(settings: Settings) -> str | None:
    """The API's and engine's login: ``API_DATABASE_URL``, else derived from ``DATABASE_URL``
    as ``authenticator`` with ``AUTHENTICATOR_PASSWORD`` (as migrations set it up); None when
    neither URL is set (the embedded server). With ``DATABASE_URL`` but no way to log in as
    authenticator, refuses rather than fall back to another database."""
    if settings.api_database_url is not None:
        return settings.api_database_url
    if settings.database_url is None:
        return None
    if settings.authenticator_password is None:
        raise SettingsError(
            "API_DATABASE_URL is not set: with DATABASE_URL set, set API_DATABASE_URL to the"
            " 'authenticator' login, or AUTHENTICATOR_PASSWORD to derive it from DATABASE_URL"
        )
    derived = with_user(settings.database_url, "authenticator", settings.authenticator_password)
    return derived.render_as_string(hide_password=False)
