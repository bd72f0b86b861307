"""``python -m app serve --workers N``: several processes on one port, as an operator runs it.

Each test starts the real command as a subprocess and watches its processes from outside
(/proc), so the assertions hold for what a container runtime would see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.db.migrations import PROJECT_ROOT
from app.settings import Settings
from tests.api import make_token
from tests.conftest import Db
from tests.test_cli import SECRET, free_port
from tests.test_cli_failures import assert_one_line, env_without_database, run_clean

TRADER = uuid.UUID("5e1f0000-0000-4000-8000-00000000e001")

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def server_side_inode(server_port: int, client_port: int) -> int:
    """The inode of the accepted socket serving the client connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            return inode
    raise AssertionError(f"no server socket for client port {client_port}")


def start_until_ready(
    command: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[str]:
    """``python -m app COMMAND`` started, once it printed its ready line. Its output goes to
    ``log_path``: a file, not a pipe, which a server logging every request would fill and
    block on. A process that exits or stays silent for 60 s fails the test with its log."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *command],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 60
    while "Order API ready" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() >= deadline:
            process.kill()
            process.wait()
            raise AssertionError(log_path.read_text())
        time.sleep(0.05)
    return process


@contextlib.contextmanager
def serving(
    database: Db, tmp_path: Path, *args: str
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = env_without_database(
        tmp_path,
        API_DATABASE_URL=database.api_url.render_as_string(hide_password=False),
        PORT=str(port),
    )
    process = start_until_ready(["serve", *args], env, tmp_path / "serve.log")
    try:
        yield process, port
    finally:
        workers = children(process.pid) if process.poll() is None else set()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)
        # Killed, the parent passes nothing on: its workers notice it is gone and stop.
        deadline = time.monotonic() + 40
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_two_workers_each_serve_requests_and_sigterm_stops_them_all(
    database: Db, tmp_path: Path
) -> None:
    with serving(database, tmp_path, "--workers", "2") as (process, port):
        workers = children(process.pid)
        assert len(workers) == 2
        text = (tmp_path / "serve.log").read_text()
        assert text.count("Order API ready") == 1  # the banner once, not once per worker
        assert "(2 workers)" in text
        token = make_token(Settings(jwt_secret=SECRET), TRADER)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": "{ viewer { role } }"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.json() == {"data": {"viewer": {"role": "authenticated"}}}
        # GraphiQL opens empty: dev's example tabs and token are never served by serve.
        defaults = httpx.get(f"http://127.0.0.1:{port}/graphiql/defaults.json", timeout=10)
        assert (defaults.status_code, defaults.json()) == (200, {})
        # Many connections at once, each answered and kept open, so that each is held by the
        # worker that accepted it: both workers must hold some.
        connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        try:
            for connection in connections:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for connection in connections:
                connection.settimeout(10)
                assert connection.recv(4096).startswith(b"HTTP/1.1 200")
            held = {pid: socket_inodes(pid) for pid in workers}
            servers = set()
            for connection in connections:
                inode = server_side_inode(port, connection.getsockname()[1])
                [owner] = [pid for pid, inodes in held.items() if inode in inodes]
                servers.add(owner)
            assert servers == workers
        finally:
            for connection in connections:
                connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
        assert not any(alive(pid) for pid in workers)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_ctrl_c_to_the_process_group_stops_every_worker(database: Db, tmp_path: Path) -> None:
    with serving(database, tmp_path, "--workers", "2") as (process, port):
        workers = children(process.pid)
        # A terminal sends SIGINT to the whole foreground group: the parent and each worker.
        for pid in (process.pid, *workers):
            os.kill(pid, signal.SIGINT)
        assert process.wait(timeout=40) == 0
        assert not any(alive(pid) for pid in workers)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_a_worker_that_dies_stops_the_server_with_an_error(database: Db, tmp_path: Path) -> None:
    with serving(database, tmp_path, "--workers", "2") as (process, _):
        workers = children(process.pid)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert process.wait(timeout=40) == 1
        assert not any(alive(pid) for pid in workers)
    log = (tmp_path / "serve.log").read_text()
    assert f"(pid {victim}) exited with status -9; stopping the other workers" in log


def test_workers_stop_gracefully_when_their_parent_is_killed(database: Db, tmp_path: Path) -> None:
    # SIGKILL cannot be passed on: without a watch, the workers went on serving the port as
    # orphans (beside a restarted server's workers, with the old code and settings).
    with serving(database, tmp_path, "--workers", "2") as (process, port):
        workers = children(process.pid)
        assert len(workers) == 2
        process.kill()
        process.wait(timeout=20)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    log = (tmp_path / "serve.log").read_text()
    assert log.count(f"the server's parent process {process.pid} is gone; stopping") == 2
    assert "Traceback" not in log


def test_a_taken_port_is_one_line_with_several_workers(database: Db, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = env_without_database(
            tmp_path,
            API_DATABASE_URL=database.api_url.render_as_string(hide_password=False),
            PORT=str(port),
        )
        result = run_clean("app", "serve", "--workers", "3", env=env)
    line = assert_one_line(result, f"cannot listen on 127.0.0.1:{port}")
    assert "address already in use" in line
    assert result.returncode == 1


@pytest.mark.parametrize("count", ["0", "-1", "two"])
def test_a_worker_count_that_is_not_a_positive_number_is_refused(count: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--workers", count],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "Traceback" not in result.stderr
