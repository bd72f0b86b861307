"""python -m bench.db_cost: why the database spends more CPU per W1 page under this API.

The scale benchmark records the database's CPU per request (bench/scale/cpu.py). Per W1 page
it has been higher under this API than under PostGraphile 5, and higher than under pgbench
replaying the API's own transaction (issue 19, item 5). This separates the two effects on
the scale benchmark's database, with pgbench alone as the client, so that nothing but the
transaction differs between two measurements:

1. **The statement.** pgbench replays W1 as this API sends it (bench/scale/pgbench.py: BEGIN
   READ ONLY, the caller's settings, the compiled statement, COMMIT) and as PostGraphile 5
   sends it (``begin``, its settings statement, the statement in
   bench/scale/postgraphile-w1.sql, ``commit``), for the same traders.
2. **The conditions around the same statement.** This API's transaction again, with 150 µs
   between its round trips (what the server's Python holds a transaction open for), with
   twenty clients (two workers' pools), and with one busy process on the machine (the
   server's own CPU): each is one thing that differs between pgbench and the API.

Then, in one session, the two statements alone (prepared, interleaved, as one trader): the
time PostgreSQL spends on each, round trip included.

Targets alternate run by run; medians of ``--rounds``. Needs the scale benchmark's database
(``python -m bench.scale --orders 1000000`` loads it) on this machine, for /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.scale import cpu, dataset, pgbench
from bench.scale.dataset import trader_uuid

HERE = Path(__file__).parent
BUSY_LOOP = "while True: pass"


def postgraphile_w1(ours: str) -> str:
    """PostGraphile's W1 transaction for pgbench, with the same trader choice as ``ours``."""
    statement = (HERE / "scale" / "postgraphile-w1.sql").read_text()
    statement = " ".join(
        line.strip() for line in statement.splitlines() if not line.startswith("--")
    ).rstrip(";")
    # pgbench would read ":MI" and ":SS" inside the format string as variables.
    statement = statement.replace(
        "'YYYY-MM-DD\"T\"HH24:MI:SS.USTZH:TZM'::text",
        "('YYYY-MM-DD\"T\"HH24' || chr(58) || 'MI' || chr(58) || 'SS.USTZH' || chr(58) || 'TZM')",
    )
    trader = dataset.TRADER_SQL.format(n=":n")
    claims = (
        "json_build_object('aud', 'authenticated', 'exp', 4102444800, 'role', 'authenticated',"
        f" 'sub', ({trader})::text)::text"
    )
    settings = (
        "select set_config(el->>0, el->>1, true) from json_array_elements(json_build_array("
        f"json_build_array('role', 'authenticated'), json_build_array('request.jwt.claims',"
        f" {claims}))) el;"
    )
    choose_trader = ours.split("BEGIN READ ONLY;")[0]
    return f"{choose_trader}begin;\n{settings}\n{statement};\ncommit;\n"


def with_pauses(ours: str, microseconds: int) -> str:
    """The same transaction with a pause before the settings and before COMMIT."""
    pause = f"\\sleep {microseconds} us\n"
    return ours.replace("BEGIN READ ONLY;\n", "BEGIN READ ONLY;\n" + pause).replace(
        ";\nCOMMIT;", ";\n" + pause + "COMMIT;"
    )


def run(api_dsn: str, script: Path, clients: int, seconds: int, postmaster: int, busy: int):
    burners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        before = cpu.seconds(postmaster)
        argv = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
                "-T", str(seconds), "-f", str(script), api_dsn]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        used = cpu.seconds(postmaster) - before
    finally:
        for burner in burners:
            burner.kill()
    found = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
    if found is None or int(found.group(1)) == 0:
        raise SystemExit(f"pgbench ran no transaction:\n{done.stdout}\n{done.stderr}")
    count = int(found.group(1))
    return count / seconds, used * 1000 / count


async def statements(api_dsn: str, ours: str, theirs: str, trader: str, repeat: int):
    """Each statement alone, prepared, as ``trader``, interleaved: ms per execution."""
    conn = await asyncpg.connect(api_dsn)
    times: dict[str, list[float]] = {"this API": [], "PostGraphile 5": []}
    try:
        async with conn.transaction(readonly=True):
            await conn.execute(
                "SELECT set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', $1, true)",
                json.dumps({"role": "authenticated", "sub": trader}),
            )
            prepared = {name: await conn.prepare(sql) for name, sql in
                        (("this API", ours), ("PostGraphile 5", theirs))}  # fmt: skip
            for _ in range(20):
                for statement in prepared.values():
                    await statement.fetch()
            for _ in range(repeat):
                for name, statement in prepared.items():
                    start = time.perf_counter()
                    await statement.fetch()
                    times[name].append((time.perf_counter() - start) * 1000)
    finally:
        await conn.close()
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    host = "host=%2Fwork%2Fbenchdb%2Fpgdata"
    parser.add_argument("--database-url", default=f"postgresql://postgres:@/postgres?{host}")
    parser.add_argument("--api-url", default=f"postgresql://authenticator:@/postgres?{host}")
    parser.add_argument("--orders", type=int, default=1_000_000, help="the data set's shape")
    parser.add_argument("--seconds", type=int, default=10, help="per pgbench run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    postmaster = cpu.postmaster(asyncio.run(cpu.data_directory(args.database_url)))
    if postmaster is None:
        raise SystemExit("the database must run on this machine (its CPU is read from /proc)")
    work = Path(tempfile.mkdtemp(prefix="db-cost-"))
    ours = pgbench.scripts(work, dataset.Shape(args.orders)).get("W1")
    assert ours is not None
    text = ours.read_text()
    scripts = {
        "PostGraphile 5's W1": postgraphile_w1(text),
        "150 µs pauses": with_pauses(text, 150),
    }
    paths = {"this API's W1": ours}
    for name, script in scripts.items():
        paths[name] = work / (re.sub(r"\W+", "-", name) + ".sql")
        paths[name].write_text(script)
    variants = {  # name: (script, clients, busy processes)
        "this API's W1": (paths["this API's W1"], 10, 0),
        "PostGraphile 5's W1": (paths["PostGraphile 5's W1"], 10, 0),
        "this API's W1, 150 µs pauses": (paths["150 µs pauses"], 10, 0),
        "this API's W1, 20 clients": (paths["this API's W1"], 20, 0),
        "this API's W1, 1 busy process": (paths["this API's W1"], 10, 1),
    }
    for script, clients, _ in variants.values():
        run(args.api_url, script, clients, 2, postmaster, 0)  # warm every statement's plan
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for round_ in range(1, args.rounds + 1):
        for name, (script, clients, busy) in variants.items():
            rate, ms = run(args.api_url, script, clients, args.seconds, postmaster, busy)
            results[name].append((rate, ms))
            print(f"round {round_}: {name}: {rate:,.0f} tx/s, database {ms:.3f} ms/tx", flush=True)

    print(f"\npgbench -M prepared, {args.seconds} s runs, medians of {args.rounds} rounds:\n")
    print("| transaction | clients | tx/s | database CPU per transaction, ms |")
    print("|---|---|---|---|")
    for name, (_, clients, _) in variants.items():
        rate = statistics.median(r for r, _ in results[name])
        ms = statistics.median(m for _, m in results[name])
        print(f"| {name} | {clients} | {rate:,.0f} | {ms:.3f} |")

    trader = str(trader_uuid(1))
    ours_sql, theirs_sql = _statement(text), _statement(postgraphile_w1(text))
    medians = asyncio.run(statements(args.api_url, ours_sql, theirs_sql, trader, 300))
    print("\nThe statement alone, one session, prepared, interleaved, 300 each (p50, ms):\n")
    for name, ms in medians.items():
        print(f"- {name}: {ms:.3f}")


def _statement(script: str) -> str:
    """The script's read statement (it finds its trader in the claims: auth.uid())."""
    lines = [line for line in script.splitlines() if line and not line.startswith("\\")]
    body = [line for line in lines if not line.lower().startswith(("begin", "commit"))]
    return " ".join(body[1:]).rstrip(";")  # body[0] is the settings statement


if __name__ == "__main__":
    main()
