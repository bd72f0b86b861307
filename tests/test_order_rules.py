"""Every rule submitOrder and cancelOrder apply holds in the database too (migrations 003, 006).

On Supabase a trader can write ``orders`` past this API: through the Data API (PostgREST),
pg_graphql or plain SQL, as ``authenticated`` with their own claims, which is exactly what
tests.sql.as_role does. Each rule below is tried both ways, on plain PostgreSQL and on the
Supabase-like cluster: in plain SQL the database refuses it (SQLSTATE OA422 naming the
API's field as the error's column, or a constraint, a grant or a type where those already
refused it), and through the API the same input is BAD_USER_INPUT naming the same field.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from app.orders import validation
from app.settings import Settings, SettingsError
from tests import pg, supabase
from tests.api import Client, api_client, api_settings
from tests.conftest import Db, SupabaseSession
from tests.sql import as_role

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id symbol } }"
CANCEL = "mutation($id: UUID!, $reason: String) { cancelOrder(id: $id, reason: $reason) { id } }"
PAST = datetime(2020, 1, 1, tzinfo=UTC)
TOMORROW = datetime.now(UTC) + timedelta(days=1)
NEXT_WEEK = datetime.now(UTC) + timedelta(days=7)
BEYOND_HORIZON = datetime.now(UTC) + validation.HORIZON + timedelta(days=1)
HUGE = "1000000000000000000000000000000.001"  # past Decimal's 28 digits: quantize would raise


@dataclass(frozen=True)
class Rule:
    field: str
    """The API's input field, and the column the database names (OA422)."""
    row: dict[str, Any]
    """Changes to a valid row, for plain SQL."""
    api: dict[str, Any]
    """The same changes to a valid submitOrder input."""
    sqlstate: str = "OA422"
    """What the database answers (OA422 unless a constraint, grant or type refused it before)."""


RULES: dict[str, Rule] = {
    "quantity zero": Rule("quantity", {"quantity": 0}, {"quantity": 0}),
    "quantity above the limit": Rule(
        "quantity",
        {"quantity": 1001, "order_type": "MARKET", "price": None},
        {"quantity": 1001, "orderType": "MARKET", "price": None},
    ),
    "order value above the limit": Rule(
        "quantity",
        {"quantity": 1000, "price": Decimal("60.00")},
        {"quantity": 1000, "price": "60.00"},
    ),
    "symbol malformed": Rule("symbol", {"symbol": "AA PL"}, {"symbol": "AA PL"}),
    "symbol not tradable": Rule("symbol", {"symbol": "ZZZZ"}, {"symbol": "ZZZZ"}),
    "price with three decimals": Rule("price", {"price": Decimal("10.005")}, {"price": "10.005"}),
    "price zero": Rule("price", {"price": Decimal("0")}, {"price": "0"}),
    "price negative": Rule("price", {"price": Decimal("-1.00")}, {"price": "-1.00"}),
    "price beyond numeric(10, 2)": Rule(
        "price",
        {"price": Decimal("100000000.00"), "quantity": 1},
        {"price": "100000000.00", "quantity": 1},
    ),
    "market order with a price": Rule("price", {"order_type": "MARKET"}, {"orderType": "MARKET"}),
    "limit order without a price": Rule("price", {"price": None}, {"price": None}),
    "stop loss above a buy's price": Rule(
        "stopLoss", {"stop_loss": Decimal("11.00")}, {"stopLoss": "11.00"}
    ),
    "stop loss with three decimals": Rule(
        "stopLoss", {"stop_loss": Decimal("9.001")}, {"stopLoss": "9.001"}
    ),
    "take profit below a buy's price": Rule(
        "takeProfit", {"take_profit": Decimal("9.00")}, {"takeProfit": "9.00"}
    ),
    "take profit below a sell's stop loss side": Rule(
        "takeProfit",
        {"side": "SELL", "take_profit": Decimal("12.00")},
        {"side": "SELL", "takeProfit": "12.00"},
    ),
    "expiry in the past": Rule("expiresAt", {"expires_at": PAST}, {"expiresAt": PAST.isoformat()}),
    "client order id with a tab": Rule(
        "clientOrderId", {"client_order_id": "a\tb"}, {"clientOrderId": "a\tb"}
    ),
    "client order id not ASCII": Rule(
        "clientOrderId", {"client_order_id": "caf\u00e9"}, {"clientOrderId": "caf\u00e9"}
    ),
    "client order id of 65 characters": Rule(
        "clientOrderId",
        {"client_order_id": "x" * 65},
        {"clientOrderId": "x" * 65},
        sqlstate="22001",  # varchar(64) refuses it before any trigger runs
    ),
    "side neither BUY nor SELL": Rule("side", {"side": "HOLD"}, {"side": "HOLD"}, sqlstate="23514"),
    # Stop-limit and time in force (migration 006's orders_check_terms).
    "stop price on a LIMIT order": Rule(
        "stopPrice", {"stop_price": Decimal("9.00")}, {"stopPrice": "9.00"}
    ),
    "stop price on a MARKET order": Rule(
        "stopPrice",
        {"order_type": "MARKET", "price": None, "stop_price": Decimal("9.00")},
        {"orderType": "MARKET", "price": None, "stopPrice": "9.00"},
    ),
    "STOP_LIMIT without a stop price": Rule(
        "stopPrice", {"order_type": "STOP_LIMIT"}, {"orderType": "STOP_LIMIT"}
    ),
    "STOP_LIMIT without a price": Rule(
        "price",
        {"order_type": "STOP_LIMIT", "price": None, "stop_price": Decimal("9.50")},
        {"orderType": "STOP_LIMIT", "price": None, "stopPrice": "9.50"},
    ),
    "stop price with three decimals": Rule(
        "stopPrice",
        {"order_type": "STOP_LIMIT", "stop_price": Decimal("9.505")},
        {"orderType": "STOP_LIMIT", "stopPrice": "9.505"},
    ),
    "stop price zero": Rule(
        "stopPrice",
        {"order_type": "STOP_LIMIT", "stop_price": Decimal("0")},
        {"orderType": "STOP_LIMIT", "stopPrice": "0"},
    ),
    "IOC on a STOP order": Rule(
        "timeInForce",
        {"order_type": "STOP", "time_in_force": "IOC"},
        {"orderType": "STOP", "timeInForce": "IOC"},
    ),
    "FOK on a STOP_LIMIT order": Rule(
        "timeInForce",
        {"order_type": "STOP_LIMIT", "stop_price": Decimal("9.50"), "time_in_force": "FOK"},
        {"orderType": "STOP_LIMIT", "stopPrice": "9.50", "timeInForce": "FOK"},
    ),
    "IOC with an expiry": Rule(
        "expiresAt",
        {"time_in_force": "IOC", "expires_at": TOMORROW},
        {"timeInForce": "IOC", "expiresAt": TOMORROW.isoformat()},
    ),
    "FOK with an expiry": Rule(
        "expiresAt",
        {"time_in_force": "FOK", "expires_at": TOMORROW},
        {"timeInForce": "FOK", "expiresAt": TOMORROW.isoformat()},
    ),
    # The session close is at most 3 days ahead (a Friday evening's is Monday's).
    "DAY expiring after the session close": Rule(
        "expiresAt",
        {"time_in_force": "DAY", "expires_at": NEXT_WEEK},
        {"timeInForce": "DAY", "expiresAt": NEXT_WEEK.isoformat()},
    ),
    # Issue 18: what a reader could not decode, and what Python read differently.
    "expiry beyond the horizon": Rule(
        "expiresAt", {"expires_at": BEYOND_HORIZON}, {"expiresAt": BEYOND_HORIZON.isoformat()}
    ),
    "expiry infinite": Rule(
        "expiresAt",
        {"expires_at": datetime.max.replace(tzinfo=UTC)},  # asyncpg sends it as 'infinity'
        {"expiresAt": "9999-12-31T23:59:59-14:00"},  # the year 10000 in UTC
    ),
    "price of 34 digits": Rule("price", {"price": Decimal(HUGE)}, {"price": HUGE}),
    "stop loss of 34 digits": Rule("stopLoss", {"stop_loss": Decimal(HUGE)}, {"stopLoss": HUGE}),
    "take profit of 34 digits": Rule(
        "takeProfit", {"take_profit": Decimal(HUGE)}, {"takeProfit": HUGE}
    ),
    "stop price of 34 digits": Rule(
        "stopPrice",
        {"order_type": "STOP_LIMIT", "stop_price": Decimal(HUGE)},
        {"orderType": "STOP_LIMIT", "stopPrice": HUGE},
    ),
    "symbol with a sharp s": Rule("symbol", {"symbol": "\u00df"}, {"symbol": "\u00df"}),
    "symbol with a ligature": Rule("symbol", {"symbol": "\ufb00"}, {"symbol": "\ufb00"}),
    "symbol with a dotless i": Rule("symbol", {"symbol": "\u0131bm"}, {"symbol": "\u0131bm"}),
    "symbol with a newline": Rule("symbol", {"symbol": "aapl\n"}, {"symbol": "aapl\n"}),
    "symbol with a tab": Rule("symbol", {"symbol": "\taapl"}, {"symbol": "\taapl"}),
    "time in force null": Rule(
        "timeInForce", {"time_in_force": None}, {"timeInForce": None}, sqlstate="OA422"
    ),
}


@dataclass
class Setup:
    client: Client
    login: asyncpg.Connection
    trader: uuid.UUID

    @property
    def token(self) -> str:
        return self.client.token(self.trader)


LIMITS = (
    "UPDATE order_limits SET max_quantity = 1000, max_notional = 50000, symbols = '{AAPL,MSFT}'"
)


@pytest.fixture(scope="module", params=["postgresql", "supabase"])
async def setup(
    request: pytest.FixtureRequest, cluster: pg.Cluster, supabase_cluster: SupabaseSession
) -> AsyncIterator[Setup]:
    # (Both clusters as arguments: they start with asyncio.run, which cannot run in here.)
    if request.param == "supabase":
        name = await supabase.create_database(supabase_cluster.cluster)
        db: Any = supabase.SupabaseDb(supabase_cluster.cluster, name)
        login_dsn = db.dsn(supabase.LOGIN)
    else:
        name = await pg.create_test_database(cluster)
        db = Db(cluster, name)
        login_dsn = db.dsn("authenticator")
    owner = await asyncpg.connect(db.dsn())
    login = await asyncpg.connect(login_dsn)
    try:
        await owner.execute(LIMITS)
        async with api_client(api_settings(db)) as client:
            yield Setup(client, login, uuid.uuid4())
    finally:
        await login.close()
        await owner.close()
        if request.param == "supabase":
            await supabase.drop_database(db.cluster, name)
        else:
            await pg.drop_test_database(db.cluster, name)


def valid_row(trader: uuid.UUID) -> dict[str, Any]:
    return {
        "trader_id": trader,
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 100,
        "order_type": "LIMIT",
        "price": Decimal("10.00"),
        "stop_loss": None,
        "take_profit": None,
        "expires_at": None,
        "client_order_id": None,
    }


def valid_input() -> dict[str, Any]:
    return {
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": 100,
        "orderType": "LIMIT",
        "price": "10.00",
    }


async def insert_as_trader(setup: Setup, row: dict[str, Any]) -> asyncpg.Record:
    """INSERT as the Data API would run it for this trader (rolled back)."""
    columns = ", ".join(row)
    casts = {"order_type": "::order_type_enum", "time_in_force": "::time_in_force_enum"}
    values = ", ".join(f"${i}{casts.get(column, '')}" for i, column in enumerate(row, start=1))
    async with as_role(setup.login, "authenticated", setup.trader) as conn:
        record: asyncpg.Record = await conn.fetchrow(
            f"INSERT INTO orders ({columns}) VALUES ({values}) RETURNING symbol, price",
            *row.values(),
        )
    return record


async def test_the_valid_order_of_every_rule_below_is_accepted_both_ways(setup: Setup) -> None:
    # So that each refusal below is the rule's, not the baseline's.
    assert (await insert_as_trader(setup, valid_row(setup.trader)))["symbol"] == "AAPL"
    body = await setup.client.gql(SUBMIT, {"input": valid_input()}, token=setup.token)
    assert "errors" not in body, body


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
async def test_the_database_refuses_what_the_api_refuses_in_plain_sql(
    setup: Setup, rule: Rule
) -> None:
    with pytest.raises(asyncpg.PostgresError) as refused:
        await insert_as_trader(setup, valid_row(setup.trader) | rule.row)
    assert refused.value.sqlstate == rule.sqlstate, refused.value
    if rule.sqlstate == "OA422":
        assert refused.value.column_name == rule.field


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
async def test_the_api_answers_bad_user_input_naming_the_field(setup: Setup, rule: Rule) -> None:
    body = await setup.client.gql(SUBMIT, {"input": valid_input() | rule.api}, token=setup.token)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["field"] == rule.field, error


async def test_a_symbol_is_normalised_the_same_way_both_ways(setup: Setup) -> None:
    stored = await insert_as_trader(setup, valid_row(setup.trader) | {"symbol": " msft "})
    assert stored["symbol"] == "MSFT"
    body = await setup.client.gql(
        SUBMIT, {"input": valid_input() | {"symbol": " msft "}}, token=setup.token
    )
    assert body["data"]["submitOrder"]["symbol"] == "MSFT", body


async def test_a_price_is_stored_with_two_decimals_both_ways(setup: Setup) -> None:
    stored = await insert_as_trader(setup, valid_row(setup.trader) | {"price": Decimal("10.5")})
    assert str(stored["price"]) == "10.50"


async def test_an_expiry_in_the_future_is_accepted(setup: Setup) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    stored = await insert_as_trader(setup, valid_row(setup.trader) | {"expires_at": later})
    assert stored["symbol"] == "AAPL"


# --- what a cancel may touch -------------------------------------------------------------------


async def _own_open_order(setup: Setup) -> uuid.UUID:
    body = await setup.client.gql(SUBMIT, {"input": valid_input()}, token=setup.token)
    return uuid.UUID(body["data"]["submitOrder"]["id"])


@pytest.mark.parametrize(
    ("change", "sqlstate"),
    [
        ("quantity = 1", "42501"),  # column grants: status and status_reason only
        ("price = 1.00", "42501"),
        ("trader_id = gen_random_uuid()", "42501"),
        # The lifecycle trigger, then the policy: a trader's only new status is CANCELLED.
        ("status = 'FILLED'", "OA409"),
        ("status = 'CANCELLED', status_reason = repeat('x', 501)", "23514"),
    ],
)
async def test_a_trader_in_plain_sql_may_only_cancel_with_a_bounded_reason(
    setup: Setup, change: str, sqlstate: str
) -> None:
    order_id = await _own_open_order(setup)
    async with as_role(setup.login, "authenticated", setup.trader) as conn:
        with pytest.raises(asyncpg.PostgresError) as refused:
            await conn.execute(f"UPDATE orders SET {change} WHERE id = $1", order_id)
    assert refused.value.sqlstate == sqlstate


async def test_the_api_refuses_the_same_overlong_cancel_reason(setup: Setup) -> None:
    order_id = await _own_open_order(setup)
    body = await setup.client.gql(
        CANCEL, {"id": str(order_id), "reason": "x" * 501}, token=setup.token
    )
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "reason"


async def test_a_limit_the_owner_changes_applies_at_once_to_the_api_and_the_database(
    setup: Setup,
) -> None:
    order = valid_input() | {"symbol": "MSFT", "quantity": 900, "price": "50.00"}
    # 900 x 50.00 = 45,000, under the module's limit of 50,000 (checked above to refuse 60,000).
    body = await setup.client.gql(SUBMIT, {"input": order}, token=setup.token)
    assert "errors" not in body, body


async def test_when_the_api_misses_a_rule_the_database_still_answers_bad_user_input(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the Python rules had drifted from the database's: the trigger's refusal reaches
    # the caller as the same BAD_USER_INPUT naming the field, not as an internal error.
    monkeypatch.setattr(validation, "_check_protective_prices", lambda *args: None)
    body = await setup.client.gql(
        SUBMIT, {"input": valid_input() | {"stopLoss": "11.00"}}, token=setup.token
    )
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "stopLoss"}
    assert "stopLoss must be below the price" in error["message"]


@pytest.mark.parametrize(
    "name", ["MAX_ORDER_QUANTITY", "RISK_MAX_QUANTITY", "RISK_MAX_NOTIONAL", "RISK_SYMBOLS"]
)
def test_a_limit_still_set_in_the_environment_is_refused_with_where_it_went(name: str) -> None:
    with pytest.raises(SettingsError, match=f"{name} is no longer read: .*UPDATE order_limits"):
        Settings.from_env({name: "5"})
