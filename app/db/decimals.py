"""Decimals as the API writes them: at least two decimals (cents), more only where the value
needs them.

Money is stored in cents (numeric(10, 2)) and reads "190.50"; an average fill price is stored
with six decimals (numeric(16, 6), rounded by the database's lifecycle trigger) and reads
"304.34" when it is whole cents, "304.333333" when it is not, never "304.340000". Exact:
nothing is rounded here, trailing zeros past the cents are dropped. Python writes the text
with ``decimal_text`` (resolvers, compiled mutations: graphql/scalars.py); PostgreSQL with
``DECIMAL_SQL`` (compiled queries: orders/fields.py), so both paths answer the same text.
"""

from __future__ import annotations

from decimal import Decimal

PLACES = 2
"""The fewest decimals a Decimal is written with."""


def decimal_text(value: Decimal) -> str:
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite: no column the API serves holds NaN
    significant = "".join(map(str, digits)).rstrip("0")
    needed = -(exponent + len(digits) - len(significant)) if significant else 0
    return f"{value:.{max(PLACES, needed)}f}"


DECIMAL_SQL = f"round({{v}}, greatest(min_scale({{v}}), {PLACES}))::text"
"""``decimal_text`` over the numeric SQL expression ``{v}``."""
