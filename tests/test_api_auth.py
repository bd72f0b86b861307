"""Tokens at the HTTP boundary: a present but invalid token is 401 before anything runs.

The invalid-token cases share one app and database (module scope): each case submits an order
with its own symbol, and the test checks both that the engine sent no statement at all during
the request and that no order with that symbol exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import jwt
import pytest

from app.db.session import UnsafeLoginRole
from app.main import create_app
from app.settings import SettingsError
from tests import pg
from tests.api import SECRET, Client, api_client, api_settings, statements_sent
from tests.conftest import Db

SUBMIT = "mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
OTHER_SECRET = "another-secret-that-is-also-long-enough-0123456789"
DROP = object()


def payload(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "role": "authenticated",
        "sub": str(uuid.uuid4()),
    }
    for name, value in changes.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def signed(secret: str = SECRET, **changes: Any) -> str:
    return jwt.encode(payload(**changes), secret, algorithm="HS256", headers={"typ": "JWT"})


def unsigned(**changes: Any) -> str:
    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload(**changes))}."


def bearer(token: str) -> str:
    return f"Bearer {token}"


INVALID_AUTHORIZATION: dict[str, Callable[[], str]] = {
    "bad signature": lambda: bearer(signed(OTHER_SECRET)),
    "alg none": lambda: bearer(unsigned()),
    "alg none with the real signature": lambda: bearer(unsigned() + signed().rsplit(".", 1)[1]),
    "expired": lambda: bearer(signed(exp=int(time.time()) - 3600)),
    "no exp": lambda: bearer(signed(exp=DROP)),
    "exp as string": lambda: bearer(signed(exp=str(int(time.time()) + 3600))),
    "exp as boolean": lambda: bearer(signed(exp=True)),
    "iat as string": lambda: bearer(signed(iat=str(int(time.time())))),
    "nbf as string": lambda: bearer(signed(nbf=str(int(time.time())))),
    "nbf in the future": lambda: bearer(signed(nbf=int(time.time()) + 3600)),
    "iat in the future": lambda: bearer(signed(iat=int(time.time()) + 3600)),
    "wrong audience": lambda: bearer(signed(aud="someone-else")),
    "missing audience": lambda: bearer(signed(aud=DROP)),
    "missing role": lambda: bearer(signed(role=DROP)),
    "role outside the list": lambda: bearer(signed(role="admin")),
    "forged role postgres": lambda: bearer(signed(role="postgres")),
    "forged role authenticator": lambda: bearer(signed(role="authenticator")),
    "forged role supabase_admin": lambda: bearer(signed(role="supabase_admin")),
    "sub not a uuid": lambda: bearer(signed(sub="trader-42")),
    "sub a number": lambda: bearer(signed(sub=42)),
    "sub missing for authenticated": lambda: bearer(signed(sub=DROP)),
    # Shaped like Supabase's API keys (iss "supabase", no aud, no sub) but claiming a user's role.
    "forged api key with role authenticated": lambda: bearer(
        signed(iss="supabase", ref="abcdefghijklmnopqrst", role="authenticated", aud=DROP, sub=DROP)
    ),
    "forged api key with role authenticated and our audience": lambda: bearer(
        signed(iss="supabase", ref="abcdefghijklmnopqrst", role="authenticated", sub=DROP)
    ),
    "not a jwt": lambda: bearer("not-a-token"),
    "basic scheme": lambda: "Basic " + base64.b64encode(b"user:pass").decode(),
    "bearer without token": lambda: "Bearer",
    "bearer with two tokens": lambda: f"Bearer {signed()} {signed()}",
    "token without scheme": lambda: signed(),
}


def symbol_for(case: str) -> str:
    return "X" + hashlib.sha256(case.encode()).hexdigest()[:8].upper()


async def submit_with(client: Client, authorization: str, symbol: str) -> Any:
    return await client.http.post(
        "/graphql",
        json={
            "query": SUBMIT,
            "variables": {
                "input": {"symbol": symbol, "side": "BUY", "quantity": 1, "orderType": "MARKET"}
            },
        },
        headers={"Authorization": authorization},
    )


async def orders_with_symbol(db: Db, symbol: str) -> int:
    conn = await asyncpg.connect(db.dsn())
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM orders WHERE symbol = $1", symbol)
        return count
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def shared(cluster: pg.Cluster) -> AsyncIterator[tuple[Client, Db]]:
    db = Db(cluster, await pg.create_test_database(cluster))
    try:
        async with api_client(api_settings(db)) as client:
            yield client, db
    finally:
        await pg.drop_test_database(cluster, db.name)


@pytest.mark.parametrize("case", list(INVALID_AUTHORIZATION))
async def test_an_invalid_token_is_refused_with_401_before_anything_runs(
    shared: tuple[Client, Db], case: str
) -> None:
    client, db = shared
    symbol = symbol_for(case)
    with statements_sent(client) as sent:
        response = await submit_with(client, INVALID_AUTHORIZATION[case](), symbol)
    assert response.status_code == 401, response.text
    assert "submitOrder" not in response.text
    assert sent == []
    assert await orders_with_symbol(db, symbol) == 0


async def test_a_valid_token_built_like_the_refused_ones_is_accepted(
    shared: tuple[Client, Db],
) -> None:
    # The refusals above are for the one thing each case breaks, not for the builder.
    client, db = shared
    symbol = symbol_for("valid")
    with statements_sent(client) as sent:
        response = await submit_with(client, bearer(signed()), symbol)
    assert response.status_code == 200, response.text
    assert sent  # the statement counter does see a request that runs
    assert "errors" not in response.json(), response.text
    assert await orders_with_symbol(db, symbol) == 1


async def test_a_query_with_an_invalid_token_is_refused_too(shared: tuple[Client, Db]) -> None:
    client, _ = shared
    with statements_sent(client) as sent:
        response = await client.post("{ viewer { role } }", token=signed(OTHER_SECRET))
    assert response.status_code == 401
    assert sent == []


async def test_a_token_forging_the_table_owners_role_is_refused(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    owner = await owner_conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename='orders'")
    assert owner
    async with api_client(api_settings(database)) as client:
        response = await submit_with(client, bearer(signed(role=owner)), "OWNER")
        assert response.status_code == 401, response.text
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 0


async def test_with_an_issuer_configured_a_wrong_or_missing_issuer_is_refused(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    issuer = "https://project.supabase.co/auth/v1"
    async with api_client(api_settings(database, jwt_issuer=issuer)) as client:
        wrong = await submit_with(client, bearer(signed(iss="https://evil.example/auth/v1")), "W")
        missing = await submit_with(client, bearer(signed()), "M")
        right = await submit_with(client, bearer(signed(iss=issuer)), "R")
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert right.status_code == 200
    assert "errors" not in right.json(), right.text
    rows = await owner_conn.fetch("SELECT symbol FROM orders")
    assert [row["symbol"] for row in rows] == ["R"]


@pytest.mark.parametrize("role", ["anon", "service_role"])
async def test_supabase_api_keys_run_as_their_role_beside_the_auth_issuer(
    database: Db, owner_conn: asyncpg.Connection, role: str
) -> None:
    # A project's API key as Supabase mints it: no aud, no sub, iss "supabase".
    key = jwt.encode(
        {
            "iss": "supabase",
            "ref": "abcdefghijklmnopqrst",
            "role": role,
            "iat": int(time.time()),
            "exp": int(time.time()) + 3600,
        },
        SECRET,
        algorithm="HS256",
    )
    issuer = "https://abcdefghijklmnopqrst.supabase.co/auth/v1"
    async with api_client(api_settings(database, jwt_issuer=issuer)) as client:
        trader = uuid.uuid4()
        user_token = client.token(trader, iss=issuer)
        await client.gql(
            SUBMIT,
            {"input": {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}},
            token=user_token,
        )
        body = await client.gql(
            "{ viewer { role traderId } orders { edges { node { id } } } }", token=key
        )
    assert "errors" not in body, body
    assert body["data"]["viewer"] == {"role": role, "traderId": None}
    # RLS decides by the role: the back office's key sees the trader's order, anon sees nothing.
    assert len(body["data"]["orders"]["edges"]) == (1 if role == "service_role" else 0)


async def test_without_a_token_queries_run_as_anon_and_see_nothing(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        order = await client.gql(
            SUBMIT,
            {"input": {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}},
            token=client.token(uuid.uuid4()),
        )
        order_id = order["data"]["submitOrder"]["id"]
        body = await client.gql(
            "query($id: UUID!) { viewer { traderId role } order(id: $id) { id }"
            " orders { edges { node { id } } } executionLogs { edges { node { id } } } }",
            {"id": order_id},
        )
    assert "errors" not in body, body
    assert body["data"] == {
        "viewer": {"traderId": None, "role": "anon"},
        "order": None,
        "orders": {"edges": []},
        "executionLogs": {"edges": []},
    }


ANON_MUTATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "submitOrder": (
        SUBMIT,
        {"input": {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}},
    ),
    "cancelOrder": ("mutation($id: UUID!) { cancelOrder(id: $id) { id } }", {"id": "ORDER"}),
    "approveOrder": ("mutation($id: UUID!) { approveOrder(id: $id) { id } }", {"id": "ORDER"}),
    "rejectOrder": (
        'mutation($id: UUID!) { rejectOrder(id: $id, reason: "no") { id } }',
        {"id": "ORDER"},
    ),
    "recordFill": (
        "mutation($id: UUID!) { recordFill(input: {orderId: $id, quantityFilled: 1,"
        ' priceAtFill: "1.00", venue: "PAPER"}) { id } }',
        {"id": "ORDER"},
    ),
}


async def test_without_a_token_every_mutation_fails_unauthenticated_and_writes_nothing(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    async with api_client(api_settings(database)) as client:
        created = await client.gql(
            SUBMIT,
            {"input": {"symbol": "AAPL", "side": "BUY", "quantity": 5, "orderType": "MARKET"}},
            token=client.token(uuid.uuid4()),
        )
        order_id = created["data"]["submitOrder"]["id"]
        before = await owner_conn.fetchval("SELECT count(*) FROM execution_logs")
        for name, (query, variables) in ANON_MUTATIONS.items():
            if variables.get("id") == "ORDER":
                variables = {"id": order_id}
            body = await client.gql(query, variables)
            assert body["data"] is None, (name, body)
            assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"], name
    assert await owner_conn.fetchval("SELECT count(*) FROM orders") == 1
    assert await owner_conn.fetchval("SELECT count(*) FROM fills") == 0
    assert await owner_conn.fetchval("SELECT count(*) FROM execution_logs") == before
    assert await owner_conn.fetchval("SELECT status::text FROM orders") == "PENDING"


# Records what a trader's transaction saw of its claims, as that trader (SECURITY INVOKER): the
# order the trader submits fires it inside the request's own transaction.
_CAPTURE_CLAIMS = """
CREATE TABLE public.claims_seen (as_jsonb jsonb, as_text text);
GRANT INSERT ON public.claims_seen TO authenticated;
CREATE FUNCTION public.capture_claims() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO public.claims_seen VALUES (auth.jwt(), current_setting('request.jwt.claims'));
    RETURN NULL;
END
$$;
CREATE TRIGGER capture_claims AFTER INSERT ON public.orders
    FOR EACH ROW EXECUTE FUNCTION public.capture_claims();
"""
_DROP_CAPTURE = """
DROP TRIGGER IF EXISTS capture_claims ON public.orders;
DROP FUNCTION IF EXISTS public.capture_claims();
DROP TABLE IF EXISTS public.claims_seen;
"""


async def test_supabase_shaped_claims_reach_the_database_unchanged(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    trader = uuid.uuid4()
    extra: dict[str, Any] = {
        "email": "ada@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email", "github"]},
        "user_metadata": {"full_name": "Ada Lövelace", "prefs": {"digits": [1, 2.5, None, True]}},
        "session_id": str(uuid.uuid4()),
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": 1700000000}],
        "is_anonymous": False,
    }
    await owner_conn.execute(_CAPTURE_CLAIMS)
    try:
        async with api_client(api_settings(database)) as client:
            token = client.token(trader, **extra)
            body = await client.gql("{ viewer { traderId role } }", token=token)
            submitted = await client.gql(
                'mutation { submitOrder(input: {symbol: "AAPL", side: BUY, quantity: 1,'
                " orderType: MARKET}) { id } }",
                token=token,
            )
        seen = await owner_conn.fetch("SELECT as_jsonb, as_text FROM public.claims_seen")
    finally:
        await owner_conn.execute(_DROP_CAPTURE)
    assert body == {"data": {"viewer": {"traderId": str(trader), "role": "authenticated"}}}
    assert "errors" not in submitted, submitted
    signed_payload = jwt.decode(token, options={"verify_signature": False})
    assert signed_payload["user_metadata"] == extra["user_metadata"]
    [(as_jsonb, as_text)] = seen
    # auth.jwt() is jsonb (asyncpg hands it over as text); the setting itself is text.
    assert json.loads(as_jsonb) == signed_payload
    assert json.loads(as_text) == signed_payload


async def test_the_api_refuses_to_start_with_a_superuser_login_role(
    database: Db, owner_conn: asyncpg.Connection
) -> None:
    assert await owner_conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    settings = api_settings(
        database, api_database_url=database.owner_url.render_as_string(hide_password=False)
    )
    app = create_app(settings)
    try:
        with pytest.raises(UnsafeLoginRole, match=r"refusing to serve: .* is a superuser"):
            async with app.router.lifespan_context(app):
                pytest.fail("the app started with a superuser login role")
    finally:
        # The refused lifespan does not dispose the pool it opened for the check.
        await app.state.database.dispose()


async def test_the_api_refuses_to_start_with_a_jwt_secret_shorter_than_32_characters(
    database: Db,
) -> None:
    with pytest.raises(SettingsError, match="at least 32 characters"):
        create_app(api_settings(database, jwt_secret="s" * 31))


async def test_a_refused_token_gets_a_graphql_shaped_401_with_a_bearer_challenge(database) -> None:
    async with api_client(api_settings(database)) as client:
        response = await client.post("{ viewer { role } }", token="not-a-jwt")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert body["errors"][0]["message"] == "invalid token: malformed token"


async def test_an_expired_token_says_how_to_get_a_new_one(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        response = await client.post(
            "{ viewer { role } }", token=signed(exp=int(time.time()) - 3600)
        )
    assert response.status_code == 401
    [error] = response.json()["errors"]
    assert error["message"] == (
        "invalid token: expired: get a new token from the identity provider that issued it"
        " (locally: python -m app token --sub UUID)"
    )
