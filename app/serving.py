"""Running the ASGI app under uvicorn for ``python -m app dev`` and ``serve``.

- The port is bound before anything else starts, so a taken port is one line and exit
  status 1, not a database started, migrated and seeded for nothing.
- The "ready" banner is printed once the server accepts connections (after the app's
  startup), never before.
- uvicorn's access log is off: app/telemetry.py writes one line per request with more in
  it (request id, operation, role, outcome), and uvicorn's loggers go through the same
  handler and format as the app's (``LOG_FORMAT``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import uvicorn


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
        hint = " (is another server running? set PORT)" if error.errno == 98 else ""
        raise PortUnavailable(f"cannot listen on {host}:{port}: {reason.lower()}{hint}") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit and self.on_ready is not None:
            self.on_ready()


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
