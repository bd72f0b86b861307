"""Several worker processes on one listening socket, for ``python -m app serve --workers N``.

Python runs one request at a time per process, so one process uses one core. The parent
binds the port (app/serving.py), checks the database login, then forks ``N`` workers; each
builds its own app, so each has its own connection pool and its own change feed reader
(the pool and the feed are created in the app's lifespan, after the fork: no connection is
ever shared between processes). On Linux each worker listens on a socket of its own on the
port (SO_REUSEPORT), and the kernel spreads new connections evenly over them; on one shared
socket, whichever worker woke first accepted a whole burst of connections (22 of a
benchmark's 32 against 10), and its requests queued twice as long as the other's.
Elsewhere the workers share the parent's socket.

- The "ready" banner is printed once, by the parent, when every worker accepts connections.
- SIGINT (Ctrl-C, which the terminal also sends to every worker) or SIGTERM to the parent
  stops every worker gracefully (SIGTERM to each; SIGKILL after ``STOP_SECONDS``); the exit
  status is 0.
- A worker that exits on its own (its startup failed, it crashed) stops the others: the
  exit status is the worker's (1 when it was killed by a signal), and the log says which
  worker and why. Nothing restarts it; the container runtime or service manager does, as it
  would for a single process, rather than a half-sized server carrying on unnoticed.
- A worker whose parent is gone (killed with SIGKILL, which it cannot pass on) stops
  gracefully within ``PARENT_POLL_SECONDS``: an orphaned worker would otherwise go on
  serving the port, beside the workers of a restarted server, with the old code and
  settings.

Forking rather than spawning keeps the settings the command line already resolved (an
embedded server's URL, a checked login) without passing them through the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from app import serving

log = logging.getLogger("app")

STOP_SECONDS = 30.0
PARENT_POLL_SECONDS = 0.5


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run(
    make_app: Callable[[], Any],
    sock: socket.socket,
    *,
    workers: int,
    on_ready: Callable[[], None] | None = None,
    **options: Any,
) -> int:
    """Serve ``make_app()`` on ``sock`` in ``workers`` processes until a signal; exit status."""
    if workers == 1:
        return serving.run(make_app(), sock, on_ready=on_ready, **options)
    if serving.BALANCED_SOCKETS:
        sock = serving.reserve(sock)
    try:
        return _fork(make_app, sock, workers, on_ready, options)
    finally:
        sock.close()


def _fork(
    make_app: Callable[[], Any],
    sock: socket.socket,
    workers: int,
    on_ready: Callable[[], None] | None,
    options: Any,
) -> int:
    ready_read, ready_write = os.pipe()
    children: dict[int, int] = {}
    parent = os.getpid()
    for index in range(1, workers + 1):
        pid = os.fork()
        if pid == 0:  # pragma: no cover (runs in the child; the tests watch it from outside)
            os.close(ready_read)
            os._exit(_child(make_app, sock, ready_write, options, parent))
        children[pid] = index
    os.close(ready_write)
    try:
        return _supervise(children, ready_read, on_ready)
    finally:
        os.close(ready_read)


def _child(
    make_app: Callable[[], Any], sock: socket.socket, ready: int, options: Any, parent: int
) -> int:
    # Until uvicorn installs its handlers (and again once it hands a captured signal back
    # after shutting down), a stop signal ends this worker quietly with status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_quietly)
    _stop_when_orphaned(parent)

    def announce() -> None:
        os.write(ready, b".")

    try:
        if serving.BALANCED_SOCKETS:
            reserved, sock = sock, serving.listen_beside(sock)
            reserved.close()
        return serving.run(make_app(), sock, on_ready=announce, **options)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        return 1


def _stop_when_orphaned(parent: int) -> None:
    """SIGTERM this worker (a graceful stop) once ``parent`` is no longer its parent.

    A thread that polls, rather than Linux's PR_SET_PDEATHSIG, so that it works wherever
    fork does; it costs one getppid() every PARENT_POLL_SECONDS.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        log.warning(
            "worker %d: the server's parent process %d is gone; stopping", os.getpid(), parent
        )
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _supervise(children: dict[int, int], ready: int, on_ready: Callable[[], None] | None) -> int:
    stop_signal: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        stop_signal.append(signum)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    readies = 0
    announced = False
    deadline: float | None = None
    try:
        while children:
            if stop_signal and deadline is None:
                deadline = time.monotonic() + STOP_SECONDS
                _signal_all(children, signal.SIGTERM)
            if deadline is not None and time.monotonic() > deadline:
                log.error("workers did not stop within %.0f s; killing them", STOP_SECONDS)
                _signal_all(children, signal.SIGKILL)
                deadline = float("inf")
            readable, _, _ = select.select([ready], [], [], 0.1)
            if readable:
                readies += len(os.read(ready, 64))
                if readies >= len(children) and not announced and not stop_signal:
                    announced = True
                    if on_ready is not None:
                        on_ready()
            for pid, code in _reaped():
                index = children.pop(pid)
                if stop_signal:
                    continue
                status = code if code > 0 else 1
                log.error(
                    "worker %d (pid %d) exited with status %d; stopping the other workers",
                    index,
                    pid,
                    code,
                )
                stop_signal.append(signal.SIGTERM)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def _signal_all(children: dict[int, int], signum: int) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _reaped() -> list[tuple[int, int]]:
    """Children that exited since the last call, with their exit codes (-N: killed by N)."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, os.waitstatus_to_exitcode(wait_status)))
