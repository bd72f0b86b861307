"""``python -m app.engine.run``: one execution engine worker, until SIGTERM or SIGINT.

The process around a ``Worker``: its database (``run_worker`` builds it from the
settings), its venue, its id, signals and the metrics endpoint.

Configuration comes from the environment (``Settings.from_env``): the database
login (``API_DATABASE_URL``, as ``authenticator``), ``ORDER_API_DATA_DIR`` for
the paper venue's file, and the ``ENGINE_*``, ``RISK_*`` and ``VENUE_*``
variables. A signal stops the worker between passes; orders it had in flight
are then recovered by the next worker (see ``app.engine.leases``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from sqlalchemy.engine import URL

from app.db.session import Database, open_database
from app.db.urls import api_database_url, async_url
from app.engine.paper import PaperVenue
from app.engine.venue import Venue
from app.engine.worker import Worker
from app.settings import Settings, SettingsError

__all__ = ["default_worker_id", "main", "run_worker"]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _api_database_url(settings: Settings) -> URL:
    configured = settings.engine_database_url or api_database_url(settings)
    if configured is not None:
        return async_url(configured)
    from app.db import embedded

    server = await asyncio.to_thread(embedded.start, settings.data_dir)
    return async_url(server.url_for("authenticator").render_as_string(hide_password=False))


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    database: Database | None = None,
    venue: Venue | None = None,
    worker_id: str | None = None,
) -> None:
    """Run one worker until ``stop`` is set.

    Builds what is not given: the ``Database`` from ``settings.engine_database_url`` or
    else ``settings.api_database_url`` (the ``authenticator`` login; the embedded server
    when unset) and the paper
    venue from the venue settings; closes only what it built.
    """
    own_database = database is None
    if database is None:
        # The leases are session-level advisory locks: through a transaction pooler they would
        # be taken on one server session and checked on another.
        pooler = "none" if settings.engine_database_url else settings.db_pooler
        if pooler == "transaction":
            raise SettingsError(
                "the engine needs a session for its leases, and API_DATABASE_URL goes through a"
                " transaction pooler (DB_POOLER=transaction): set ENGINE_DATABASE_URL to a direct"
                " or session-mode connection"
            )
        database = open_database(await _api_database_url(settings), settings, pooler=pooler)
    own_venue = venue is None
    try:
        # The engine must be held to the same row level security as the API.
        await database.check_login_role()
        if venue is None:
            venue = await asyncio.to_thread(PaperVenue.from_settings, settings)
        worker = Worker(
            database,
            venue,
            settings,
            worker_id or default_worker_id(),
            max_in_flight=settings.engine_max_in_flight,
        )
        await worker.run(stop)
    finally:
        try:
            if own_venue and venue is not None:
                await venue.close()
        finally:
            if own_database:
                await database.dispose()


async def _serve(settings: Settings) -> None:
    if settings.worker_metrics_port is not None:
        # The engine's counters (fills, venue retries, failed passes) live in this process.
        from prometheus_client import start_http_server

        from app.serving import PortUnavailable

        try:
            start_http_server(settings.worker_metrics_port, addr=settings.host)
        except OSError as error:
            where = f"{settings.host}:{settings.worker_metrics_port}"
            raise PortUnavailable(
                f"cannot serve metrics on {where} (WORKER_METRICS_PORT): {error.strerror}"
            ) from None
        logging.getLogger(__name__).info(
            "metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_worker(settings, stop)


def main(settings: Settings | None = None) -> int:
    """Run until a signal; ``python -m app worker`` passes settings it already resolved."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings is None:
        try:
            settings = Settings.from_env()
        except SettingsError as error:
            print(f"configuration error: {error}", file=sys.stderr)  # noqa: T201
            return 2
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
