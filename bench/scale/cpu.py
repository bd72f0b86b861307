"""CPU time per request during one measurement: the server's, the database's, the load generator's.

What bounds a target on a shared machine is where the CPU goes: with every core busy, a
server's throughput is the cores divided by the CPU one request costs all of them together.
So each measurement also records, per request,

- ``server_cpu_ms``: the GraphQL server's processes (the process started and its descendants,
  every worker), from /proc; none for pgbench, which is the database's own client;
- ``db_cpu_ms``: every process of the PostgreSQL server (backends and background writers),
  the children of its postmaster, from /proc. The postmaster is found from the database's
  ``data_directory``, so only for a server on this machine whose directory this user may
  read (the embedded one always); otherwise none;
- ``client_cpu_ms``: wrk or pgbench, the load generator (a child of this process).

Linux only (/proc); elsewhere every figure is none and the run goes on without them.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children() -> dict[int, list[int]]:
    """Each process's children, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    return children


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and all its descendants, living or ended.

    Each process's own user and system time, plus that of its ended children once it has
    reaped them (cutime, cstime): so a backend that ends during a measurement (pgbench's
    disconnect) still counts, through its postmaster's figures.
    """
    ticks = 0
    for pid in tree(root):
        try:
            fields = _stat(pid)
            ticks += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile: its time is now its parent's
    return ticks / _TICK


def children_seconds() -> float:
    """CPU seconds of this process's finished children (wrk, pgbench)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def data_directory(owner_dsn: str) -> str | None:
    """The database server's data directory, or None when this login may not see it."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        return str(await conn.fetchval("SHOW data_directory"))
    except asyncpg.PostgresError:
        return None  # not a superuser
    finally:
        await conn.close()


def postmaster(directory: str | None) -> int | None:
    """The postmaster's pid of the server in ``directory`` when it runs on this machine."""
    if directory is None:
        return None
    try:
        pid = int((Path(directory) / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None  # another machine, or not readable by this user
    return pid if Path(f"/proc/{pid}").exists() else None


@dataclass
class Meter:
    """CPU used between ``start`` and ``per_request``; build one per measurement."""

    server: int | None  # the server's root pid; None for pgbench
    database: int | None  # the postmaster's pid; None when unknown

    def start(self) -> None:
        self._server = seconds(self.server) if self.server else 0.0
        self._db = seconds(self.database) if self.database else 0.0
        self._client = children_seconds()

    def per_request(self, requests: int) -> dict[str, float | None]:
        """Milliseconds of CPU per request: server, database, load generator."""
        n = max(1, requests)
        server = seconds(self.server) - self._server if self.server else None
        db = seconds(self.database) - self._db if self.database else None
        client = children_seconds() - self._client
        return {
            "server_cpu_ms": None if server is None else round(1000 * server / n, 3),
            "db_cpu_ms": None if db is None else round(1000 * db / n, 3),
            "client_cpu_ms": round(1000 * client / n, 3),
        }
