"""Read replicas: which database answers a read, how far behind each replica is, and the
consistency token that lets a client read its own writes (``API_READ_DATABASE_URLS``; the
token itself is app/db/consistency.py).

Each replica is a pool of its own (app/db/session.py's ``Database``, logged in as
``authenticator`` like the primary's), so a read on a replica runs exactly as on the primary:
the caller's role, claims and timeout in one read-only transaction. This module only picks the
pool:

- a read without a token: a usable replica (round robin), else the primary;
- a read with a token (an LSN the client got from a mutation): a usable replica that has
  replayed at least that LSN, waiting up to ``READ_YOUR_WRITES_WAIT_MS`` for one, else the
  primary. A token beyond the primary's own position (another cluster's, or forged) is
  answered by the primary at once: no replica can reach it soon;
- writes, and anything in a document holding a mutation: always the primary (the callers).

A watcher checks every database every ``CHECK_SECONDS``: the primary's flushed position
(``pg_current_wal_flush_lsn()``), kept with the time it was read, then each replica's
``pg_last_wal_replay_lsn()``. A replica's lag is the age of the newest primary position it has
replayed: 0 if it has the one just read, 3 s if it has what the primary had 3 s ago but not
what it had later. PostgreSQL's positions, this process's clock: no clock skew between hosts,
and a quiet primary (no commit for minutes, while checkpoints and hint bits still write WAL)
is not mistaken for lag, as ``now() - pg_last_xact_replay_timestamp()`` alone would be. That
age of the last commit applied is used only where the positions say nothing: a replica behind
every position kept (``_HISTORY``), and while the primary is away (then against what the
replica received, ``pg_last_wal_receive_lsn()``: its data is as fresh as any there is, and it
keeps serving). A replica more than
``READ_REPLICA_MAX_LAG_SECONDS`` behind, or that failed its check, is not read from until a
check finds it good again; a read that cannot connect to a replica, or loses its connection,
marks it down at once and is answered by the next candidate, so a replica going away costs
at most the resolver reads that were already running on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from app import metrics
from app.auth.claims import Claims
from app.db.consistency import format_token
from app.db.failures import CONNECTION_LOST, DATABASE_UNREACHABLE, DatabaseUnavailable
from app.db.session import Database, Tx, UnsafeLoginRole

log = logging.getLogger(__name__)


CHECK_SECONDS = 0.5
"""How often every database is checked: a replica that went away (without a read noticing
first) or came back is seen within this plus ``CHECK_TIMEOUT``, well inside the 2 s the
failover promises."""
CHECK_TIMEOUT = 1.0
"""Seconds a check may take; longer, the database counts as down."""

_HISTORY = 240
"""Primary positions kept (2 minutes of checks): a replica further behind than all of them
has its lag from its last applied commit's age instead."""

_POLL_FIRST, _POLL_MAX = 0.001, 0.02
"""A token's wait asks the replica again after 1 ms, doubling up to 20 ms: a replica a few
milliseconds behind costs a few milliseconds."""

_FAILOVER = {DATABASE_UNREACHABLE, CONNECTION_LOST}
"""Failures of a replica after which the read is answered elsewhere: nothing was written, and
the replica is away, so asking it again would only fail again."""

State = Literal["up", "lagging", "down", "refused", "not a replica"]
"""up: read from; lagging: further behind than allowed; down: its last check or read failed;
refused: its login role would bypass row level security; not a replica: it is not in
recovery (a promoted replica, or the primary's URL), so replay positions mean nothing."""

_PRIMARY_POSITION = "SELECT pg_current_wal_insert_lsn()"
_PRIMARY_FLUSHED = "SELECT pg_current_wal_flush_lsn()"
_HEARTBEAT = "SELECT pg_current_xact_id()"
"""A commit of nothing: its record is flushed at once, and everything before it with it."""

_PAGE, _SEGMENT = 8192, 16 * 1024 * 1024  # PostgreSQL's default WAL page and segment sizes
_PAGE_HEADER, _SEGMENT_HEADER = 24, 40  # the headers that start each (MAXALIGNed)
_REPLICA_CHECK = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(),"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
)
_REPLAYED = "SELECT pg_last_wal_replay_lsn()"


# --- the databases -----------------------------------------------------------------------------


@dataclass
class Replica:
    label: str
    """``replica1``, ``replica2``...: its place in ``API_READ_DATABASE_URLS``, never its host
    (``/readyz`` is public)."""
    database: Database
    state: State = "down"
    replayed: int = 0
    """The highest replay position seen: it only grows, so a token at or below it needs no
    question to the replica."""
    lag_seconds: float | None = None
    login_checked: bool = False


class Replicas:
    """The primary and its replicas, their states, and the choice of one for each read."""

    def __init__(
        self,
        primary: Database,
        replicas: Sequence[Database],
        *,
        max_lag_seconds: float,
        wait_ms: int,
    ) -> None:
        self.primary = primary
        self.replicas = [Replica(f"replica{n}", db) for n, db in enumerate(replicas, start=1)]
        self.max_lag_seconds = max_lag_seconds
        self.wait_seconds = wait_ms / 1000
        self.primary_up = False
        self.primary_position = 0
        """The highest position the primary gave (a token above it may be from the future)."""
        self.flushed: collections.deque[tuple[float, int]] = collections.deque(maxlen=_HISTORY)
        """(monotonic time, the primary's flushed position then) of each check, oldest first."""
        self._next = 0
        self._watcher: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Check every database once (so the first requests already have replicas), then keep
        checking in the background."""
        await self.check()
        self._watcher = asyncio.create_task(self._watch(), name="replica watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for replica in self.replicas:
            await replica.database.dispose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.check()
            except Exception:  # a bug here must not end the checks for good
                log.exception("checking the read replicas failed")

    async def check(self) -> None:
        """Ask the primary for its position, then every replica how far it has replayed."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                [flushed] = await self.primary.autocommit_row(_PRIMARY_FLUSHED, ())
            self.primary_up = True
            self.flushed.append((time.monotonic(), flushed))
            self.primary_position = max(self.primary_position, flushed)
        except (DatabaseUnavailable, TimeoutError):
            self.primary_up = False
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))
        await self._heartbeat_if_quiet()

    async def _heartbeat_if_quiet(self) -> None:
        """Commit nothing on a quiet primary that a replica seems behind.

        The primary flushes WAL in whole pages until a commit flushes the rest: on a quiet
        primary the start of a record that is no commit (a hint bit's page image, a
        checkpoint's) can sit flushed and sent while its end waits in memory, and a replica
        that has everything else cannot replay past it: it would look further and further
        behind. A commit flushes that end. Only when the primary's position did not move
        since the last check and some replica is short of it: on a busy primary the commits
        of the traffic do it, and a replica that is really late (recovery_min_apply_delay, a
        slow disk) stays late, the heartbeat's commit with it. It costs a transaction id."""
        if not self.primary_up or len(self.flushed) < 2:
            return
        latest = self.flushed[-1][1]
        if latest != self.flushed[-2][1]:
            return
        if any(r.state != "down" and r.replayed < latest for r in self.replicas):
            with contextlib.suppress(DatabaseUnavailable):
                await self.primary.autocommit_row(_HEARTBEAT, ())

    async def _check(self, replica: Replica) -> None:
        before = replica.state
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                if not replica.login_checked:
                    await replica.database.check_login_role()
                    replica.login_checked = True
                row = await replica.database.autocommit_row(_REPLICA_CHECK, ())
        except UnsafeLoginRole as unsafe:
            replica.state = "refused"
            if before != "refused":
                log.error("%s is not read from: %s", replica.label, unsafe)
            return
        except Exception as error:  # whatever the reason, it cannot be read from now
            self._set_down(replica, error)
            return
        in_recovery, replayed, received, age = row
        if not in_recovery:
            replica.state, replica.lag_seconds = "not a replica", None
        else:
            replica.replayed = max(replica.replayed, replayed or 0)
            # With the primary away, against what the replica received: its data is then as
            # fresh as any there is, and reads go on from it.
            replica.lag_seconds = self._lag(replica.replayed, received, age)
            lagging = replica.lag_seconds > self.max_lag_seconds
            replica.state = "lagging" if lagging else "up"
        if replica.state != before:
            log.info("%s is %s (lag %s s)", replica.label, replica.state, replica.lag_seconds)

    def _lag(self, replayed: int, received: int | None, age: float | None) -> float:
        """Seconds since the primary last had nothing this replica lacks (see the module's
        docstring); inf when unknown."""
        if self.primary_up and self.flushed:
            now = time.monotonic()
            for at, position in reversed(self.flushed):
                if replayed >= position:
                    return 0.0 if at == self.flushed[-1][0] else now - at
            return max(now - self.flushed[0][0], math.inf if age is None else age)
        if replayed >= (received or 0):
            return 0.0
        return math.inf if age is None else age

    def _set_down(self, replica: Replica, error: BaseException) -> None:
        if replica.state != "down":
            log.warning("%s is down: %s", replica.label, str(error).splitlines()[0:1])
        replica.state, replica.lag_seconds = "down", None

    # --- what the primary says ----------------------------------------------------------------

    async def position(self) -> int:
        """The primary's WAL insert position now: read after a commit returned, it is at or
        past the end of that commit's record, whatever ``synchronous_commit`` says, which makes
        it the commit's token. One round trip on a pooled connection (measured in
        docs/deploying/replicas.md)."""
        try:
            [inserted] = await self.primary.autocommit_row(_PRIMARY_POSITION, ())
        except DatabaseUnavailable:
            self.primary_up = False
            raise
        lsn = _record_end(int(inserted))
        self.primary_up = True
        self.primary_position = max(self.primary_position, lsn)
        return lsn

    async def token(self) -> str:
        return format_token(await self.position())

    # --- choosing --------------------------------------------------------------------------

    def reader(self, token: int | None = None) -> Reader:
        """Where a read-only operation runs: the request's ``token``, if it sent one."""
        return Reader(self, token)

    def _usable(self) -> list[Replica]:
        usable = [r for r in self.replicas if r.state == "up"]
        if len(usable) > 1:
            self._next = (self._next + 1) % len(usable)
            usable = usable[self._next :] + usable[: self._next]
        return usable

    async def candidates(self, token: int | None) -> list[tuple[Database, Replica | None]]:
        """The databases to try for one read, in order; the primary last."""
        primary: list[tuple[Database, Replica | None]] = [(self.primary, None)]
        usable = self._usable()
        if token is None:
            return [(r.database, r) for r in usable] + primary
        ready = [r for r in usable if r.replayed >= token]
        if ready:
            return [(ready[0].database, ready[0]), *primary]
        if not usable or (token > self.primary_position and token > await self._fresh_position()):
            return primary  # no replica, or a token from the future: nothing to wait for
        started = time.perf_counter()
        found = await self._wait_for(usable, token)
        metrics.CONSISTENCY_WAIT_SECONDS.observe(time.perf_counter() - started)
        return ([(found.database, found)] if found is not None else []) + primary

    async def _fresh_position(self) -> int:
        try:
            return await self.position()
        except DatabaseUnavailable:
            return self.primary_position  # the replicas may still hold the token's write

    async def _wait_for(self, usable: list[Replica], token: int) -> Replica | None:
        """The first of ``usable`` to replay ``token`` within the wait, or None."""
        deadline = time.monotonic() + self.wait_seconds
        pause = _POLL_FIRST
        while True:
            for replica in usable:
                try:
                    [replayed] = await replica.database.autocommit_row(_REPLAYED, ())
                except DatabaseUnavailable as error:
                    self._set_down(replica, error)
                    continue
                replica.replayed = max(replica.replayed, replayed or 0)
                if replica.replayed >= token:
                    return replica
            usable = [r for r in usable if r.state == "up"]
            left = deadline - time.monotonic()
            if not usable or left <= 0:
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)

    def failed(self, replica: Replica, error: DatabaseUnavailable) -> bool:
        """Whether a read that failed on ``replica`` with ``error`` goes to the next candidate
        (the replica is then down until a check finds it back)."""
        if error.reason not in _FAILOVER:
            return False
        self._set_down(replica, error)
        metrics.REPLICA_FAILOVERS.inc()
        return True

    # --- what /readyz and /metrics show ------------------------------------------------------

    def states(self) -> list[dict[str, Any]]:
        """Each database's state and lag in seconds (None: unknown)."""
        primary = {"database": "primary", "state": "up" if self.primary_up else "down"}
        return [{**primary, "lagSeconds": 0.0 if self.primary_up else None}] + [
            {
                "database": r.label,
                "state": r.state,
                "lagSeconds": None
                if r.lag_seconds is None or math.isinf(r.lag_seconds)
                else round(r.lag_seconds, 3),
            }
            for r in self.replicas
        ]


class Reader:
    """One read-only operation's database: ``transaction`` and ``read_json`` as the primary's
    ``Database`` has them, run on the first candidate that answers."""

    def __init__(self, replicas: Replicas, token: int | None) -> None:
        self.replicas = replicas
        self.token = token

    @asynccontextmanager
    async def transaction(
        self, claims: Claims, *, read_only: bool = True, isolation: str | None = None
    ) -> AsyncIterator[Tx]:
        """The caller's read-only transaction on the first candidate that opens one. A failure
        after it opened is the request's (its resolvers may have answered already)."""
        for database, replica in await self.replicas.candidates(self.token):
            async with contextlib.AsyncExitStack() as stack:
                try:
                    tx = await stack.enter_async_context(
                        database.transaction(claims, read_only=True, isolation=isolation)
                    )
                except DatabaseUnavailable as error:
                    if replica is None or not self.replicas.failed(replica, error):
                        raise
                    continue
                metrics.READS.labels(_where(replica)).inc()
                yield tx
                return
        raise AssertionError("the primary is always a candidate")

    async def read_json(self, claims: Claims, sql: str, args: Sequence[Any]) -> str:
        """A compiled query's statement on the first candidate that answers it: read-only, so
        one that fails on a replica that went away is sent to the next."""
        for database, replica in await self.replicas.candidates(self.token):
            try:
                raw = await database.read_json(claims, sql, args)
            except DatabaseUnavailable as error:
                if replica is None or not self.replicas.failed(replica, error):
                    raise
                continue
            metrics.READS.labels(_where(replica)).inc()
            return raw
        raise AssertionError("the primary is always a candidate")


def _where(replica: Replica | None) -> str:
    return "primary" if replica is None else replica.label


def _record_end(inserted: int) -> int:
    """An insert position just past a page's header is the end of the page before, where a
    replica's replay position stops (no record is there yet): without this, a token read at
    that instant would wait for the next record anyone writes. Only the default page and
    segment sizes are known; with others a token may wait a little longer, never less."""
    if inserted % _SEGMENT == _SEGMENT_HEADER:
        return inserted - _SEGMENT_HEADER
    if inserted % _PAGE == _PAGE_HEADER:
        return inserted - _PAGE_HEADER
    return inserted
