"""Slow and oversized clients against a served instance (uvicorn on a loopback port, real
sockets): headers, bodies and connection_init that trickle in are cut off after
REQUEST_READ_TIMEOUT_SECONDS, WebSocket messages are bounded like bodies; others are served."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.main import create_app
from app.serving import uvicorn_options
from app.settings import Settings
from tests.api import api_settings
from tests.conftest import Db

TIMEOUT = 1.0
SLOW_CLIENTS = 200


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(create_app(settings), log_level="warning", **uvicorn_options(settings))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(20):
            # uvicorn signals startup with a flag only, not an event.
            while not server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        yield host, port
    finally:
        server.should_exit = True
        await task
        sock.close()


async def request(host: str, port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def post(document: str) -> bytes:
    body = json.dumps({"query": document}).encode()
    return (
        b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def trickle_headers(host: str, port: int) -> float:
    """Sends a request's headers one byte every 0.2 s; the seconds until the server hung up."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    try:
        writer.write(b"POST /graphql HTTP/1.1\r\nHost: test\r\n")
        for byte in b"X-Slow: " + b"a" * 100:
            await asyncio.sleep(0.2)
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                break
        async with asyncio.timeout(10):
            await reader.read()
        return time.monotonic() - started
    finally:
        writer.close()


async def test_clients_sending_headers_slowly_are_disconnected_and_others_served(
    database: Db,
) -> None:
    settings = api_settings(database, request_read_timeout_seconds=TIMEOUT)
    async with served(settings) as (host, port):
        slow = [asyncio.create_task(trickle_headers(host, port)) for _ in range(SLOW_CLIENTS)]
        await asyncio.sleep(0.3)
        answer = await request(host, port, post("{ viewer { role } }"))
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b'{"data":{"viewer":{"role":"anon"}}}' in answer
        held = await asyncio.gather(*slow)
    # 100 bytes at 0.2 s would take 20 s: each was cut off after about TIMEOUT.
    assert max(held) < TIMEOUT + 3, sorted(held)[-5:]
    assert min(held) >= TIMEOUT * 0.9, sorted(held)[:5]


async def test_a_kept_alive_connection_may_idle_then_must_send_its_next_headers_in_time(
    database: Db,
) -> None:
    settings = api_settings(database, request_read_timeout_seconds=TIMEOUT)
    body = json.dumps({"query": "{ viewer { role } }"}).encode()
    one = (
        b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    async with served(settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in range(2):  # two requests on one connection, each answered
                writer.write(one)
                await writer.drain()
                status = await asyncio.wait_for(reader.readline(), 5)
                assert status.startswith(b"HTTP/1.1 200"), status
                headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = next(
                    int(line.split(b":")[1])
                    for line in headers.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await asyncio.wait_for(reader.readexactly(length), 5)
            writer.write(b"POST /graphql HTTP/1.1\r\n")  # then stalls
            await writer.drain()
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), TIMEOUT + 5) == b""
            assert time.monotonic() - started < TIMEOUT + 3
        finally:
            writer.close()


async def test_a_body_sent_slowly_is_refused_with_408(database: Db) -> None:
    settings = api_settings(database, request_read_timeout_seconds=TIMEOUT)
    body = json.dumps({"query": "{ viewer { role } }"}).encode()
    async with served(settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                b"POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:5]
            )
            await writer.drain()
            started = time.monotonic()
            answer = await asyncio.wait_for(reader.read(), TIMEOUT + 5)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b'"code":"BAD_USER_INPUT"' in answer
            assert time.monotonic() - started < TIMEOUT + 3
        finally:
            writer.close()


async def test_a_websocket_without_connection_init_is_closed_and_large_messages_refused(
    database: Db,
) -> None:
    settings = api_settings(database, request_read_timeout_seconds=TIMEOUT)
    async with served(settings) as (host, port):
        url = f"ws://{host}:{port}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            started = time.monotonic()
            with suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT + 5)
            assert ws.close_code == 4408  # graphql-transport-ws: connection initialisation timeout
            assert time.monotonic() - started < TIMEOUT + 3
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "#" * 100_000}})
            )
            with suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009  # message too big: at most 2 x MAX_DOCUMENT_BYTES
