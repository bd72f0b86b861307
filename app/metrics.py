"""``GET /metrics``: what an operator graphs and alerts on, in Prometheus' text format.

Two kinds of series:

- **Counted as things happen**, process-wide, in prometheus-client's default registry
  (with its process and Python collectors): requests by operation and outcome and their
  latency (app/telemetry.py), the compiled path's outcomes (graphql/compiled/), subscription
  gap signals (graphql/subscriptions.py), the engine's fills (engine/order_rows.py), venue
  retries (engine/routing.py), failed passes (engine/worker.py) and admission capacity
  (engine/holdings.py), the wait for a pooled connection (db/pool.py), and, while an app
  serves (``watching_the_process``), the event loop's lag and the garbage collector's pauses.
- **Read when scraped**, from the objects of one app (``AppMetrics``): the connection pool
  (in use, waiting), the change feed (reading, subscribers) and the engine's queue
  (orders waiting, per stage, counted in the database as service_role by
  engine/queue.py).

This module defines the series and imports nothing of the app: the database and the
engine count into it, so the collector is handed what it reads (app/main.py wires it).

Nothing here carries trader data: labels are operation names from the schema (bounded by
it, never the client's free text), outcome codes, stages and reasons. Every series is an
aggregate, so ``/metrics`` needs no token; ``METRICS=false`` turns it off for deployments
that expose the API port to the internet and scrape elsewhere.

Several worker processes (uvicorn ``--workers``, or several containers) each count their
own: Prometheus scrapes each container, or, for workers sharing one port,
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) would be needed; the
app does not set it up (README, "Operations").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)

PREFIX: Final = "order_api"

# The *_created series (each counter's creation time) double the output and tell nothing here.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

REQUESTS = Counter(
    f"{PREFIX}_requests",
    "GraphQL HTTP requests, by operation (type and root fields) and outcome"
    " (ok, the client error code, or server_error).",
    ["operation", "outcome"],
)
_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "GraphQL HTTP request latency, from the first byte read to the last byte sent.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
TRUSTED_DOCUMENT_SECONDS = Histogram(
    f"{PREFIX}_trusted_document_duration_seconds",
    "GraphQL HTTP request latency of requests naming a trusted document, by its stored id"
    " and operation name (bounded by the stored list: a removed document's series goes with"
    " it, graphql/trusted.py).",
    ["document", "operation_name"],
    buckets=_LATENCY_BUCKETS,
)
TRUSTED_DOCUMENTS = Gauge(
    f"{PREFIX}_trusted_documents",
    "Trusted documents this process holds (TRUSTED_DOCUMENTS; python -m app documents add).",
)
SUBSCRIPTION_GAPS = Counter(
    f"{PREFIX}_subscription_gaps",
    "UPDATES_MISSED signals sent to subscribers, by reason (lagged: a slow subscriber's"
    " mailbox overflowed, or a change waited in it longer than SUBSCRIPTION_MAX_LAG_MS;"
    " outage: the change feed could not be read for a while, one signal per subscriber once"
    " it can again).",
    ["reason"],
)
COMPILED_QUERIES = Counter(
    f"{PREFIX}_compiled_queries",
    "Requests for a learned document (graphql/compiled/), by outcome: answered (by its one"
    " statement), failed (the statement failed; answered with the error), declined (unusual"
    " arguments, left to the resolvers), fallback (a compiler bug, logged; answered by the"
    " resolvers: should stay 0).",
    ["outcome"],
)
# What bounds the tail latency of a busy worker (README, "Tail latency").
LOOP_SAMPLE_SECONDS: Final = 0.1
_PAUSE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DB_POOL_WAIT_SECONDS = Histogram(
    f"{PREFIX}_db_pool_wait_seconds",
    "Time a request waited for a pooled database connection (opening a new one included);"
    " connections go out in arrival order (app/db/pool.py).",
    buckets=_PAUSE_BUCKETS,
)
EVENT_LOOP_LAG_SECONDS = Histogram(
    f"{PREFIX}_event_loop_lag_seconds",
    f"How late the event loop woke a timer (sampled every {LOOP_SAMPLE_SECONDS:g} s):"
    " the time every request of this process waited for other work (CPU, a GC pause).",
    buckets=_PAUSE_BUCKETS,
)
GC_PAUSE_SECONDS = Histogram(
    f"{PREFIX}_gc_pause_seconds",
    "Python garbage collector pauses, by generation (2: a full collection; objects built at"
    " start-up are frozen out of it, app/serving.py).",
    ["generation"],
    buckets=_PAUSE_BUCKETS,
)
COMPILED_MUTATIONS = Counter(
    f"{PREFIX}_compiled_mutations",
    "submitOrder and cancelOrder requests for a learned document (graphql/compiled/"
    "mutations.py), by mutation and outcome: answered (by its one statement, with data or"
    " the contract's error), declined (variables graphql-core refuses, left to the"
    " resolvers), failed (the database failed; answered with the error).",
    ["mutation", "outcome"],
)
# Read replicas (db/replicas.py, API_READ_DATABASE_URLS): where reads went, and why.
READS = Counter(
    f"{PREFIX}_reads",
    "Read-only operations (queries, compiled or not, and subscription re-reads) with read"
    " replicas configured, by the database that answered (primary, replica1, ...).",
    ["database"],
)
CONSISTENCY_WAIT_SECONDS = Histogram(
    f"{PREFIX}_consistency_wait_seconds",
    "Time a read with a consistency token waited for a replica to replay its position (not"
    " counted: tokens a replica was already known to have replayed).",
    buckets=_PAUSE_BUCKETS,
)
REPLICA_FAILOVERS = Counter(
    f"{PREFIX}_replica_failovers",
    "Reads that a replica could not answer (unreachable, connection lost) and the next"
    " database answered; the replica is then left out until a check finds it back.",
)
ENGINE_FILLS = Counter(f"{PREFIX}_engine_fills", "Fills the execution engine recorded.")
ENGINE_RETRIES = Counter(
    f"{PREFIX}_engine_venue_retries",
    "Venue submissions that failed transiently and were scheduled again, by the venue's code.",
    ["code"],
)
ENGINE_PASS_FAILURES = Counter(
    f"{PREFIX}_engine_pass_failures",
    "Engine passes that failed as a whole (database unreachable, not migrated, a bug).",
)
# The engine's admission capacity (engine/holdings.py), as this process's worker last saw it.
ENGINE_IN_FLIGHT = Gauge(
    f"{PREFIX}_engine_in_flight_orders",
    "Orders the worker approved that the venue has not accepted yet: what counts against"
    " its admission limit (max_in_flight).",
)
ENGINE_IN_FLIGHT_LIMIT = Gauge(
    f"{PREFIX}_engine_in_flight_limit",
    "The worker's admission limit (max_in_flight): at it, the worker admits no new order.",
)
ENGINE_RESTING = Gauge(
    f"{PREFIX}_engine_resting_orders",
    "Orders the worker owns that rest at the venue (accepted, not final): they hold a lease"
    " but no admission capacity.",
)
ENGINE_ADMISSION_SATURATED = Gauge(
    f"{PREFIX}_engine_admission_saturated",
    "1 while the worker admits no new order because its in-flight orders are at the limit.",
)


def pool_waiting(engine: AsyncEngine) -> int:
    """Callers waiting for a pooled connection (SQLAlchemy does not count them; our pool's
    queue does, app/db/pool.py)."""
    return int(getattr(engine.sync_engine.pool, "waiting", 0))


_gc_started: list[float] = []


def _time_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[:] = [time.perf_counter()]
    elif _gc_started:
        GC_PAUSE_SECONDS.labels(str(info["generation"])).observe(
            time.perf_counter() - _gc_started[0]
        )


async def _sample_event_loop_lag() -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LOOP_SAMPLE_SECONDS
        await asyncio.sleep(LOOP_SAMPLE_SECONDS)
        EVENT_LOOP_LAG_SECONDS.observe(max(0.0, loop.time() - due))


@contextlib.asynccontextmanager
async def watching_the_process() -> AsyncIterator[None]:
    """While the app serves: time GC pauses and sample the event loop's lag."""
    if _time_gc not in gc.callbacks:  # once per process, however many apps it builds
        gc.callbacks.append(_time_gc)
    sampler = asyncio.create_task(_sample_event_loop_lag())
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def pool_in_use(engine: AsyncEngine) -> int:
    pool = engine.sync_engine.pool
    return int(pool.checkedout()) if isinstance(pool, QueuePool) else 0


class ChangeFeedState(Protocol):
    """What the series read of the change feed (``app.db.change_feed.ChangeFeed``)."""

    @property
    def connected(self) -> bool: ...

    @property
    def subscriber_count(self) -> int: ...


class DatabaseStates(Protocol):
    """What the series read of the read replicas (``app.db.replicas.Replicas``)."""

    def states(self) -> list[dict[str, Any]]: ...


EngineQueueCount = Callable[[], Awaitable[Mapping[str, int] | None]]
"""Counts the engine's queue per stage (``app.engine.queue.count``); None when it cannot."""


class AppMetrics(Collector):
    """The series read from one app's objects at scrape time, and its ``/metrics`` view.

    It is given what it reads (the pool's engine, the change feed, a count of the engine's
    queue) rather than importing the database and the engine: they count here, so this
    module imports neither.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        changes: ChangeFeedState | None,
        count_queue: EngineQueueCount,
        databases: DatabaseStates | None = None,
    ) -> None:
        self.engine = engine
        self.databases = databases
        self.changes = changes
        self.count_queue = count_queue
        self._queue: Mapping[str, int] | None = None

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        yield GaugeMetricFamily(
            f"{PREFIX}_db_pool_connections_in_use",
            "Pooled database connections checked out.",
            value=pool_in_use(engine),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_db_pool_waiting",
            "Callers waiting for a pooled database connection.",
            value=pool_waiting(engine),
        )
        if self.changes is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_change_feed_connected",
                "1 when the last read of the change feed succeeded.",
                value=1 if self.changes.connected else 0,
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_subscriptions_active",
                "Open orderUpdates subscriptions in this process.",
                value=self.changes.subscriber_count,
            )
        if self.databases is not None:
            yield from _database_states(self.databases.states())
        queue = GaugeMetricFamily(
            f"{PREFIX}_engine_queue_orders",
            "Orders not final yet, by engine stage (new: awaiting the risk check; approved:"
            " awaiting the venue; routed: at the venue).",
            labels=["stage"],
        )
        for stage, count in (self._queue or {}).items():
            queue.add_metric([stage], count)
        yield queue

    async def endpoint(self, request: Request) -> Response:
        self._queue = await self.count_queue()
        own = CollectorRegistry(auto_describe=False)
        own.register(self)
        body = generate_latest(REGISTRY) + generate_latest(own)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _database_states(states: list[dict[str, Any]]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        f"{PREFIX}_database_up",
        "1 when the database (primary, replica1, ...) is read from (a replica: reachable, and"
        " no further behind than READ_REPLICA_MAX_LAG_SECONDS), as last checked.",
        labels=["database"],
    )
    lag = GaugeMetricFamily(
        f"{PREFIX}_database_lag_seconds",
        "How far the replica is behind the primary, as PostgreSQL reports it (absent: unknown).",
        labels=["database"],
    )
    for state in states:
        up.add_metric([state["database"]], 1 if state["state"] == "up" else 0)
        if state["lagSeconds"] is not None:
            lag.add_metric([state["database"]], state["lagSeconds"])
    yield up
    yield lag
