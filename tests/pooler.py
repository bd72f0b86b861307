"""PgBouncer in transaction pooling mode in front of a test cluster, as Supabase's Supavisor
(port 6543) or a self-run PgBouncer would sit in front of production.

``TEST_POOLER_URL`` (``postgresql://host:port``, set by .ci/run) sends every connection the
API makes, and the plain-SQL ``authenticator`` connections of the isolation tests, through
a pooler that is already running; fixtures still create and drop databases directly.
``pgbouncer(...)`` starts one for a test that wants its own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"

# Users the pooler lets in (auth_type trust still wants them listed): the API's login role
# and the test cluster's owner.
USERS = ("authenticator", "postgres")


def pooler_url() -> URL | None:
    """The running pooler of ``TEST_POOLER_URL`` (host and port only), or None."""
    given = os.environ.get("TEST_POOLER_URL")
    return make_url(given) if given else None


def through(url: URL, pooler: URL) -> URL:
    """``url`` with the pooler's host and port instead of the server's."""
    query = {key: value for key, value in url.query.items() if key != "host"}
    return url.set(host=pooler.host, port=pooler.port, query=query)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_address(server: URL) -> tuple[str, int]:
    host = server.query.get("host") or server.host or "localhost"
    assert isinstance(host, str)
    return host, server.port or 5432


def _unprivileged_user(host: str) -> str:
    """PgBouncer refuses to run as root: run it as the owner of the server's socket
    directory (who can reach the socket), or as nobody for a server on TCP."""
    if host.startswith("/"):
        owner = pwd.getpwuid(Path(host).stat().st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


@contextmanager
def pgbouncer(server: URL, *, pool_size: int = 4, pool_mode: str = "transaction") -> Iterator[URL]:
    """A PgBouncer in transaction mode (or ``pool_mode``) for every database of ``server``
    (its ``[databases]`` entry is the wildcard), with ``pool_size`` server connections per
    database and user; yields its URL (host and port). Skips the test when pgbouncer is not
    installed."""
    if not Path(PGBOUNCER).exists():
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    host, port = _server_address(server)
    listen = _free_port()
    directory = Path(tempfile.mkdtemp(prefix="order-api-pgbouncer-"))
    (directory / "users.txt").write_text("".join(f'"{user}" ""\n' for user in USERS))
    (directory / "pgbouncer.ini").write_text(
        f"""\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = 1000
server_login_retry = 1
log_connections = 0
log_disconnections = 0
"""
    )
    directory.chmod(0o755)
    as_user = ["-u", _unprivileged_user(host)] if os.geteuid() == 0 else []
    log_path = directory / "pgbouncer.log"
    with log_path.open("wb") as log_file:  # a file, not a pipe nobody drains
        process = subprocess.Popen(
            [PGBOUNCER, *as_user, str(directory / "pgbouncer.ini")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = log_path.read_text(errors="replace")
                    raise RuntimeError(f"pgbouncer did not start:\n{output}") from None
                time.sleep(0.05)
        yield make_url(f"postgresql://127.0.0.1:{listen}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``python -m tests.pooler SERVER_URL [POOL_SIZE]``: run a pooler for .ci/run until
    SIGTERM; its URL is the first line written to stdout."""
    if not Path(PGBOUNCER).exists():
        sys.stderr.write("pgbouncer is not installed\n")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pool_size = int(argv[2]) if len(argv) > 2 else 10
    with pgbouncer(make_url(argv[1]), pool_size=pool_size) as url:
        sys.stdout.write(url.render_as_string() + "\n")
        sys.stdout.flush()
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
