"""``python -m app.engine.run``: one execution engine worker, until SIGTERM or SIGINT.

Configuration comes from the environment (``Settings.from_env``): the database
login (``API_DATABASE_URL``, as ``authenticator``), ``ORDER_API_DATA_DIR`` for
the paper venue's file, and the ``ENGINE_*``, ``RISK_*`` and ``VENUE_*``
variables. A signal stops the worker between passes; orders it had in flight
are then recovered by the next worker (see ``app.engine.leases``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from app.engine.worker import run_worker
from app.settings import Settings, SettingsError


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
