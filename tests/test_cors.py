"""CORS: which browser origins may call the API, over HTTP (preflight and responses) and over
the WebSocket upgrade (its Origin check), from the CORS_ORIGINS setting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from httpx_ws import WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from app.main import create_app
from app.settings import Settings, SettingsError
from tests.api import api_settings
from tests.conftest import Db

FRONTEND = "https://trading.example.com"
STRANGER = "https://evil.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST"}
VIEWER = {"query": "{ viewer { role } }"}


@asynccontextmanager
async def client(
    database: Db, *origins: str, headers: tuple[str, ...] = ()
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(database, cors_origins=origins, cors_allow_headers=headers))
    async with (
        app.router.lifespan_context(app),
        ASGIWebSocketTransport(app=app) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://api.test") as http,
    ):
        yield http


def preflight_headers(origin: str, **extra: str) -> dict[str, str]:
    return {"Origin": origin, **PREFLIGHT, **extra}


# --- HTTP ----------------------------------------------------------------------------------------


async def test_a_listed_origins_preflight_is_answered_with_what_the_api_needs(
    database: Db,
) -> None:
    async with client(database, FRONTEND) as http:
        asked = "authorization, content-type"
        response = await http.options(
            "/graphql",
            headers=preflight_headers(FRONTEND, **{"Access-Control-Request-Headers": asked}),
        )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == FRONTEND
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type"} <= {h.strip() for h in allowed.split(",")}
    assert "POST" in response.headers["access-control-allow-methods"]
    # No credentials ever: the API authenticates by header, not by cookie.
    assert "access-control-allow-credentials" not in response.headers


async def test_a_listed_origin_reads_the_response_and_its_request_id(database: Db) -> None:
    async with client(database, FRONTEND) as http:
        response = await http.post("/graphql", json=VIEWER, headers={"Origin": FRONTEND})
    assert response.json() == {"data": {"viewer": {"role": "anon"}}}
    assert response.headers["access-control-allow-origin"] == FRONTEND
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    "origins", [(), (FRONTEND,)], ids=["CORS_ORIGINS unset", "another origin listed"]
)
async def test_an_origin_not_listed_gets_no_cors_grant(database: Db, origins: Any) -> None:
    async with client(database, *origins) as http:
        refused = await http.options("/graphql", headers=preflight_headers(STRANGER))
        simple = await http.post("/graphql", json=VIEWER, headers={"Origin": STRANGER})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # The request itself still runs (CORS is the browser's rule), but the page cannot read it.
    assert "access-control-allow-origin" not in simple.headers


async def test_star_allows_any_origin_without_credentials(database: Db) -> None:
    async with client(database, "*") as http:
        response = await http.options("/graphql", headers=preflight_headers(STRANGER))
        simple = await http.post("/graphql", json=VIEWER, headers={"Origin": STRANGER})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_the_schema_sdl_is_readable_cross_origin_too(database: Db) -> None:
    async with client(database, FRONTEND) as http:
        response = await http.get("/graphql/schema.graphql", headers={"Origin": FRONTEND})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND


# --- WebSocket upgrade ---------------------------------------------------------------------------


async def upgrade(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """'accepted', or 'refused' when the server closes the handshake before accepting it.

    (A server closing before accept answers HTTP 403 over a real socket; the in-process
    transport reports it as a close with code 1008 instead.)"""
    try:
        async with aconnect_ws(
            "http://api.test/graphql", http, subprotocols=["graphql-transport-ws"], headers=headers
        ) as ws:
            await ws.send_json({"type": "connection_init", "payload": {}})
            assert (await ws.receive_json(timeout=5))["type"] == "connection_ack"
            return "accepted"
    except* WebSocketUpgradeError as refused:
        [error] = refused.exceptions
        assert isinstance(error, WebSocketUpgradeError)
        assert error.response.status_code == 403
    except* WebSocketDisconnect as closed:
        [error] = closed.exceptions
        assert isinstance(error, WebSocketDisconnect)
        assert error.code == 1008
    return "refused"


@pytest.mark.parametrize(
    ("origins", "headers", "outcome"),
    [
        ((), {}, "accepted"),  # no Origin: not a browser, nothing ambient to abuse
        ((), {"Origin": "http://api.test"}, "accepted"),  # same origin (GraphiQL)
        ((), {"Origin": STRANGER}, "refused"),
        ((FRONTEND,), {"Origin": FRONTEND}, "accepted"),
        ((FRONTEND,), {"Origin": STRANGER}, "refused"),
        ((FRONTEND,), {"Origin": "http://trading.example.com"}, "refused"),  # scheme matters
        (("*",), {"Origin": STRANGER}, "accepted"),
    ],
    ids=[
        "no origin",
        "same origin",
        "unset refuses another origin",
        "listed origin",
        "unlisted origin",
        "listed host over another scheme",
        "star",
    ],
)
async def test_the_websocket_upgrade_checks_the_origin_against_the_same_list(
    database: Db, origins: Any, headers: dict[str, str], outcome: str
) -> None:
    async with client(database, *origins) as http:
        assert await upgrade(http, headers) == outcome


# --- the setting ---------------------------------------------------------------------------------


def test_origins_are_normalised_as_browsers_send_them() -> None:
    settings = Settings.from_env(
        {"CORS_ORIGINS": "https://App.Example.com:443, http://localhost:5173,http://[::1]:80"}
    )
    assert settings.cors_origins == (
        "https://app.example.com",
        "http://localhost:5173",
        "http://[::1]",
    )


def test_unset_means_no_origin() -> None:
    assert Settings.from_env({"CORS_ORIGINS": ""}).cors_origins == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("*,https://a.example", "'*' allows every origin; list no others beside it"),
        ("https://a.example/app", "'https://a.example/app' is not an origin"),
        ("a.example", "'a.example' is not an origin"),
        ("null", "'null' is not an origin"),
        ("ftp://a.example", "'ftp://a.example' is not an origin"),
        ("https://a.example:99999", "'https://a.example:99999' is not an origin"),
    ],
)
def test_a_value_that_is_not_a_list_of_origins_is_refused_in_one_line(
    value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CORS_ORIGINS": value})
    assert str(caught.value).startswith("CORS_ORIGINS: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# --- request headers -----------------------------------------------------------------------------

CLIENT_VERSION = {"Access-Control-Request-Headers": "authorization, x-client-version"}


@pytest.mark.parametrize(
    ("setting", "answered"),
    [("", 400), ("X-Client-Version", 200), ("x-trace, X-Client-Version", 200), ("*", 200)],
    ids=["CORS_ALLOW_HEADERS unset", "listed", "listed among others", "any"],
)
async def test_a_preflight_with_a_clients_own_header_needs_it_allowed(
    database: Db, setting: str, answered: int
) -> None:
    headers = Settings.from_env({"CORS_ALLOW_HEADERS": setting}).cors_allow_headers
    async with client(database, FRONTEND, headers=headers) as http:
        response = await http.options(
            "/graphql", headers=preflight_headers(FRONTEND, **CLIENT_VERSION)
        )
    assert response.status_code == answered, response.text
    if answered == 200:
        allowed = response.headers["access-control-allow-headers"].lower()
        assert {"authorization", "x-client-version"} <= {h.strip() for h in allowed.split(",")}
    else:
        assert response.text == "Disallowed CORS headers"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("*, X-Client-Version", "CORS_ALLOW_HEADERS: '*' allows every header"),
        ("X Client Version", "CORS_ALLOW_HEADERS: 'X Client Version' is not an HTTP header name"),
        ("X-Client:1", "CORS_ALLOW_HEADERS: 'X-Client:1' is not an HTTP header name"),
    ],
)
def test_a_value_that_is_not_a_list_of_header_names_is_refused_in_one_line(
    value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CORS_ALLOW_HEADERS": value})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
