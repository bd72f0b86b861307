"""Load from wrk: a Lua script that sends pre-built requests in turn, one token each.

Every request is built here, whole (headers, token, body), so the Lua side does no work
per request but pick the next one; ``done`` prints the counts and latency percentiles as
one JSON line. One wrk thread: on a 2-core machine more threads would take CPU from the
servers, and one thread drives 32 keep-alive connections easily.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = """
local requests = {
%(requests)s
}
local n = #requests
local i = 0
request = function()
  i = i %% n + 1
  return requests[i]
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"p50":%%d,"p90":%%d,"p99":%%d,'
    .. '"mean":%%f,"errors":%%d,"non2xx":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


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


def _lua_string(raw: str) -> str:
    escaped = raw.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r")
    return '"' + escaped.replace("\n", "\\n") + '"'


def http_request(port: int, token: str, body: dict[str, object]) -> str:
    payload = json.dumps(body, separators=(",", ":"))
    return (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(payload.encode())}\r\n\r\n{payload}"
    )


def script(path: Path, requests: list[str]) -> Path:
    path.write_text(LUA % {"requests": ",\n".join(_lua_string(r) for r in requests)})
    return path


def run(script_path: Path, port: int, connections: int, seconds: float) -> Result:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    argv = [
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(script_path), f"http://127.0.0.1:{port}/graphql",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line[len("WRKJSON ") :])
    return Result(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        errors=data["errors"] + data["non2xx"],
    )
