"""The execution engine: moves orders from PENDING to a final state, through the database.

A ``Worker`` polls the ``orders`` table every ``settings.engine_poll_seconds``
and works as ``service_role`` through
``Database.transaction``, exactly like the API: it writes ``orders`` columns
and inserts ``fills`` (the statements are ``app.orders.ledger``'s, the API's own;
``app.engine.order_rows`` reads orders for the engine); the
migration's triggers derive fill state and statuses and write every
``execution_logs`` row. Several workers (processes) may run against one
database at once.

The worker coordinates; each stage of a pass is its own module, run in this order:

    left before start the first pass notes the orders in flight no live worker holds
                      (``app.engine.adoption``: resuming them is routine);
    replace           waiting replacements are confirmed or rejected
                      (``app.engine.replace``);
    admission         new orders: expired, rejected by the risk check, or approved
                      (``app.engine.admission``);
    adoption          abandoned orders are adopted, as admission capacity allows;
    in flight         the orders this worker holds are stepped (``app.engine.in_flight``):
                      submitted to the venue (``app.engine.routing``), polled and their
                      executions recorded (``app.engine.execution_reports``), and ended
                      (``app.engine.closing``);
    cancel sweep      orders cancelled while nobody owned them are stopped at the venue
                      (``app.engine.cancel_sweep``).

The database is the source of truth; the venue call happens between short
transactions, never inside one that holds row locks.

Exactly once
    * A fill is recorded once (``app.engine.execution_reports``).
    * An order is accepted by the venue once, and ``routed_at`` is set once
      (``app.engine.routing``).
    * Every state change re-reads the order under its row lock and checks it is still in
      the expected state, so a racing trader cancel or another worker never leads to a
      double transition (``app.engine.order_rows``).

Ownership and recovery
    An order in flight is owned by exactly one live worker, which holds its
    advisory-lock lease; an approved, non-final order whose lease is free has been
    abandoned, and any worker adopts it (``app.engine.adoption``). The rule and its
    consequences are set out in ``app.engine.leases``.

Admission capacity
    Of the orders a worker owns, only those not yet accepted by the venue count against
    ``max_in_flight``; orders resting at the venue keep their lease but are stepped in
    rotating batches, so how long a new order waits does not depend on how many rest
    (``app.engine.holdings``).

The process around a worker (database, venue, signals) is ``app.engine.run``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final
from uuid import UUID

from sqlalchemy import exc as sa_exc

from app import metrics
from app.db import migrations, readiness
from app.db.session import Database, DatabaseUnavailable
from app.engine.admission import Admission
from app.engine.adoption import Adoption
from app.engine.cancel_sweep import CancelSweep
from app.engine.closing import Closing
from app.engine.execution_reports import ExecutionReports
from app.engine.holdings import Holdings
from app.engine.in_flight import InFlight
from app.engine.leases import Leases, lease_key
from app.engine.replace import Replacements
from app.engine.routing import Routing
from app.engine.venue import Venue
from app.settings import Settings

__all__ = ["DatabaseNotReady", "Worker", "lease_key"]

log = logging.getLogger(__name__)

_MAX_FAILURE_DELAY_SECONDS: Final = 10.0


class DatabaseNotReady(Exception):
    """The database answers but is not at the revision this code expects."""

    def __init__(self, state: readiness.Readiness) -> None:
        super().__init__(state.describe())
        self.state = state


def _database_state(error: Exception) -> readiness.Readiness | None:
    """What a failed pass says of the database; None when it says nothing (a bug)."""
    if isinstance(error, DatabaseNotReady):
        return error.state
    reason = readiness.is_unreachable(error)
    return None if reason is None else readiness.Readiness("unreachable", detail=reason)


class Worker:
    """One execution engine; see the module docstring. Not safe for concurrent ``run_once``."""

    def __init__(
        self,
        database: Database,
        venue: Venue,
        settings: Settings,
        worker_id: str,
        *,
        batch_size: int = 100,
        max_in_flight: int = 1000,
        cancel_sweep_seconds: float = 1.0,
    ) -> None:
        """``batch_size``: orders claimed (or adopted) per pass and stage.
        ``max_in_flight``: most orders in flight at once, approved but not yet accepted by the
        venue (``app.engine.holdings``: orders resting at the venue do not count); a worker at
        the limit admits no new orders and leaves them to others.
        ``cancel_sweep_seconds``: how often to look for orders cancelled while unowned.
        """
        if batch_size < 1 or max_in_flight < 1:
            raise ValueError("batch_size and max_in_flight must be at least 1")
        self.database = database
        self.venue = venue
        self.settings = settings
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.cancel_sweep_seconds = cancel_sweep_seconds
        retry_base = settings.engine_retry_base_seconds
        self._leases = Leases(database.engine.url, worker_id)
        self._owned = Holdings(worker_id, max_in_flight)
        """Orders whose lease this worker holds: it sees them through until they are final."""
        self._cancels = CancelSweep(
            database,
            venue,
            retry_base=retry_base,
            batch_size=batch_size,
            interval_seconds=cancel_sweep_seconds,
        )
        self._replacements = Replacements(
            database, venue, retry_base=retry_base, batch_size=batch_size
        )
        self._admission = Admission(
            database,
            venue,
            retry_base=retry_base,
            batch_size=batch_size,
            holdings=self._owned,
            leases=self._leases,
        )
        self._adoption = Adoption(
            database,
            worker_id=worker_id,
            retry_base=retry_base,
            batch_size=batch_size,
            holdings=self._owned,
            leases=self._leases,
        )
        closing = Closing(
            database,
            venue,
            retry_base=retry_base,
            holdings=self._owned,
            leases=self._leases,
            cancels=self._cancels,
        )
        routing = Routing(
            database,
            venue,
            retry_base=retry_base,
            max_retries=settings.engine_max_retries,
            holdings=self._owned,
            closing=closing,
        )
        self._in_flight = InFlight(
            database,
            retry_base=retry_base,
            batch_size=batch_size,
            holdings=self._owned,
            leases=self._leases,
            cancels=self._cancels,
            closing=closing,
            routing=routing,
            reports=ExecutionReports(
                database, venue, retry_base=retry_base, closing=closing, routing=routing
            ),
        )
        self._head = migrations.head_revision()
        self._database_state = readiness.StateLog(log, f"worker {worker_id}")

    @property
    def owned(self) -> frozenset[UUID]:
        """The orders this worker currently owns (holds the lease of)."""
        return self._owned.owned

    # --- loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; in-flight orders are then left to other workers.

        A failing pass (database unreachable or not migrated, a bug) is retried with
        exponential backoff up to ``_MAX_FAILURE_DELAY_SECONDS``. The database's state is
        logged when it changes, not on every retry; a bug keeps its traceback.
        """
        log.info("worker %s started", self.worker_id)
        failures = 0
        try:
            while not stop.is_set():
                delay = self.settings.engine_poll_seconds
                backlog = False
                try:
                    await self.run_once()
                    backlog = self._admission.backlog
                    failures = 0
                    self._database_state.report(readiness.Readiness("ready"))
                except Exception as error:
                    # Nothing is lost (the state is in the database): back off and try again
                    # rather than die.
                    failures += 1
                    delay = min(delay * 2**failures, _MAX_FAILURE_DELAY_SECONDS)
                    metrics.ENGINE_PASS_FAILURES.inc()
                    state = _database_state(error)
                    if state is not None:
                        self._database_state.report(state)
                    else:
                        log.exception(
                            "worker %s: pass failed (%d in a row); next try in %.1fs",
                            self.worker_id,
                            failures,
                            delay,
                        )
                if backlog:
                    await asyncio.sleep(0)  # more new orders are waiting: no pause
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.close()
            log.info("worker %s stopped", self.worker_id)

    async def run_once(self) -> int:
        """One pass over the queue; returns the number of actions taken (state changes
        written to the database and cancels sent to the venue)."""
        if await self._leases.ensure() and self._owned:
            log.warning(
                "worker %s lost its leases: %d orders in flight are left to recovery",
                self.worker_id,
                len(self._owned),
            )
            self._owned.clear()
        work = 0
        for stage in (
            self._adoption.note_left_before_start,
            self._replacements.settle_waiting,
            self._admission.admit_new,
            self._adoption.adopt_abandoned,
            self._in_flight.advance,
            self._cancels.now_and_then,
        ):
            try:
                work += await stage()
            except DatabaseUnavailable:
                raise  # every later stage would fail the same way
            except sa_exc.DBAPIError:
                # The database refused a statement: if it is not at the revision this code
                # expects (tables missing, say), every stage would fail the same way too.
                state = await readiness.check(self.database.engine, self._head)
                if not state.ready:
                    raise DatabaseNotReady(state) from None
                log.exception("worker %s: %s failed", self.worker_id, stage.__name__)
            except Exception:
                # One stage failing (a bug, a venue outage) must not stall the others.
                log.exception("worker %s: %s failed", self.worker_id, stage.__name__)
        self._owned.report()
        return work

    async def close(self) -> None:
        """Release every lease (by closing the lease connection); idempotent."""
        self._owned.clear()
        await self._leases.close()
