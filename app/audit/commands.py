"""``python -m app audit verify|export``: what the command line runs (see README, Audit trail)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import exc as sa_exc

from app.audit.chain import ChainChecker
from app.audit.export import ExportError, Format, read_rows, write_header, write_row
from app.audit.store import Selection, audit_rows
from app.db.failures import connection_failure, prepared_statements_lost
from app.settings import PoolerMode

PROGRESS_EVERY = 10_000


class AuditError(Exception):
    """A file that cannot be read or written, or a database that refuses the reading (the
    message says which and why)."""


@contextlib.contextmanager
def _database_refusals() -> Iterator[None]:
    """The database refusing the reading (e.g. a login that may not become compliance_auditor)
    is one line; failing to connect is left to the caller's one line about connecting."""
    try:
        yield
    except sa_exc.DBAPIError as error:
        if connection_failure(error) is not None:
            raise
        if prepared_statements_lost(error):
            raise AuditError(
                "prepared statements vanish or collide between transactions: API_DATABASE_URL"
                " looks like a transaction pooler (PgBouncer pool_mode=transaction, Supavisor"
                " on 6543); set DB_POOLER=transaction"
            ) from None
        detail = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise AuditError(f"the database refused to read the audit trail: {detail}") from None


class _Progress:
    """A counter line on stderr, only when stderr is a terminal."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.shown = sys.stderr.isatty()

    def update(self, count: int) -> None:
        if self.shown and count % PROGRESS_EVERY == 0:
            sys.stderr.write(f"\r{self.what} {count:,} rows")
            sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


def _report(checker: ChainChecker, problems: int, where: str, out: TextIO) -> int:
    entering = (
        f"; {checker.entering} chains enter the window from earlier rows, checked from their"
        " first row's stored previous hash"
        if checker.entering
        else ""
    )
    if problems:
        out.write(
            f"FAILED: {problems} problems in {checker.rows} rows of {checker.chains} chains"
            f" ({where})\n"
        )
        return 1
    out.write(f"OK: {checker.rows} rows in {checker.chains} chains verify ({where}){entering}\n")
    return 0


class _Verification:
    """Feeds rows to a ChainChecker, writing each problem as it is found (nothing is kept)."""

    def __init__(self, *, from_database: bool, out: TextIO) -> None:
        self.checker = ChainChecker()
        self.problems = 0
        self.from_database = from_database
        self.out = out
        self.progress = _Progress("verified")

    def row(self, row: Mapping[str, Any]) -> None:
        predecessor = row.get("predecessor_hash")
        for problem in self.checker.check(
            row,
            predecessor_known=self.from_database,
            predecessor_hash=bytes(predecessor).hex() if predecessor is not None else None,
        ):
            self.problems += 1
            self.out.write(f"{problem}\n")
        self.progress.update(self.checker.rows)

    def report(self, where: str) -> int:
        self.progress.done()
        return _report(self.checker, self.problems, where, self.out)


def verify_database(
    url: str, pooler: PoolerMode, selection: Selection, out: TextIO = sys.stdout
) -> int:
    """Whole chains (of a trader, an order, or everyone's); with ``since``, the rows from then
    on, each chain's first one checked against the stored hash of the row before it."""
    windowed = selection.since is not None
    verification = _Verification(from_database=True, out=out)

    async def run() -> None:
        async for row in audit_rows(url, pooler, selection, predecessors=windowed):
            verification.row(row)

    try:
        with _database_refusals():
            asyncio.run(run())
    finally:
        verification.progress.done()
    return verification.report("database")


def verify_file(path: Path, out: TextIO = sys.stdout) -> int:
    """An export, offline: links inside it, and each row's hash."""
    verification = _Verification(from_database=False, out=out)
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            for row in read_rows(stream):
                verification.row(row)
    except OSError as error:
        raise AuditError(f"cannot read {path}: {error.strerror or error}") from None
    except (ExportError, UnicodeDecodeError, ValueError) as error:
        raise AuditError(f"{path}: {error}") from None
    finally:
        verification.progress.done()
    return verification.report(str(path))


def export(
    url: str, pooler: PoolerMode, selection: Selection, fmt: Format, output: Path | None
) -> int:
    """The selected rows, in chain order, to ``output`` (written whole or not at all) or
    stdout; a summary line on stderr."""
    if output is None:
        with _database_refusals():
            count = asyncio.run(_export(url, pooler, selection, fmt, sys.stdout))
    else:
        partial = output.with_name(output.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out, _database_refusals():
                count = asyncio.run(_export(url, pooler, selection, fmt, out))
            os.replace(partial, output)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise AuditError(f"cannot write {output}: {error.strerror or error}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    sys.stderr.write(f"exported {count} audit rows{f' to {output}' if output else ''}\n")
    return 0


async def _export(
    url: str, pooler: PoolerMode, selection: Selection, fmt: Format, out: TextIO
) -> int:
    progress = _Progress("exported")
    count = 0
    write_header(out, fmt)
    try:
        async for row in audit_rows(url, pooler, selection):
            write_row(out, fmt, row)
            count += 1
            progress.update(count)
    finally:
        progress.done()
    return count
