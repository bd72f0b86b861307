"""docs/deploying/supabase.md's tokens, each shown on the Supabase-like database (tests/supabase.py).

Supabase Auth's custom access token hook that issues compliance_auditor tokens (the page's
SQL, examples/supabase/compliance_auditor_hook.sql, run here as Auth runs it), and the token
settings: the project's secret alone, SUPABASE_URL, and a JWKS that cannot be reached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import time
import uuid
from typing import Any

import asyncpg
import pytest

from app.auth import jwks
from app.db.migrations import PROJECT_ROOT
from app.settings import Settings
from app.supabase import JWKS_PATH
from tests import supabase
from tests.api import SECRET, Client, api_client
from tests.test_api_isolation import SUBMIT, World, ok
from tests.test_supabase import world  # noqa: F401  (the module's fixture, reused)
from tests.test_tokens import JWKSServer, jwk, jwks_server, make_token, rsa_key  # noqa: F401

HOOK = PROJECT_ROOT / "examples" / "supabase" / "compliance_auditor_hook.sql"
# The claims Supabase Auth refuses to sign without, whatever its hook returns (supabase/auth,
# internal/tokens/service.go, the hook output's schema).
AUTH_REQUIRED_CLAIMS = {"aud", "exp", "iat", "sub", "email", "phone", "role", "aal"}
AUTH_REQUIRED_CLAIMS |= {"session_id", "is_anonymous"}
VIEWER_AND_ORDERS = "{ viewer { role } orders(first: 50) { edges { node { id traderId } } } }"


# --- compliance_auditor tokens from Supabase Auth ----------------------------------------------


async def install_hook(db: supabase.SupabaseDb) -> None:
    conn = await asyncpg.connect(db.dsn())
    try:
        await conn.execute(HOOK.read_text())
    finally:
        await conn.close()


async def issued_by_auth(
    db: supabase.SupabaseDb,
    user: uuid.UUID,
    *,
    app_metadata: dict[str, Any] | None = None,
    user_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims Auth would sign for ``user``: its own, passed through the hook as Auth
    calls it (as supabase_auth_admin, one jsonb event, the answer's ``claims``)."""
    now = int(time.time())
    claims = {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "sub": str(user),
        "email": "officer@example.com",
        "phone": "",
        "role": "authenticated",
        "aal": "aal1",
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
        "app_metadata": {"provider": "email", **(app_metadata or {})},
        "user_metadata": user_metadata or {},
    }
    event = {"user_id": str(user), "claims": claims, "authentication_method": "password"}
    conn = await asyncpg.connect(db.cluster.dsn(db.name, "supabase_auth_admin"))
    try:
        answer = await conn.fetchval(
            "SELECT public.order_api_access_token_hook($1::jsonb)::text", json.dumps(event)
        )
    finally:
        await conn.close()
    hooked: dict[str, Any] = json.loads(answer)["claims"]
    return hooked


@pytest.fixture(scope="module")
async def hooked(world: World) -> World:  # noqa: F811
    """The module's world, with the page's hook installed as postgres installs it."""
    await install_hook(world.db)
    return world


async def test_the_hook_gives_a_marked_user_a_compliance_auditor_token_that_reads_every_trader(
    hooked: World,
) -> None:
    officer = uuid.uuid4()
    claims = await issued_by_auth(
        hooked.db, officer, app_metadata={"order_api_role": "compliance_auditor"}
    )
    assert claims["role"] == "compliance_auditor"
    assert set(claims) >= AUTH_REQUIRED_CLAIMS
    token = make_token(claims, key=SECRET)
    data = ok(await hooked.client.gql(VIEWER_AND_ORDERS, token=token))
    assert data["viewer"]["role"] == "compliance_auditor"
    seen = {edge["node"]["id"] for edge in data["orders"]["edges"]}
    assert hooked.a_orders | hooked.b_orders <= seen
    order = {"symbol": "AAPL", "side": "BUY", "quantity": 1, "orderType": "MARKET"}
    body = await hooked.client.gql(SUBMIT, {"input": order}, token=token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


async def test_the_hook_leaves_every_other_user_authenticated_even_one_who_marks_themselves(
    hooked: World,
) -> None:
    # user_metadata is the user's own to write (supabase.auth.updateUser): it must not count.
    claims = await issued_by_auth(
        hooked.db, hooked.a, user_metadata={"order_api_role": "compliance_auditor"}
    )
    assert claims["role"] == "authenticated"
    data = ok(await hooked.client.gql(VIEWER_AND_ORDERS, token=make_token(claims, key=SECRET)))
    assert data["viewer"]["role"] == "authenticated"
    assert {edge["node"]["id"] for edge in data["orders"]["edges"]} == hooked.a_orders


async def test_only_supabase_auth_may_call_the_hook(hooked: World) -> None:
    conn = await asyncpg.connect(hooked.db.dsn())
    try:
        callers = await conn.fetch(
            "SELECT r.rolname FROM pg_roles r WHERE has_function_privilege("
            "r.oid, 'public.order_api_access_token_hook(jsonb)', 'EXECUTE') AND NOT r.rolsuper"
            " AND r.rolname IN ('anon', 'authenticated', 'service_role', 'authenticator',"
            " 'compliance_auditor', 'supabase_auth_admin', $1) ORDER BY 1",
            supabase.LOGIN,
        )
    finally:
        await conn.close()
    # The owner (postgres) may too, as it may every function it owns.
    assert [r["rolname"] for r in callers] == ["supabase_auth_admin"]


async def test_the_data_apis_login_cannot_take_the_compliance_auditor_role(
    world: World,  # noqa: F811
) -> None:
    # PostgREST and pg_graphql switch to the token's role from authenticator: on a hosted
    # project it is no member of compliance_auditor, so the Data API refuses such a token.
    conn = await asyncpg.connect(world.db.dsn())
    try:
        assert not await conn.fetchval(
            "SELECT pg_has_role('authenticator', 'compliance_auditor', 'MEMBER')"
        )
        assert await conn.fetchval(
            f"SELECT pg_has_role('{supabase.LOGIN}', 'compliance_auditor', 'MEMBER')"
        )
    finally:
        await conn.close()


# --- the token settings ------------------------------------------------------------------------


def supabase_settings(db: supabase.SupabaseDb, **env: str) -> Settings:
    """Settings as a Supabase deployment writes them: SUPABASE_JWT_SECRET, and ``env``."""
    settings = Settings.from_env(
        {
            "SUPABASE_JWT_SECRET": SECRET,
            "API_DATABASE_URL": db.api_url.render_as_string(hide_password=False),
            "DATABASE_URL": db.owner_url.render_as_string(hide_password=False),
            **env,
        }
    )
    return dataclasses.replace(settings, compiled_queries_strict=True)


def api_key(role: str) -> dict[str, Any]:
    """The payload of a project's anon or service_role key: iss supabase, a role, no sub."""
    now = int(time.time())
    return {"iss": "supabase", "ref": "project", "role": role, "iat": now, "exp": now + 3600}


def user_claims(user: uuid.UUID, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": str(user), "aud": "authenticated", "role": "authenticated"}
    return {**claims, "iat": now, "exp": now + 3600, **changes}


async def viewer(client: Client, token: str) -> tuple[int, str]:
    response = await client.post("{ viewer { role } }", token=token)
    body = response.json()
    if response.status_code != 200:
        return response.status_code, body["errors"][0]["message"]
    return 200, body["data"]["viewer"]["role"]


async def test_with_the_secret_alone_the_api_keys_work_and_no_issuer_is_checked(
    supabase_database: supabase.SupabaseDb,
) -> None:
    async with api_client(supabase_settings(supabase_database)) as client:
        for role in ("anon", "service_role"):
            assert await viewer(client, make_token(api_key(role), key=SECRET)) == (200, role)
        stranger = user_claims(uuid.uuid4(), iss="https://somewhere-else.example")
        assert await viewer(client, make_token(stranger, key=SECRET)) == (200, "authenticated")


@pytest.fixture
def unreachable_url() -> str:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_with_supabase_url_user_tokens_need_the_projects_issuer_and_the_keys_still_work(
    supabase_database: supabase.SupabaseDb, unreachable_url: str
) -> None:
    settings = supabase_settings(supabase_database, SUPABASE_URL=unreachable_url)
    assert settings.jwt_issuer == unreachable_url + "/auth/v1"
    assert settings.jwt_jwks == unreachable_url + "/auth/v1/.well-known/jwks.json"
    user = uuid.uuid4()
    async with api_client(settings) as client:
        ours = make_token(user_claims(user, iss=unreachable_url + "/auth/v1"), key=SECRET)
        assert await viewer(client, ours) == (200, "authenticated")
        for claims in (user_claims(user), user_claims(user, iss="https://elsewhere/auth/v1")):
            status, _ = await viewer(client, make_token(claims, key=SECRET))
            assert status == 401
        for role in ("anon", "service_role"):
            assert await viewer(client, make_token(api_key(role), key=SECRET)) == (200, role)


async def test_an_unreachable_jwks_neither_stops_the_start_nor_hs256_and_refuses_rs256_tokens(
    supabase_database: supabase.SupabaseDb, unreachable_url: str
) -> None:
    issuer = unreachable_url + "/auth/v1"
    async with api_client(supabase_settings(supabase_database, SUPABASE_URL=unreachable_url)) as c:
        assert (await c.http.get("/readyz")).status_code == 200
        user = uuid.uuid4()
        assert await viewer(c, make_token(user_claims(user, iss=issuer), key=SECRET)) == (
            200,
            "authenticated",
        )
        rs256 = make_token(user_claims(user, iss=issuer), alg="RS256", key=rsa_key(), kid="k1")
        assert await viewer(c, rs256) == (401, "invalid token: signing keys unavailable")


async def test_keys_fetched_before_the_jwks_went_away_keep_verifying(
    supabase_database: supabase.SupabaseDb,
    jwks_server: JWKSServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The cache's lifetime and the least time between fetches, shortened so the test need
    # not wait out the production values (600 s and 30 s).
    monkeypatch.setattr(jwks, "JWKS_REFETCH_INTERVAL_SECONDS", 0.0)
    project = jwks_server.url.removesuffix(JWKS_PATH)
    key = rsa_key()
    jwks_server.keys = [jwk(key, "k1")]
    settings = supabase_settings(supabase_database, SUPABASE_URL=project, JWKS_CACHE_SECONDS="1")
    token = make_token(
        user_claims(uuid.uuid4(), iss=project + "/auth/v1"), alg="RS256", key=key, kid="k1"
    )
    async with api_client(settings) as client:
        assert await viewer(client, token) == (200, "authenticated")
        jwks_server.status = 503
        await asyncio.sleep(1.1)
        with caplog.at_level(logging.WARNING, logger=jwks.__name__):
            assert await viewer(client, token) == (200, "authenticated")
        assert jwks_server.hits == 2
        assert "keeping 1 cached key(s)" in caplog.text
