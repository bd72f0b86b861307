"""Running the ASGI app under uvicorn for ``python -m app dev`` and ``serve``.

- The port is bound before anything else starts, so a taken port is one line and exit
  status 1, not a database started, migrated and seeded for nothing.
- The "ready" banner is printed once the server accepts connections (after the app's
  startup), never before.
- uvicorn's access log is off: app/telemetry.py writes one line per request with more in
  it (request id, operation, role, outcome), and uvicorn's loggers go through the same
  handler and format as the app's (``LOG_FORMAT``).
- Slow and oversized clients are cut off. uvicorn bounds the size of a request's headers but
  not the time they take: its keep-alive timeout starts only after a first response and is
  reset by every byte received, so a client trickling its headers (slowloris) holds a socket
  and a file descriptor for as long as it likes. ``HeaderDeadline`` closes a connection whose
  request headers are not complete ``REQUEST_READ_TIMEOUT_SECONDS`` after it opened or after
  its previous response. The body is bounded the same way, and in size, by graphql/body.py;
  WebSocket messages are bounded in size here (``uvicorn_options``).
- Once the app has started, what it built (modules, the schema, caches) is frozen out of
  the garbage collector's full collections (``gc.freeze``): a full collection walked all of
  it, 110,000 objects, and stalled every request of the process for ~90 ms on the 2-core
  machine; it now walks what was allocated since.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.graphql.body import max_body_bytes
from app.settings import Settings

log = logging.getLogger(__name__)


class PortUnavailable(Exception):
    """The address cannot be listened on (taken, not ours, not an address)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or PortUnavailable saying why in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise PortUnavailable(f"cannot listen on {host}:{port}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        hint = " (is another server running? use --port or PORT)" if error.errno == 98 else ""
        raise PortUnavailable(f"cannot listen on {host}:{port}: {reason.lower()}{hint}") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            gc.collect()  # garbage of the start-up is collected, not frozen
            gc.freeze()
            if self.on_ready is not None:
                self.on_ready()


# Linux spreads the connections to a port over the listening sockets that share it
# (SO_REUSEPORT); elsewhere that option does not balance, so workers share one socket.
BALANCED_SOCKETS = sys.platform == "linux"


def reserve(sock: socket.socket) -> socket.socket:
    """Trade the bound listening ``sock`` for a socket that holds its address without
    listening, which the workers' own listening sockets (``listen_beside``) may share.

    ``sock`` proved the address free (``bind``); a later server finds it taken as before.
    """
    family, address = sock.family, sock.getsockname()
    sock.close()
    reserved = socket.socket(family, socket.SOCK_STREAM)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(address)
    except OSError as error:
        reserved.close()
        raise PortUnavailable(f"cannot listen on {address[0]}:{address[1]}: {error}") from None
    return reserved


def listen_beside(reserved: socket.socket) -> socket.socket:
    """A listening socket of this worker's own on ``reserved``'s address: the kernel hands
    each new connection to one worker's socket, evenly, instead of to whichever worker
    accepts first (which takes a whole burst of them; see README, "Tail latency")."""
    sock = socket.socket(reserved.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(reserved.getsockname())
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def run(
    app: Any,
    sock: socket.socket,
    *,
    on_ready: Callable[[], None] | None = None,
    **options: Any,
) -> int:
    """Serve ``app`` on the bound ``sock`` until a signal; the process exit status."""
    config = uvicorn.Config(app, log_config=None, access_log=False, **options)
    server = _Server(config, on_ready)
    try:
        server.run(sockets=[sock])
    except SystemExit as stop:  # uvicorn exits this way when the app's startup failed
        return stop.code if isinstance(stop.code, int) else 1
    finally:
        sock.close()
    return 0 if server.started else 3


log = logging.getLogger(__name__)


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools, which uvicorn[standard] installs and prefers), with
    a deadline for request headers.

    A request cycle starts once a request's headers are complete, so the deadline passes
    harmlessly when the cycle changed since it was armed, or a request is being answered.
    """

    header_timeout: float = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(  # type: ignore[override]  # as uvicorn's own declares it
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()  # the next request on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        self._header_deadline = self.loop.call_later(
            self.header_timeout, self._header_deadline_passed, cycle
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self, cycle: object) -> None:
        self._header_deadline = None
        upgraded = self.transport.get_protocol() is not self  # now a WebSocket
        answering = self.cycle is not None and not self.cycle.response_complete
        if self.cycle is not cycle or answering or upgraded or self.transport.is_closing():
            return
        log.info(
            "closed a connection from %s: no complete request headers within %g s",
            f"{self.client[0]}:{self.client[1]}" if self.client else "?",
            self.header_timeout,
        )
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What ``python -m app serve`` and ``dev`` pass to uvicorn besides the app and address."""
    protocol = type(
        "HeaderDeadlineProtocol",
        (HeaderDeadline,),
        {"header_timeout": settings.request_read_timeout_seconds},
    )
    return {
        "http": protocol,
        # uvicorn's default is 16 MiB; a subscription message is a small document.
        "ws_max_size": max_body_bytes(settings),
    }
