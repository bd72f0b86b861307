"""The hash-chained audit trail (migration 005): written by the database, verified and exported.

Legitimate writes (every action, as the API causes them) leave intact chains whose hashes
Python recomputes exactly; out-of-band edits by a superuser with the triggers out of the way
(rewrite, delete, insert) are named by ``audit verify``; an export verifies offline and a
tampered export names the row.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.audit import chain, commands, store
from app.audit.store import Selection
from app.db.migrations import PROJECT_ROOT
from app.settings import PoolerMode
from tests import pg, pooler, privileges
from tests.conftest import Db
from tests.sql import as_role
from tests.test_migrations import alembic

TRADER = uuid.UUID("3b0c5d7e-1f2a-4b6c-8d9e-0a1b2c3d4e5f")
OTHER_TRADER = uuid.UUID("9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a")
ACTIONS = {"SUBMITTED", "APPROVED", "EXECUTED", "FILLED", "REJECTED", "CANCELLED", "RECOVERED"}
# Text a CSV or a length prefix could trip over, and an empty reason (not NULL).
AWKWARD = 'changed my mind, "really"|3:x~\n\r\tüñí €'


@dataclass
class Trail:
    db: Db
    owner: asyncpg.Connection
    api: asyncpg.Connection
    orders: dict[str, uuid.UUID]

    @property
    def api_url(self) -> str:
        return self.db.api_url.render_as_string(hide_password=False)

    @property
    def pooler(self) -> PoolerMode:
        """As ``DB_POOLER`` must say for ``api_url`` (through the CI's pooler, if any)."""
        return "transaction" if self.db.pooler else "none"


async def _burn_positions(owner: asyncpg.Connection) -> None:
    # Gaps in seq between an order's rows, so a test can insert a row between two of them.
    await owner.execute(
        "SELECT nextval(pg_get_serial_sequence('public.execution_logs', 'seq'))"
        " FROM generate_series(1, 3)"
    )


async def _as(trail: Trail, role: str, sql: str, *args: Any, sub: uuid.UUID = TRADER) -> Any:
    async with as_role(trail.api, role, sub, commit=True) as conn:
        value = await conn.fetchval(sql, *args)
    await _burn_positions(trail.owner)
    return value


async def _submit(trail: Trail, sub: uuid.UUID = TRADER) -> uuid.UUID:
    order_id: uuid.UUID = await _as(
        trail,
        "authenticated",
        "INSERT INTO orders (trader_id, symbol, side, quantity, order_type, price)"
        " VALUES ($1, 'AAPL', 'BUY', 100, 'LIMIT', 10.50) RETURNING id",
        sub,
        sub=sub,
    )
    return order_id


async def _engine(trail: Trail, sql: str, *args: Any) -> None:
    await _as(trail, "service_role", sql, *args)


FILL = (
    "INSERT INTO fills (order_id, quantity_filled, price_at_fill, venue, commission)"
    " VALUES ($1, $2, 10.00, 'NYSE', 0.35)"
)


@pytest.fixture
async def trail(database: Db) -> AsyncIterator[Trail]:
    """Orders that went through every action, and one of another trader."""
    owner = await asyncpg.connect(database.dsn())
    api = await asyncpg.connect(database.dsn("authenticator"))
    t = Trail(database, owner, api, {})
    try:
        filled = await _submit(t)
        await _engine(t, "UPDATE orders SET approved_at = now() WHERE id = $1", filled)
        await _engine(
            t,
            "UPDATE orders SET retry_attempt = 1, error_code = 'VENUE_TIMEOUT',"
            " status_reason = $2 WHERE id = $1",
            filled,
            AWKWARD,
        )
        await _engine(t, "UPDATE orders SET routed_at = now() WHERE id = $1", filled)
        await _engine(t, "UPDATE orders SET recovered_at = clock_timestamp() WHERE id = $1", filled)
        await _engine(t, FILL, filled, 40)
        await _engine(t, FILL, filled, 60)
        cancelled = await _submit(t)
        await _as(
            t,
            "authenticated",
            "UPDATE orders SET status = 'CANCELLED', status_reason = '' WHERE id = $1",
            cancelled,
        )
        rejected = await _submit(t)
        await _engine(t, "UPDATE orders SET approved_at = now() WHERE id = $1", rejected)
        await _engine(
            t,
            "UPDATE orders SET status = 'REJECTED', status_reason = $2, error_code = 'RISK'"
            " WHERE id = $1",
            rejected,
            AWKWARD,
        )
        other = await _submit(t, OTHER_TRADER)
        t.orders = {"filled": filled, "cancelled": cancelled, "rejected": rejected, "other": other}
        yield t
    finally:
        await api.close()
        await owner.close()


async def _rows(trail: Trail, order_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    where = "WHERE e.order_id = $1" if order_id else "WHERE $1::uuid IS NULL"
    rows = await trail.owner.fetch(
        "SELECT e.*, e.action::text AS action, e.status::text AS status,"
        " public.execution_logs_canonical(e) AS canonical"
        f" FROM execution_logs e {where} ORDER BY e.order_id, e.seq",
        order_id,
    )
    return [dict(r) for r in rows]


def _verify(trail: Trail, **selection: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = commands.verify_database(trail.api_url, trail.pooler, Selection(**selection), out)
    return code, out.getvalue()


async def _verify_async(trail: Trail, **selection: Any) -> tuple[int, str]:
    # The command runs its own event loop: give it a thread of its own.
    return await asyncio.to_thread(_verify, trail, **selection)


# --- out-of-band edits, as a superuser would make them --------------------------------------


async def _out_of_band(trail: Trail, how: str, sql: str, *args: Any) -> None:
    """Past the immutability triggers and revoked privileges: only a superuser can do this."""
    assert await trail.owner.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    async with trail.owner.transaction():
        if how == "replica":
            await trail.owner.execute("SET LOCAL session_replication_role = replica")
        else:
            await trail.owner.execute("ALTER TABLE execution_logs DISABLE TRIGGER USER")
        await trail.owner.execute(sql, *args)
        if how != "replica":
            await trail.owner.execute("ALTER TABLE execution_logs ENABLE TRIGGER USER")


def _forged(after: dict[str, Any], *, consistent: bool) -> dict[str, Any]:
    row = {
        **after,
        "id": uuid.uuid4(),
        "seq": after["seq"] + 1,
        "action": "CANCELLED",
        "reason": "forged",
        "prev_hash": after["hash"],
    }
    row["hash"] = bytes.fromhex(chain.digest(row)) if consistent else os.urandom(32)
    return row


async def _insert(trail: Trail, how: str, row: dict[str, Any]) -> None:
    # The stream's columns (migration 013) are not hashed, but NOT NULL: carried over as well.
    columns = [*chain.COLUMNS, "xact", "stream_key"]
    await _out_of_band(
        trail,
        how,
        f"INSERT INTO execution_logs ({', '.join(columns)}) OVERRIDING SYSTEM VALUE"
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
        *[row[c] for c in columns],
    )


# --- what the database writes ------------------------------------------------------------------


async def test_every_action_is_chained_per_order_and_python_agrees_with_the_database(
    trail: Trail,
) -> None:
    rows = await _rows(trail)
    assert {r["action"] for r in rows} == ACTIONS
    assert any(r["reason"] == "" for r in rows)
    assert any(r["reason"] is None for r in rows)
    assert any(r["reason"] == AWKWARD for r in rows)
    previous: dict[str, Any] | None = None
    for row in rows:
        assert chain.canonical(row) == row["canonical"], row["action"]
        assert chain.digest(row) == row["hash"].hex(), row["action"]
        first = previous is None or previous["order_id"] != row["order_id"]
        assert row["prev_hash"] == (None if first else previous["hash"])  # type: ignore[index]
        previous = row


async def test_the_chain_trigger_sees_the_row_as_stored(trail: Trail) -> None:
    # BEFORE triggers fire in name order: the hash must be computed after every other one.
    names = await trail.owner.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'execution_logs'::regclass"
        " AND NOT tgisinternal AND tgtype & 2 = 2 AND tgtype & 4 = 4 ORDER BY tgname"
    )
    assert names[-1]["tgname"] == "execution_logs_zz_hash_chain"


async def test_racing_fills_of_one_order_keep_one_chain(trail: Trail, database: Db) -> None:
    order_id = await _submit(trail)
    await _engine(trail, "UPDATE orders SET approved_at = now() WHERE id = $1", order_id)
    await _engine(trail, "UPDATE orders SET routed_at = now() WHERE id = $1", order_id)
    second = await asyncpg.connect(database.dsn("authenticator"))

    async def fills(conn: asyncpg.Connection) -> None:
        for _ in range(15):
            async with as_role(conn, "service_role", commit=True):
                await conn.execute(FILL, order_id, 1)

    try:
        await asyncio.gather(fills(trail.api), fills(second))
    finally:
        await second.close()
    rows = await _rows(trail, order_id)
    assert len(rows) == 3 + 30
    assert [r["prev_hash"] for r in rows[1:]] == [r["hash"] for r in rows[:-1]]
    assert await _verify_async(trail, order=order_id) == (
        0,
        "OK: 33 rows in 1 chains verify (database)\n",
    )


async def test_verify_passes_after_every_kind_of_legitimate_write(trail: Trail) -> None:
    total = len(await _rows(trail))
    assert await _verify_async(trail) == (0, f"OK: {total} rows in 4 chains verify (database)\n")
    code, out = await _verify_async(trail, trader=TRADER)
    assert code == 0
    assert "in 3 chains" in out
    code, out = await _verify_async(trail, order=trail.orders["other"])
    assert (code, out) == (0, "OK: 1 rows in 1 chains verify (database)\n")


# --- what verification finds -------------------------------------------------------------------

HOW = ["replica", "disable trigger"]


@pytest.mark.parametrize("how", HOW)
async def test_a_rewritten_row_is_named(trail: Trail, how: str) -> None:
    rows = await _rows(trail, trail.orders["filled"])
    victim = rows[2]
    await _out_of_band(
        trail, how, "UPDATE execution_logs SET reason = 'all fine' WHERE id = $1", victim["id"]
    )
    code, out = await _verify_async(trail)
    assert code == 1
    assert f"id={victim['id']} (order {victim['order_id']}): its content does not match" in out
    assert out.count("\n") == 2, out  # that row, and the summary


async def test_a_rewrite_with_a_recomputed_hash_breaks_the_next_link(trail: Trail) -> None:
    rows = await _rows(trail, trail.orders["filled"])
    victim, after = rows[2], rows[3]
    rewritten = {**victim, "reason": "all fine"}
    await _out_of_band(
        trail,
        "replica",
        "UPDATE execution_logs SET reason = 'all fine', hash = $2 WHERE id = $1",
        victim["id"],
        bytes.fromhex(chain.digest(rewritten)),
    )
    code, out = await _verify_async(trail)
    assert code == 1
    assert f"id={after['id']} (order {after['order_id']}): it does not follow row" in out
    assert f"id={victim['id']}, the row before it" in out


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("position", [0, 3, -1])
async def test_a_removed_row_is_noticed_at_the_row_after_it(
    trail: Trail, how: str, position: int
) -> None:
    rows = await _rows(trail, trail.orders["filled"])
    await _out_of_band(trail, how, "DELETE FROM execution_logs WHERE id = $1", rows[position]["id"])
    code, out = await _verify_async(trail)
    if position == -1:
        # The newest row of a chain leaves a shorter chain that is still consistent: only a
        # chain head anchored outside the database shows it (README, Audit trail).
        assert code == 0, out
        return
    after = rows[position + 1]
    assert code == 1
    reason = (
        "it is its chain's first row but refers to a previous row"
        if position == 0
        else f"it does not follow row seq={rows[position - 1]['seq']}"
    )
    assert f"id={after['id']} (order {after['order_id']}): {reason}" in out


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("consistent", [False, True])
async def test_a_row_inserted_out_of_band_is_named(
    trail: Trail, how: str, consistent: bool
) -> None:
    rows = await _rows(trail, trail.orders["filled"])
    forged = _forged(rows[1], consistent=consistent)
    await _insert(trail, how, forged)
    code, out = await _verify_async(trail)
    assert code == 1
    assert f"id={forged['id']}" in out
    # The row after it no longer follows its predecessor.
    assert f"id={rows[2]['id']} (order {rows[2]['order_id']}): it does not follow row" in out
    assert ("its content does not match" in out) is not consistent


async def test_verify_since_checks_the_link_into_the_window(trail: Trail) -> None:
    rows = await _rows(trail, trail.orders["filled"])
    since = rows[4]["timestamp"]
    code, out = await _verify_async(trail, since=since)
    assert code == 0, out
    await _out_of_band(trail, "replica", "DELETE FROM execution_logs WHERE id = $1", rows[3]["id"])
    code, out = await _verify_async(trail, since=since)
    assert code == 1
    assert (
        f"id={rows[4]['id']} (order {rows[4]['order_id']}): its previous hash does not match" in out
    )
    # Every row before the window gone: the first one left refers to a row that is not there.
    await _out_of_band(
        trail,
        "replica",
        "DELETE FROM execution_logs WHERE order_id = $1 AND seq < $2",
        rows[4]["order_id"],
        rows[4]["seq"],
    )
    code, out = await _verify_async(trail, since=since)
    assert code == 1
    assert f"id={rows[4]['id']} (order {rows[4]['order_id']}): it is its chain's first row" in out


# --- export ------------------------------------------------------------------------------------


def _export(trail: Trail, fmt: str, path: Path, **selection: Any) -> None:
    code = commands.export(trail.api_url, trail.pooler, Selection(**selection), fmt, path)  # type: ignore[arg-type]
    assert code == 0


def _verify_file(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    return commands.verify_file(path, out), out.getvalue()


async def _window(trail: Trail) -> dict[str, datetime]:
    rows = await _rows(trail)
    return {
        "since": min(r["timestamp"] for r in rows) - timedelta(seconds=1),
        "until": max(r["timestamp"] for r in rows) + timedelta(seconds=1),
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_export_then_verify_and_a_tampered_export_names_the_row(
    trail: Trail, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"audit.{fmt}"
    window = await _window(trail)
    await asyncio.to_thread(_export, trail, fmt, path, **window)
    rows = await _rows(trail)
    assert _verify_file(path) == (0, f"OK: {len(rows)} rows in 4 chains verify ({path})\n")

    # Every value as the database holds it, NULLs and empty texts apart.
    from app.audit.export import read_rows

    with path.open(encoding="utf-8", newline="") as stream:
        exported = list(read_rows(stream))
    assert exported == [chain.texts(r) for r in rows]

    # An export is deterministic: exporting the period again is how an anchor is checked.
    again = tmp_path / f"again.{fmt}"
    await asyncio.to_thread(_export, trail, fmt, again, **window)
    assert again.read_bytes() == path.read_bytes()

    text = path.read_text(encoding="utf-8")
    victim = next(r for r in rows if r["error_code"] == "RISK")
    path.write_text(text.replace('RISK"', 'NONE"', 1), encoding="utf-8")
    code, out = _verify_file(path)
    assert code == 1
    assert f"id={victim['id']} (order {victim['order_id']}): its content does not match" in out

    # A row left out of the export: the one after it does not follow.
    lines = text.splitlines(keepends=True)
    filled = [r for r in rows if r["order_id"] == trail.orders["filled"]]
    dropped = next(i for i, line in enumerate(lines) if str(filled[1]["id"]) in line)
    path.write_text("".join(lines[:dropped] + lines[dropped + 1 :]), encoding="utf-8")
    code, out = _verify_file(path)
    assert code == 1
    assert f"id={filled[2]['id']} (order {filled[2]['order_id']}): it does not follow" in out


async def test_an_export_window_starting_mid_chain_verifies_from_the_stored_link(
    trail: Trail, tmp_path: Path
) -> None:
    rows = await _rows(trail, trail.orders["filled"])
    window = await _window(trail)
    path = tmp_path / "audit.jsonl"
    await asyncio.to_thread(
        _export,
        trail,
        "jsonl",
        path,
        since=rows[3]["timestamp"],
        until=window["until"],
        trader=TRADER,
    )
    exported = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["trader_id"] for r in exported} == {str(TRADER)}
    # The filled order's chain enters the window at its fourth row (chains in order_id order).
    first = next(r for r in exported if r["order_id"] == str(rows[3]["order_id"]))
    assert first["id"] == str(rows[3]["id"])
    assert first["prev_hash"] == rows[2]["hash"].hex()
    code, out = _verify_file(path)
    assert code == 0, out
    assert "1 chains enter the window from earlier rows" in out


# --- the command line --------------------------------------------------------------------------


def _app(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_commands_against_database_urls(trail: Trail, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": trail.db.owner_url.render_as_string(hide_password=False),
        "API_DATABASE_URL": trail.api_url,
        "DB_POOLER": trail.pooler,
    }
    ok = await asyncio.to_thread(_app, "audit", "verify", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: ")

    out = tmp_path / "audit.csv"
    window = await _window(trail)
    exported = await asyncio.to_thread(
        _app,
        "audit",
        "export",
        "--from",
        window["since"].isoformat(),
        "--to",
        window["until"].isoformat(),
        "--format",
        "csv",
        "--output",
        str(out),
        env=env,
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr.startswith("exported ")
    assert not (tmp_path / "audit.csv.partial").exists()
    checked = await asyncio.to_thread(_app, "audit", "verify", "--file", str(out), env={})
    assert checked.returncode == 0, checked.stdout + checked.stderr

    victim = (await _rows(trail, trail.orders["cancelled"]))[0]
    await _out_of_band(
        trail,
        "replica",
        "UPDATE execution_logs SET trader_id = $2 WHERE id = $1",
        victim["id"],
        OTHER_TRADER,
    )
    broken = await asyncio.to_thread(_app, "audit", "verify", env=env)
    assert broken.returncode == 1
    assert str(victim["id"]) in broken.stdout
    assert broken.stdout.splitlines()[-1].startswith("FAILED: 1 problems")


async def test_verify_and_export_read_through_a_transaction_pooler(
    trail: Trail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server-side cursor is declared and read inside the reading's one transaction, which a
    # transaction pooler keeps on one server session: a few rows per fetch here, so that the
    # cursor is read from again and again.
    monkeypatch.setattr(store, "BATCH", 2)
    rows = len(await _rows(trail))
    with pooler.pgbouncer(trail.db.cluster.owner_url, pool_size=1) as bouncer:
        url = pooler.through(trail.db.cluster.url(trail.db.name, "authenticator"), bouncer)
        api_url = url.render_as_string(hide_password=False)
        out = io.StringIO()
        code = await asyncio.to_thread(
            commands.verify_database, api_url, "transaction", Selection(), out
        )
        assert (code, out.getvalue()) == (0, f"OK: {rows} rows in 4 chains verify (database)\n")
        path = tmp_path / "audit.jsonl"
        window = await _window(trail)
        await asyncio.to_thread(
            commands.export, api_url, "transaction", Selection(**window), "jsonl", path
        )
        assert len(path.read_text().splitlines()) == rows
        assert _verify_file(path)[0] == 0

        # Not told about the pooler, a run leaves its named prepared statements on the one
        # server session; the next run collides with them and says which setting is missing.
        env = {
            "DATABASE_URL": trail.db.owner_url.render_as_string(hide_password=False),
            "API_DATABASE_URL": api_url,
            "DB_POOLER": "none",
        }
        first = await asyncio.to_thread(_app, "audit", "verify", env=env)
        assert first.returncode == 0, first.stderr
        second = await asyncio.to_thread(_app, "audit", "verify", env=env)
        assert second.returncode == 1
        [line] = second.stderr.splitlines()
        assert "transaction pooler" in line, line
        assert "set DB_POOLER=transaction" in line, line


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["audit", "verify", "--since", "2026-11-29"], "has no time zone", 2),
        (["audit", "verify", "--trader", "nobody"], "not a UUID", 2),
        (
            [
                "audit",
                "export",
                "--from",
                "2026-11-29T00:00Z",
                "--to",
                "2026-11-28T00:00Z",
                "--format",
                "csv",
            ],
            "--from must be before --to",
            2,
        ),
        (["audit", "verify", "--file", "/nonexistent/audit.csv"], "error: cannot read", 1),
        (["audit", "verify", "--file", "README.md"], "neither a JSON Lines nor a CSV", 1),
    ],
)
def test_mistakes_are_one_clear_line(args: list[str], message: str, code: int) -> None:
    result = _app(
        *args,
        env={
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "API_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        },
    )
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreachable_database_is_one_line() -> None:
    url = "postgresql://authenticator@127.0.0.1:1/postgres"
    result = _app("audit", "verify", env={"DATABASE_URL": url, "API_DATABASE_URL": url})
    assert result.returncode == 1
    assert result.stderr.startswith(
        "python -m app audit verify: error: cannot connect to the database at API_DATABASE_URL"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_commands_against_the_embedded_database(tmp_path: Path) -> None:
    env = {"ORDER_API_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": "", "API_DATABASE_URL": ""}
    try:
        for step in (["db", "upgrade"], ["db", "seed"]):
            done = _app(*step, env=env)
            assert done.returncode == 0, done.stderr
        verified = _app("audit", "verify", env=env)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith("OK: ")
        now = datetime.now(UTC)
        exported = _app(
            "audit",
            "export",
            "--from",
            (now - timedelta(days=1)).isoformat(),
            "--to",
            (now + timedelta(days=1)).isoformat(),
            "--format",
            "jsonl",
            env=env,
        )
        assert exported.returncode == 0, exported.stderr
        assert all(json.loads(line)["hash"] for line in exported.stdout.splitlines())
    finally:
        _app("db", "stop", env=env)


# --- the migration -----------------------------------------------------------------------------


SHAPE = """
SELECT 'column' AS kind, c.relname || '.' || a.attname AS name,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' ' || a.attidentity::text, '') AS definition
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relname IN ('orders', 'fills', 'execution_logs') AND c.relnamespace = 'public'::regnamespace
   AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid IN ('orders'::regclass, 'fills'::regclass, 'execution_logs'::regclass)
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1, 2
"""


async def test_migration_chains_existing_rows_and_its_downgrade_gives_back_exactly_004(
    cluster: pg.Cluster,
) -> None:
    names = [await pg.create_empty_database(cluster) for _ in range(2)]
    migrated, only_004 = (Db(cluster, name) for name in names)
    try:
        for db in (migrated, only_004):
            up = await asyncio.to_thread(alembic, db, "upgrade", "004")
            assert up.returncode == 0, up.stderr
        # History written before 005: two orders, one of them filled.
        api = await asyncpg.connect(migrated.dsn("authenticator"))
        try:
            ids = []
            for _ in range(2):
                async with as_role(api, "authenticated", TRADER, commit=True) as conn:
                    ids.append(
                        await conn.fetchval(
                            "INSERT INTO orders (trader_id, symbol, side, quantity, order_type)"
                            " VALUES ($1, 'MSFT', 'SELL', 5, 'MARKET') RETURNING id",
                            TRADER,
                        )
                    )
            for sql, args in (
                ("UPDATE orders SET approved_at = now() WHERE id = $1", ()),
                ("UPDATE orders SET routed_at = now() WHERE id = $1", ()),
                (FILL, (5,)),
            ):
                async with as_role(api, "service_role", commit=True) as conn:
                    await conn.execute(sql, ids[0], *args)
        finally:
            await api.close()

        up = await asyncio.to_thread(alembic, migrated, "upgrade", "head")
        assert up.returncode == 0, up.stderr
        assert "Running upgrade 004 -> 005, Hash-chained audit trail" in up.stderr
        owner = await asyncpg.connect(migrated.dsn())
        try:
            rows = await owner.fetch(
                "SELECT e.*, e.action::text AS action, e.status::text AS status"
                " FROM execution_logs e ORDER BY e.order_id, e.seq"
            )
            assert len(rows) == 5
            assert all(chain.digest(dict(r)) == r["hash"].hex() for r in rows)
            url = migrated.api_url.render_as_string(hide_password=False)
            out = io.StringIO()
            verified = await asyncio.to_thread(
                commands.verify_database, url, "none", Selection(), out
            )
            assert verified == 0, out.getvalue()
            assert out.getvalue() == "OK: 5 rows in 2 chains verify (database)\n"
            # Still immutable, and still refused to the owner, after the backfill.
            with pytest.raises(asyncpg.PostgresError):
                await owner.execute("UPDATE execution_logs SET reason = 'x'")

            down = await asyncio.to_thread(alembic, migrated, "downgrade", "004")
            assert down.returncode == 0, down.stderr
            facts = {}
            for db in (migrated, only_004):
                conn = await asyncpg.connect(db.dsn())
                try:
                    # Grants, functions, policies and triggers; then columns, constraints and
                    # indexes of the three tables.
                    shape = await conn.fetch(SHAPE)
                    facts[db.name] = [
                        *await privileges.render(conn),
                        *(f"{r['kind']} {r['name']}: {r['definition']}" for r in shape),
                    ]
                finally:
                    await conn.close()
            assert facts[migrated.name] == facts[only_004.name], privileges.diff(
                facts[only_004.name], facts[migrated.name]
            )
            shape = await owner.fetch(SHAPE)
            assert any(r["name"] == "execution_logs.seq" for r in shape)  # the feed's column
            again = await asyncio.to_thread(alembic, migrated, "upgrade", "head")
            assert again.returncode == 0, again.stderr
        finally:
            await owner.close()
    finally:
        for name in names:
            await pg.drop_test_database(cluster, name)


async def test_a_login_that_may_not_read_as_compliance_is_one_line(
    trail: Trail, cluster: pg.Cluster
) -> None:
    login = f"audit_{uuid.uuid4().hex[:8]}"
    await pg.admin_execute(cluster, f"CREATE ROLE {login} LOGIN")
    try:
        url = trail.db.cluster.url(trail.db.name, login).render_as_string(hide_password=False)
        env = {"DATABASE_URL": url, "API_DATABASE_URL": url}
        result = await asyncio.to_thread(_app, "audit", "verify", env=env)
        assert result.returncode == 1
        assert result.stderr.startswith(
            "python -m app audit verify: error: the database refused to read the audit trail:"
            " permission denied"
        ), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    finally:
        await pg.admin_execute(cluster, f"DROP ROLE {login}")
