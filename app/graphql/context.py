"""What every resolver of one request shares: the transaction, the caller, the loaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy.engine import RowMapping
from strawberry.dataloader import DataLoader

from app.auth.claims import Claims
from app.db.session import Tx
from app.orders import queries
from app.settings import Settings


def _grouped(rows: Sequence[RowMapping], keys: Sequence[UUID]) -> list[list[RowMapping]]:
    by_order: dict[UUID, list[RowMapping]] = {key: [] for key in keys}
    for row in rows:
        by_order[row["order_id"]].append(row)
    return [by_order[key] for key in keys]


@dataclass
class Context:
    claims: Claims
    settings: Settings
    request_id: str
    _tx: Tx | None = None
    fills: DataLoader[UUID, list[RowMapping]] = field(init=False)
    logs: DataLoader[UUID, list[RowMapping]] = field(init=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One statement per nested field per request, however many orders the page holds.
        async def load_fills(keys: list[UUID]) -> list[list[RowMapping]]:
            return _grouped(await queries.fills_of(self.tx, keys), keys)

        async def load_logs(keys: list[UUID]) -> list[list[RowMapping]]:
            return _grouped(await queries.logs_of(self.tx, keys), keys)

        self.fills = DataLoader(load_fn=load_fills)
        self.logs = DataLoader(load_fn=load_logs)

    @property
    def tx(self) -> Tx:
        if self._tx is None:
            raise RuntimeError("no transaction is open for this request")
        return self._tx

    @tx.setter
    def tx(self, value: Tx | None) -> None:
        self._tx = value
