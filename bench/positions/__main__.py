"""``python -m bench.positions``: the read path, the write path, or both (see the package)."""

from __future__ import annotations

import argparse
import asyncio
import uuid

import asyncpg

import bench.positions
from app.db import embedded
from app.db.urls import libpq_url
from app.settings import Settings
from bench.audit_chain import _create
from bench.positions.reads import measure, read_path
from bench.positions.writes import write_path


async def run(owner_url: str, args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(libpq_url(owner_url))
    suffix = uuid.uuid4().hex[:8]
    names: list[str] = []
    try:
        if args.only in (None, "read"):
            names.append(f"bench_positions_read_{suffix}")
            read_url = await _create(admin, owner_url, names[-1])
            await read_path(read_url, args)
        if args.only == "read":
            return
        await write_path(
            admin,
            owner_url,
            suffix,
            args.write_orders,
            args.rounds,
            args.clients,
            args.pgbench_seconds,
            names,
        )
    finally:
        for name in names:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.positions",
        description=(bench.positions.__doc__ or "").splitlines()[0],
    )
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--typical-traders", type=int, default=200)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--read-rounds", type=int, default=3)
    parser.add_argument("--write-orders", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pgbench-seconds", type=int, default=5)
    parser.add_argument("--only", choices=("read", "write"), help="one of the two parts")
    parser.add_argument(
        "--existing", metavar="URL", help="measure reads on this database (owner's URL), read only"
    )
    args = parser.parse_args()
    if args.existing:
        print(f"reads on the existing database {args.existing}")
        asyncio.run(measure(args.existing, args.reads, args.read_rounds))
        return
    url = Settings.from_env().database_url
    if url:
        asyncio.run(run(url, args))
        return
    with embedded.throwaway("order-api-bench-") as server:
        asyncio.run(run(server.owner_url.render_as_string(hide_password=False), args))


if __name__ == "__main__":
    main()
