"""Timestamps as PostgreSQL's ``to_json`` writes a timestamptz in a UTC session.

ISO 8601 with a ``+00:00`` offset and the fraction of a second without trailing
zeros (``2026-11-24T21:02:45.80425+00:00``). Python writes them the same way here,
so that JSON built by PostgreSQL (compiled queries) and by Python (resolvers,
cursors) is the same text. Transactions run with ``TimeZone=UTC`` (db/session.py).
"""

from __future__ import annotations

from datetime import UTC, datetime


def isoformat(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat()
    head, dot, rest = text.partition(".")
    if not dot:
        return text
    fraction, offset = rest[:6].rstrip("0"), rest[6:]
    return f"{head}.{fraction}{offset}" if fraction else f"{head}{offset}"
