"""The run's results as a Markdown table (with ratios), a JSON file and a PNG chart.

PostGraphile's "better configuration" is chosen per workload and concurrency (the higher
throughput of its 1- and 2-process runs), which favours it slightly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measurement:
    target: str  # "raw", "postgraphile-1", "postgraphile-2", "ours"
    workload: str
    concurrency: int
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU per request in ms (bench/scale/cpu.py); None where not measured.
    server_cpu_ms: float | None = None
    db_cpu_ms: float | None = None
    client_cpu_ms: float | None = None


def _best_postgraphile(results: list[Measurement], workload: str, c: int) -> Measurement | None:
    candidates = [
        m
        for m in results
        if m.target.startswith("postgraphile") and m.workload == workload and m.concurrency == c
    ]
    return max(candidates, key=lambda m: m.rate, default=None)


def _find(results: list[Measurement], target: str, workload: str, c: int) -> Measurement | None:
    return next(
        (
            m
            for m in results
            if m.target == target and m.workload == workload and m.concurrency == c
        ),
        None,
    )


def _cell(m: Measurement | None) -> str:
    if m is None:
        return "n/a"
    errors = f", {m.errors} errors" if m.errors else ""
    return f"{m.rate:,.0f} ({m.p50_ms:.1f} / {m.p99_ms:.1f}{errors})"


def _ratio(a: Measurement | None, b: Measurement | None) -> str:
    if a is None or b is None or not b.rate:
        return "n/a"
    return f"{a.rate / b.rate:.2f}"


def table(results: list[Measurement]) -> str:
    lines = [
        "| workload | c | raw (pgbench) | PostGraphile 5 (best of 1/2 processes) | this API"
        " | ours / PostGraphile | ours / raw | p99 ours / PostGraphile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(m.workload, m.concurrency) for m in results})
    for workload, c in keys:
        raw = _find(results, "raw", workload, c)
        pgl = _best_postgraphile(results, workload, c)
        ours = _find(results, "ours", workload, c)
        which = f" [{pgl.target.split('-')[1]}p]" if pgl else ""
        p99 = f"{ours.p99_ms / pgl.p99_ms:.2f}" if ours and pgl and pgl.p99_ms else "n/a"
        lines.append(
            f"| {workload} | {c} | {_cell(raw)} | {_cell(pgl)}{which} | {_cell(ours)}"
            f" | {_ratio(ours, pgl)} | {_ratio(ours, raw)} | {p99} |"
        )
    lines.append("")
    lines.append("Cells: requests/s (p50 / p99 latency in ms).")
    return "\n".join(lines)


def _spent(m: Measurement | None) -> str:
    if m is None or (m.server_cpu_ms is None and m.db_cpu_ms is None):
        return "n/a"
    parts = [
        f"{ms:.2f}" if ms is not None else "?"
        for ms in (m.server_cpu_ms, m.db_cpu_ms, m.client_cpu_ms)
    ]
    total = sum(ms or 0.0 for ms in (m.server_cpu_ms, m.db_cpu_ms, m.client_cpu_ms))
    return f"{' + '.join(parts)} = {total:.2f}"


def cpu_table(results: list[Measurement]) -> str:
    """Where each request's CPU went (bench/scale/cpu.py): with every core busy, the cores
    divided by the sum is the most a target can serve on this machine."""
    if all(m.db_cpu_ms is None and m.server_cpu_ms is None for m in results):
        return ""
    lines = [
        "| workload | c | raw: pgbench + database | PostGraphile 5 (as above) | this API |",
        "|---|---|---|---|---|",
    ]
    for workload, c in sorted({(m.workload, m.concurrency) for m in results}):
        raw = _find(results, "raw", workload, c)
        raw_cell = "n/a"
        if raw is not None and raw.db_cpu_ms is not None:
            total = raw.db_cpu_ms + (raw.client_cpu_ms or 0.0)
            raw_cell = f"{raw.client_cpu_ms or 0.0:.2f} + {raw.db_cpu_ms:.2f} = {total:.2f}"
        lines.append(
            f"| {workload} | {c} | {raw_cell} | {_spent(_best_postgraphile(results, workload, c))}"
            f" | {_spent(_find(results, 'ours', workload, c))} |"
        )
    lines.append("")
    lines.append(
        "CPU per request, ms: server + database + load generator (wrk; pgbench for raw) ="
        " total. The database's figure counts all its processes, so it includes their"
        " background work (WAL writer, autovacuum)."
    )
    return "\n".join(lines)


def write(out: Path, meta: dict[str, Any], results: list[Measurement]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(m) for m in results]}, indent=2) + "\n"
    )
    header = "\n".join(f"- {key}: {value}" for key, value in meta.items())
    spent = cpu_table(results)
    (out / "results.md").write_text(
        f"{header}\n\n{table(results)}\n" + (f"\n{spent}\n" if spent else "")
    )
    chart(out / "results.png", meta, results)


def chart(path: Path, meta: dict[str, Any], results: list[Measurement]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is not installed (pip install -e '.[bench]')")
        return
    workloads = sorted({m.workload for m in results})
    targets = sorted({m.target for m in results})
    figure, axes = plt.subplots(2, len(workloads), figsize=(4 * len(workloads), 7), squeeze=False)
    for column, workload in enumerate(workloads):
        for target in targets:
            points = sorted(
                (m for m in results if m.workload == workload and m.target == target),
                key=lambda m: m.concurrency,
            )
            if not points:
                continue
            xs = [m.concurrency for m in points]
            (line,) = axes[0][column].plot(xs, [m.rate for m in points], marker="o", label=target)
            axes[1][column].plot(xs, [m.p99_ms for m in points], marker="o", color=line.get_color())
            axes[1][column].plot(
                xs, [m.p50_ms for m in points], linestyle="--", color=line.get_color()
            )
        axes[0][column].set_title(workload)
        axes[0][column].set_ylabel("requests/s")
        axes[1][column].set_ylabel("p99 (solid), p50 (dashed), ms")
        axes[1][column].set_yscale("log")
        for row in (0, 1):
            axes[row][column].set_xlabel("concurrency")
            axes[row][column].set_xscale("log")
            axes[row][column].set_xticks(sorted({m.concurrency for m in results}))
            axes[row][column].get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"{meta.get('orders', '?'):,} orders, {meta.get('when', '')}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
