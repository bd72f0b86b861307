"""GraphiQL in a real browser: Debian's headless Chromium, driven by Playwright, against a served
instance (uvicorn on a free loopback port, a migrated test database, a running engine).

It proves what no HTTP-level test can: the page renders and works on a machine that reaches
nothing (every request the browser makes is recorded, any that would leave the loopback is
aborted, and the test asserts there were none), a query with a token typed into the Headers
tab returns that trader's orders only, and a subscription started from the page receives an
order's updates up to FILLED over the WebSocket, authenticated by the same Headers tab.

Skipped, with the reason shown by ``pytest -ra``, where Playwright's package or Debian's
``chromium`` is missing (``.ci/run`` installs both); Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from app.engine.run import run_worker
from app.main import create_app
from app.settings import Settings
from tests.api import api_settings, make_token
from tests.conftest import Db

playwright = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed (pip install -e '.[test]')"
)
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)

# As root in a container: no sandbox; nothing the browser would fetch for itself either.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000

ORDERS = "{ orders { edges { node { id symbol status } } } }"
UPDATES = "subscription { orderUpdates { id status filledQuantity } }"
SUBMIT = """
mutation($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }
"""


@dataclass
class Served:
    url: str
    app: Starlette
    settings: Settings
    http: httpx.AsyncClient

    async def submit(self, trader: uuid.UUID, symbol: str, quantity: int = 10) -> str:
        order = {"symbol": symbol, "side": "BUY", "quantity": quantity, "orderType": "MARKET"}
        response = await self.http.post(
            "/graphql",
            json={"query": SUBMIT, "variables": {"input": order}},
            headers={"Authorization": f"Bearer {make_token(self.settings, trader)}"},
        )
        body = response.json()
        assert "errors" not in body, body
        order_id: str = body["data"]["submitOrder"]["id"]
        return order_id


@pytest.fixture
async def served(database: Db, tmp_path: Path) -> AsyncIterator[Served]:
    settings = api_settings(
        database, data_dir=tmp_path, engine_poll_seconds=0.05, venue_tick_seconds=0.05
    )
    app = create_app(settings)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    stop = asyncio.Event()
    engine = asyncio.create_task(run_worker(settings, stop))
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn signals nothing else)
                await asyncio.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url) as http:
            yield Served(url=url, app=app, settings=settings, http=http)
    finally:
        stop.set()
        server.should_exit = True
        await asyncio.wait_for(asyncio.gather(serving, engine), timeout=15)
        listening.close()


def stays_on_this_machine(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "data":
        return True
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return False


@dataclass
class Traffic:
    requests: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    sent_frames: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_MS / 1000):
        while not condition():  # noqa: ASYNC110 (a browser's and the change feed's state: polled)
            await asyncio.sleep(0.05)


def query_in_url(page: Any) -> str | None:
    [query] = parse_qs(urlsplit(page.url).query).get("q", [None])
    return query


async def test_graphiql_works_offline_with_the_headers_tab_for_queries_and_subscriptions(
    served: Served, tmp_path: Path
) -> None:
    trader, other = uuid.uuid4(), uuid.uuid4()
    mine = await served.submit(trader, "AAPL")
    theirs = await served.submit(other, "MSFT")
    token = make_token(served.settings, trader)
    traffic = Traffic()

    async with playwright.async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        try:

            async def only_loopback(route: Any) -> None:
                traffic.requests.append(route.request.url)
                if stays_on_this_machine(route.request.url):
                    await route.continue_()
                else:
                    await route.abort()  # never let the test itself reach the internet

            def watch(ws: Any) -> None:
                traffic.websockets.append(ws.url)
                ws.on("framesent", lambda frame: traffic.sent_frames.append(frame))

            await context.route("**/*", only_loopback)
            page = await context.new_page()
            page.on("websocket", watch)
            page.on("pageerror", lambda error: traffic.problems.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    traffic.problems.append(message.text) if message.type == "error" else None
                ),
            )

            # The page loads, from this server only.
            await page.goto(f"{served.url}/graphql?q={quote(ORDERS)}")
            await page.locator(".graphiql-editors").wait_for(timeout=TIMEOUT_MS)
            assert traffic.requests, "no request was recorded"
            assert [url for url in traffic.requests if not stays_on_this_machine(url)] == []

            # A query with the trader's token typed into the Headers tab.
            await page.get_by_role("button", name="Headers").click()
            await page.locator(".graphiql-editor-tool .graphiql-editor:not(.hidden)").click()
            await page.keyboard.insert_text(json.dumps({"Authorization": f"Bearer {token}"}))
            result = page.locator(".result-window")
            await page.locator(".graphiql-execute-button").click()
            await playwright.expect(result).to_contain_text(mine, timeout=TIMEOUT_MS)
            assert theirs not in await result.inner_text()
            await page.screenshot(path=str(tmp_path / "query.png"))

            # A subscription, typed into the query editor, sees a new order reach FILLED.
            await page.locator(".graphiql-query-editor .CodeMirror").click()
            await page.keyboard.press("Control+A")
            await page.keyboard.insert_text(UPDATES)
            # GraphiQL parses an edit 100 ms later and then reports it to the page, which
            # writes it into the URL: from then on it knows the document is a subscription.
            await until(lambda: query_in_url(page) == UPDATES)
            await page.locator(".graphiql-execute-button").click()
            changes = served.app.state.changes
            await until(lambda: changes.subscriber_count == 1)
            filled = await served.submit(trader, "NVDA")
            await playwright.expect(result).to_contain_text(filled, timeout=TIMEOUT_MS)
            await playwright.expect(result).to_contain_text('"FILLED"', timeout=TIMEOUT_MS)
            await page.screenshot(path=str(tmp_path / "subscription.png"))
        finally:
            await context.close()

    # Subscriptions went over the WebSocket, authenticated by the Headers tab's token.
    assert traffic.websockets == [f"ws://127.0.0.1:{served.url.rsplit(':', 1)[1]}/graphql"]
    init = json.loads(next(frame for frame in traffic.sent_frames if "connection_init" in frame))
    assert init["payload"] == {"Authorization": f"Bearer {token}"}
    assert [url for url in traffic.requests if not stays_on_this_machine(url)] == []
    assert traffic.problems == []
