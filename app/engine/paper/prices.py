"""Reference prices of the paper venue: one price per symbol per *tick*.

The venue turns its clock into ticks (``tick = floor(unix_time / tick_seconds)``),
so separate processes agree on the price at a given moment; this module only maps
``(symbol, tick)`` to a price.

* Default: a seeded random walk. The start price comes from the symbol alone
  (20..500); the path comes from ``(seed, symbol)``. To be computable at any
  tick without walking from tick 0 (the tick count since 1970 is in the
  billions), the walk is a sum of octaves of seeded value noise: at short
  horizons it moves like a random walk (about 0.2 % a tick, never more than
  1.5 %), beyond ~2000 ticks it stays within roughly -25 %..+35 % of the
  start price. Prices are rounded to 0.01 and always positive.
* ``prices_csv``: a CSV file with a header row, in one of two layouts::

      symbol,price          symbol,tick,price
      ACME,100.00           ACME,0,100.00
      ACME,101.50           ACME,5,99.00
      ACME,99.75            ACME,9,101.00

  ``symbol,price``: a symbol's rows, in file order, are its prices at ticks
  0, 1, 2...  ``symbol,tick,price``: a row's price holds from its tick until
  the symbol's next row (ticks before the first row take the first price).
  Either way a symbol's series repeats forever, with period "number of rows"
  resp. "last tick + 1": the price at tick ``t`` is the series' price at
  ``t mod period``. Symbols absent from the file are unknown to the venue.
"""

from __future__ import annotations

import bisect
import csv
import functools
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from app.engine.draws import unit_draw

__all__ = ["CENT", "SYMBOL_RE", "ReferencePrices"]

CENT: Final = Decimal("0.01")
_MIN_PRICE: Final = CENT
# Symbols the venue can trade at all; a prices CSV narrows them further.
SYMBOL_RE: Final = re.compile(r"[A-Z0-9.\-]{1,10}")

_START_PRICE_LOW: Final = 20.0
_START_PRICE_HIGH: Final = 500.0
# Octave k spans 2**k ticks with amplitude ~ sqrt(2**k): random-walk scaling up to
# 2**(_WALK_OCTAVES - 1) ticks, bounded beyond (max |log move| ~ 0.3).
_WALK_OCTAVES: Final = 12
_WALK_STEP: Final = 0.002


class ReferencePrices:
    """The price model: the seeded random walk, or the series of a prices CSV."""

    def __init__(self, seed: int, prices_csv: Path | None = None) -> None:
        """Raises ``ValueError`` for a malformed ``prices_csv``."""
        self.seed = seed
        self._csv_prices = None if prices_csv is None else _load_prices_csv(prices_csv)

    def knows(self, symbol: str) -> bool:
        """Whether ``symbol`` is well-formed and, with a prices CSV, listed in it."""
        return bool(SYMBOL_RE.fullmatch(symbol)) and (
            self._csv_prices is None or symbol in self._csv_prices
        )

    def at(self, symbol: str, tick: int) -> Decimal:
        """The price of a known ``symbol`` at ``tick``."""
        if self._csv_prices is None:
            return _walk_price(self.seed, symbol, tick)
        return self._csv_prices[symbol].at(tick)


@functools.lru_cache(maxsize=1 << 16)
def _lattice(seed: int, symbol: str, octave: int, index: int) -> float:
    return 2.0 * unit_draw("walk", seed, symbol, octave, index) - 1.0


def _start_price(symbol: str) -> float:
    return _START_PRICE_LOW + (_START_PRICE_HIGH - _START_PRICE_LOW) * unit_draw("start", symbol)


@functools.lru_cache(maxsize=1 << 16)
def _walk_price(seed: int, symbol: str, tick: int) -> Decimal:
    log_move = 0.0
    for octave in range(_WALK_OCTAVES):
        span = 1 << octave
        index, offset = divmod(tick, span)
        left = _lattice(seed, symbol, octave, index)
        right = _lattice(seed, symbol, octave, index + 1)
        log_move += _WALK_STEP * math.sqrt(span) * (left + (right - left) * offset / span)
    price = Decimal(f"{_start_price(symbol) * math.exp(log_move):.2f}")
    return max(price, _MIN_PRICE)


@dataclass(frozen=True)
class _PriceSeries:
    ticks: tuple[int, ...]
    prices: tuple[Decimal, ...]

    def at(self, tick: int) -> Decimal:
        position = tick % (self.ticks[-1] + 1)
        index = bisect.bisect_right(self.ticks, position) - 1
        return self.prices[max(index, 0)]


def _load_prices_csv(path: Path) -> dict[str, _PriceSeries]:
    rows: dict[str, list[tuple[int, Decimal]]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or ()]
        if header not in (["symbol", "price"], ["symbol", "tick", "price"]):
            raise ValueError(
                f"{path}: header must be 'symbol,price' or 'symbol,tick,price', got {header}"
            )
        reader.fieldnames = header
        explicit_ticks = "tick" in header
        for record in reader:
            where = f"{path}:{reader.line_num}"
            symbol = (record.get("symbol") or "").strip()
            if not SYMBOL_RE.fullmatch(symbol):
                raise ValueError(f"{where}: bad symbol {symbol!r}")
            try:
                price = Decimal((record.get("price") or "").strip())
            except InvalidOperation:
                raise ValueError(f"{where}: bad price {record.get('price')!r}") from None
            if not price.is_finite() or price <= 0:
                raise ValueError(f"{where}: price must be positive, got {price}")
            series = rows.setdefault(symbol, [])
            if explicit_ticks:
                try:
                    tick = int((record.get("tick") or "").strip())
                except ValueError:
                    raise ValueError(f"{where}: bad tick {record.get('tick')!r}") from None
                if tick < 0:
                    raise ValueError(f"{where}: tick must be >= 0, got {tick}")
                if any(seen == tick for seen, _ in series):
                    raise ValueError(f"{where}: tick {tick} repeated for {symbol}")
            else:
                tick = len(series)
            series.append((tick, price.quantize(CENT, rounding=ROUND_HALF_UP)))
    if not rows:
        raise ValueError(f"{path}: no prices")
    result: dict[str, _PriceSeries] = {}
    for symbol, points in rows.items():
        points.sort()
        result[symbol] = _PriceSeries(
            ticks=tuple(tick for tick, _ in points),
            prices=tuple(price for _, price in points),
        )
    return result
