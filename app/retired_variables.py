"""Environment variables that are no longer read, and the refusal that names where each went.

Ignoring one would leave a limit the operator believes in unenforced, so a process that finds
one set refuses to start (``Settings.from_env``)."""

from __future__ import annotations

from collections.abc import Mapping

from app.env_parsing import SettingsError

MOVED_TO_ORDER_LIMITS = {
    "MAX_ORDER_QUANTITY": "max_quantity",
    "RISK_MAX_QUANTITY": "max_quantity",
    "RISK_MAX_NOTIONAL": "max_notional",
    "RISK_SYMBOLS": "symbols",
}
"""Order limits once read from the environment; now one row in the database (order_limits)."""


def refuse_retired(env: Mapping[str, str]) -> None:
    """Refuse to start with a variable that is no longer read."""
    for name, column in MOVED_TO_ORDER_LIMITS.items():
        if env.get(name):
            raise SettingsError(
                f"{name} is no longer read: order limits live in the database, set them with"
                f' python -m app db psql -c "UPDATE order_limits SET {column} = ..."'
                " (README, Order limits)"
            )
