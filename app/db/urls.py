"""Connection URLs: one spelling in, the right driver out.

Users give libpq-style URLs (``postgresql://user:pass@host/db``, as in the
migration guide and Supabase's dashboard); SQLAlchemy needs the asyncpg driver
named, and asyncpg spells TLS options differently from libpq.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

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
