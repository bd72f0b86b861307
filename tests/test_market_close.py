"""MARKET_CLOSE: ``db upgrade`` writes it into the database's trading_session, the one
definition of the close that the API, the engine and plain SQL all read."""

from __future__ import annotations

import uuid
from datetime import time

import asyncpg
import pytest

from app.db import trading_session
from app.db.timestamps import isoformat
from app.settings import SettingsError
from tests.api import api_client, api_settings
from tests.conftest import Db
from tests.test_cli import run_app

SUBMIT_DAY = """
mutation { submitOrder(input: {symbol: "AAPL", side: BUY, quantity: 1, orderType: MARKET,
  timeInForce: DAY}) { expiresAt timeInForce } }
"""


def upgrade(database: Db, market_close: str | None) -> tuple[int, str]:
    env = {"DATABASE_URL": database.owner_url.render_as_string(hide_password=False)}
    if market_close is not None:
        env["MARKET_CLOSE"] = market_close
    done = run_app("db", "upgrade", env=env)
    return done.returncode, done.stderr


async def session_row(owner_conn: asyncpg.Connection) -> tuple[time, str]:
    row = await owner_conn.fetchrow("SELECT close_time, time_zone FROM trading_session")
    return row["close_time"], row["time_zone"]


async def test_db_upgrade_writes_market_close_and_the_api_follows_the_database(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    assert await session_row(owner_conn) == (time(16, 0), "America/New_York")  # the default

    code, stderr = upgrade(database, "9:30 Asia/Tokyo")
    assert code == 0, stderr
    assert "session close set to 09:30 Asia/Tokyo (MARKET_CLOSE)" in stderr

    assert await session_row(owner_conn) == (time(9, 30), "Asia/Tokyo")
    close = await owner_conn.fetchval("SELECT public.session_close(now())")
    async with api_client(api_settings(database)) as client:
        body = await client.gql(SUBMIT_DAY, token=client.token(uuid.uuid4()))
    assert "errors" not in body, body
    # A DAY order ends at the close the database now defines: nothing in Python restated it.
    assert body["data"]["submitOrder"]["timeInForce"] == "DAY"
    assert body["data"]["submitOrder"]["expiresAt"] == isoformat(close)

    # Unset, an upgrade leaves the row as it is.
    code, stderr = upgrade(database, None)
    assert (code, "MARKET_CLOSE" in stderr) == (0, False), stderr
    assert await session_row(owner_conn) == (time(9, 30), "Asia/Tokyo")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("16h00 America/New_York", "MARKET_CLOSE must be 'HH:MM Zone'"),
        ("16:00", "MARKET_CLOSE must be 'HH:MM Zone'"),
        ("24:00 America/New_York", "no such time of day: 24:00"),
        ("16:00 Mars/Olympus_Mons", "time zone PostgreSQL does not know: 'Mars/Olympus_Mons'"),
    ],
)
async def test_db_upgrade_refuses_a_malformed_market_close_and_changes_nothing(
    database: Db, owner_conn: asyncpg.Connection, value: str, message: str
) -> None:
    code, stderr = upgrade(database, value)

    # One line after alembic's own log lines (the value is checked when it is written).
    *_, last = stderr.strip().splitlines()
    assert (code, last.startswith("python -m app db upgrade: error: MARKET_CLOSE")) == (2, True), (
        stderr
    )
    assert message in last
    assert "Traceback" not in stderr
    assert await session_row(owner_conn) == (time(16, 0), "America/New_York")


def test_market_close_is_parsed_as_hours_minutes_and_zone() -> None:
    assert trading_session.parse(" 16:30  Europe/London ") == (time(16, 30), "Europe/London")
    with pytest.raises(SettingsError, match="no such time of day: 12:60"):
        trading_session.parse("12:60 UTC")
