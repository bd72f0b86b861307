"""Medians of an A/B measured in pairs: the same work "without" and "with" a change,
alternating, so that the machine's drift hits both alike (bench/audit_chain.py,
bench/positions/writes.py, bench/order_events.py)."""

from __future__ import annotations

import statistics

SIDES = ("without", "with")


def times_ms(seconds: dict[str, list[float]]) -> tuple[float, float, float]:
    """Seconds per operation on each side -> the median without, the median with, and the
    median of the paired differences (with - without), all in ms."""
    without, with_ = (statistics.median(seconds[side]) * 1000 for side in SIDES)
    paired = statistics.median(
        (w - p) * 1000 for w, p in zip(seconds["with"], seconds["without"], strict=True)
    )
    return without, with_, paired


def rates(tps: dict[str, list[float]]) -> tuple[float, float, float]:
    """Rates on each side -> the median without, the median with, and the median of the paired
    ratios less one (with / without - 1)."""
    without, with_ = (statistics.median(tps[side]) for side in SIDES)
    paired = statistics.median(w / p - 1 for w, p in zip(tps["with"], tps["without"], strict=True))
    return without, with_, paired


def runs(tps: dict[str, list[float]]) -> str:
    """Every run's rate, rounded, for the report line."""
    return (
        f"runs without {[round(t) for t in tps['without']]}, with {[round(t) for t in tps['with']]}"
    )
