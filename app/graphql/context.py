"""What every resolver of one request shares: the transaction, the caller, the loaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy.engine import RowMapping
from strawberry.dataloader import DataLoader

from app.auth.claims import Claims
from app.db.session import Tx
from app.orders import queries
from app.settings import Settings

if TYPE_CHECKING:
    from app.graphql.subscriptions import OrderFeed


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
    feed: OrderFeed | None = None
    """The source of order changes for subscriptions: set on each WebSocket operation's own
    context (graphql/websocket.py); None over HTTP, where subscriptions are refused."""
    connection_params: dict[str, object] | None = None
    """A WebSocket connection's connection_init payload, set by Strawberry's handlers (which
    look for this attribute); read once, to authenticate the connection."""
    upgrade_authorization: Sequence[str] = ()
    """The Authorization headers of a WebSocket's upgrade request (more than one is refused)."""
    read_position: int | None = None
    """The WAL position the request's consistency token names: a replica answers only once
    it has replayed it (db/replicas.py)."""

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
