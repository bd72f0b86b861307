"""``MARKET_CLOSE``: the operator's way to set the session close, written into the database.

The close of the trading day is one row, ``public.trading_session`` (migration 006), read by
``public.session_close`` in every writer's transaction: the API, the engine and plain SQL all
ask the database, and nothing in Python restates it. ``MARKET_CLOSE`` (e.g. ``16:00
America/New_York``) only sets that row: ``python -m app db upgrade`` and ``python -m app dev``
run as the owner, and after migrating they write it when it is set. Unset, the row keeps what
it has (the migration's default, 16:00 America/New_York, or an earlier MARKET_CLOSE).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import time

import asyncpg  # type: ignore[import-untyped]  # ships no type information

from app.db.urls import libpq_url
from app.settings import SettingsError

log = logging.getLogger(__name__)

_FORMAT = re.compile(r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s+(?P<zone>\S+)")
EXAMPLE = "16:00 America/New_York"

# One row (its id is always true); the owner's policy trading_session_owner lets it write.
_WRITE = (
    "INSERT INTO public.trading_session (close_time, time_zone) VALUES ($1, $2)"
    " ON CONFLICT (id) DO UPDATE SET close_time = EXCLUDED.close_time,"
    " time_zone = EXCLUDED.time_zone, updated_at = now()"
)


def parse(value: str) -> tuple[time, str]:
    """``HH:MM Zone`` as the close time and the IANA zone name (checked by PostgreSQL)."""
    match = _FORMAT.fullmatch(value.strip())
    if match is None:
        raise SettingsError(f"MARKET_CLOSE must be 'HH:MM Zone', e.g. {EXAMPLE!r}")
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise SettingsError(
            f"MARKET_CLOSE has no such time of day: {match['hour']}:{match['minute']}"
        )
    return time(hour, minute), match["zone"]


async def write(owner_url: str, value: str) -> None:
    """Set the session close to ``value`` (MARKET_CLOSE's format), as the database owner."""
    close_time, zone = parse(value)
    conn = await asyncpg.connect(libpq_url(owner_url))
    try:
        await conn.execute(_WRITE, close_time, zone)
    except (asyncpg.InvalidParameterValueError, asyncpg.CheckViolationError) as error:
        # PostgreSQL refuses an unknown zone in the row's check (ck_trading_session_time_zone).
        if "time zone" not in str(error) and "time_zone" not in str(error):
            raise
        raise SettingsError(
            f"MARKET_CLOSE names a time zone PostgreSQL does not know: {zone!r}"
            " (an IANA name such as America/New_York or Europe/London)"
        ) from None
    finally:
        await conn.close()
    log.info("session close set to %s %s (MARKET_CLOSE)", close_time.strftime("%H:%M"), zone)


def apply(owner_url: str, value: str | None) -> None:
    """What ``db upgrade`` and ``dev`` do after migrating: write MARKET_CLOSE when it is set."""
    if value is not None:
        asyncio.run(write(owner_url, value))
