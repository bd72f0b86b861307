"""The raw database: pgbench replaying the API's own transactions, prepared, as authenticator.

Each script is the transaction the API sends for that workload, statement for statement:
BEGIN (READ ONLY for reads), the caller's settings (role, claims, statement timeout, time
zone: app/db/session.py's statement), then the work, then COMMIT.

- W1 and W3: the statement the API's compiled path sends, taken from app/graphql/compiled.py
  for the benchmark's own document (so it follows the code), its parameters spliced in as
  pgbench variables.
- W2: the one autocommit statement the API's compiled submitOrder sends
  (app/orders/writers.py's autocommit writer, migration 011's outer function), taken from
  that module, with the submit fields of the registry (app/orders/fields.py).

pgbench has no string variables, so the trader's uuid, its claims and W3's order id are SQL
expressions of integers (``dataset.TRADER_SQL``, ``ORDER_SQL``): the trader is one of the
same 1,000 the HTTP clients rotate, and W3 reads a random order of that trader.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.auth.claims import Claims
from app.db.session import _SET_CALLER_SQL
from app.graphql import compiled
from app.graphql.schema import build_schema
from app.orders import fields, writers
from app.settings import Settings
from bench.scale import workloads
from bench.scale.dataset import ORDER_SQL, TRADER_SQL, Shape
from bench.scale.traders import SECRET, numbers, step, writer_numbers

STATEMENT_TIMEOUT = "5000"  # Settings' default STATEMENT_TIMEOUT_MS, as the API sends it
# The benchmark's order (workloads.py's W2 input), as the API's document for the function.
W2_ORDER = {"symbol": "'AAPL'", "side": "'BUY'", "order_type": "'LIMIT'", "price": "'100.25'"}
# The claims the API sets: the token's payload as app/auth/claims.py serializes it.
CLAIMS = (
    '\'{{"aud":"authenticated","exp":4102444800,"iat":1700000000,"role":"authenticated",'
    '"sub":"\' || {trader} || \'"}}\''
)


def _caller(trader_sql: str) -> str:
    claims = CLAIMS.format(trader=f"({trader_sql})::text")
    return (
        _SET_CALLER_SQL.replace("$1", "'authenticated'")
        .replace("$2", claims)
        .replace("$3", f"'{STATEMENT_TIMEOUT}'")
    )


def _compiled(workload: str, variables: dict[str, object]) -> tuple[str, list[object]]:
    """The API's compiled statement for the workload's document, and its arguments."""
    plan = compiled.compile_query(workloads.OURS[workload], None)
    assert plan is not None, f"{workload} is not compiled by the API"
    schema = build_schema(Settings(jwt_secret=SECRET))._schema
    claims = Claims(role="authenticated", sub=uuid.uuid4(), raw={}, expires_at=None)
    bound = plan.bind(schema, variables, claims)
    assert bound is not None
    return bound


def _splice(sql: str, values: dict[int, str]) -> str:
    # pgbench reads ":name" as a variable; the compiled SQL's "::" casts are left alone.
    return re.sub(r"\$(\d+)\b", lambda m: values[int(m.group(1))], sql)


def scripts(workdir: Path, shape: Shape) -> dict[str, Path]:
    # The same traders as the HTTP clients': readers for W1 and W3, writers for W2.
    gap = step(shape, 1000)
    trader_number = (
        f"\\set t random(0, {len(numbers(shape, 1000)) - 1})\n"
        f"\\set n case when :t = 0 then 0 else 1 + (:t - 1) * {gap} end\n"
    )
    writer_number = (
        f"\\set t random(0, {len(writer_numbers(shape, 1000)) - 1})\n\\set n 2 + :t * {gap}\n"
    )
    trader = TRADER_SQL.format(n=":n")

    w1_sql, w1_args = _compiled("W1", {})
    w1 = (
        trader_number
        + "BEGIN READ ONLY;\n"
        + f"{_caller(trader)};\n"
        + _splice(w1_sql, {i + 1: str(v) for i, v in enumerate(w1_args)})
        + ";\nCOMMIT;\n"
    )
    w3_sql, _ = _compiled("W3", {"id": str(uuid.uuid4())})
    order = ORDER_SQL.format(i=":i")
    # One of trader n's orders, the inverse of dataset.OWNER_SQL: the big trader owns orders
    # 0, k, 2k, ...; the others' j-th order (j = n - 1 + m * traders) sits in block j / (k-1).
    k, t = shape.every, shape.traders
    others = shape.orders - (shape.orders + k - 1) // k
    w3 = (
        trader_number + f"\\set m case when :n = 0 then random(0, {(shape.orders - 1) // k})"
        f" else random(0, ({others} - :n) / {t}) end\n"
        + f"\\set j :n - 1 + :m * {t}\n"
        + f"\\set i case when :n = 0 then :m * {k}"
        f" else (:j / {k - 1}) * {k} + :j % {k - 1} + 1 end\n"
        + "BEGIN READ ONLY;\n"
        + f"{_caller(trader)};\n"
        + _splice(w3_sql, {1: order})
        + ";\nCOMMIT;\n"
    )
    document = {name: W2_ORDER.get(name, "NULL") for name in fields.SUBMIT_FIELDS}
    document |= {"quantity": "(:quantity)::int", "time_in_force": "'GTC'"}
    pairs = ", ".join(f"'{name}', {value}" for name, value in document.items())
    w2 = (
        writer_number
        + "\\set quantity random(1, 100)\n"
        + _splice(
            writers.PLACE_ORDER.autocommit,
            {
                1: "'authenticated'",
                2: CLAIMS.format(trader=f"({trader})::text"),
                3: f"(jsonb_build_object('trader_id', ({trader})::text, {pairs})::text)",
            },
        )
        + ";\n"
    )
    paths = {}
    for name, text in {"W1": w1, "W2": w2, "W3": w3}.items():
        path = workdir / f"pgbench-{name}.sql"
        path.write_text(text)
        paths[name] = path
    return paths


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run(
    api_dsn: str, paths: dict[str, Path], workload: str, clients: int, seconds: float, workdir: Path
) -> Result:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit(
            "pgbench is not installed (Debian/Ubuntu: apt-get install postgresql-client)"
        )
    if workload == "W4":
        files = ["-f", f"{paths['W1']}@9", "-f", f"{paths['W2']}@1"]
    else:
        files = ["-f", str(paths[workload])]
    for old in workdir.glob("pgbench_log.*"):
        old.unlink()
    argv = [
        pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)),
        "-T", str(max(1, round(seconds))), "-l", "--log-prefix", str(workdir / "pgbench_log"),
        *files, api_dsn,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    latencies = sorted(
        int(line.split()[2])
        for log in workdir.glob("pgbench_log.*")
        for line in log.read_text().splitlines()
    )
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    measured = re.search(r"duration: (\d+) s", done.stdout)
    duration = float(measured.group(1)) if measured else seconds
    if not latencies:
        raise RuntimeError(f"pgbench ran no transaction:\n{done.stdout}\n{done.stderr}")
    return Result(
        requests=len(latencies),
        seconds=duration,
        p50_ms=latencies[len(latencies) // 2] / 1000,
        p99_ms=latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] / 1000,
        errors=int(failed.group(1)) if failed else 0,
    )
