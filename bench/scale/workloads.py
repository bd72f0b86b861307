"""W1..W4 as each server spells them: the GraphQL documents and each request's variables.

- W1: the trader's 20 newest orders, 10 fields each, with their fills (what a blotter polls)
- W2: submitOrder, a LIMIT order (a new order each time: no clientOrderId)
- W3: one of the trader's orders by id, with its fills and its audit trail
- W4: W1 nine times out of ten, W2 the tenth

PostGraphile 5 (Amber preset) names the uuid primary key ``rowId`` (``id`` is its global
node id), reaches fills and audit rows through the foreign keys as connections, and needs
the ordering spelled out; its ``createOrder`` takes the trader's id from the client (RLS
checks it against the token), where ours takes it from the token.
"""

from __future__ import annotations

from dataclasses import dataclass

ORDER_FIELDS = (
    "symbol side quantity orderType price status filledQuantity averageFillPrice createdAt"
)
FILL_FIELDS = "quantityFilled priceAtFill venue commission timestamp"
LOG_FIELDS = "action status timestamp reason retryAttempt"

OURS = {
    "W1": f"""query W1 {{ orders(first: 20) {{ edges {{ node {{ id {ORDER_FIELDS}
        fills {{ id {FILL_FIELDS} }} }} }} pageInfo {{ hasNextPage endCursor }} }} }}""",
    "W2": f"""mutation W2($input: SubmitOrderInput!) {{ submitOrder(input: $input) {{
        id {ORDER_FIELDS} }} }}""",
    "W3": f"""query W3($id: UUID!) {{ order(id: $id) {{ id {ORDER_FIELDS}
        fills {{ id {FILL_FIELDS} }} executionLogs {{ id {LOG_FIELDS} }} }} }}""",
}
POSTGRAPHILE = {
    "W1": f"""query W1 {{ allOrders(first: 20, orderBy: [CREATED_AT_DESC, ROW_ID_DESC]) {{
        edges {{ node {{ rowId {ORDER_FIELDS}
        fillsByOrderId(orderBy: [TIMESTAMP_ASC, ROW_ID_ASC]) {{ nodes {{ rowId {FILL_FIELDS} }} }}
        }} }} pageInfo {{ hasNextPage endCursor }} }} }}""",
    "W2": f"""mutation W2($input: CreateOrderInput!) {{ createOrder(input: $input) {{
        order {{ rowId {ORDER_FIELDS} }} }} }}""",
    "W3": f"""query W3($id: UUID!) {{ orderByRowId(rowId: $id) {{ rowId {ORDER_FIELDS}
        fillsByOrderId(orderBy: [TIMESTAMP_ASC, ROW_ID_ASC]) {{ nodes {{ rowId {FILL_FIELDS} }} }}
        executionLogsByOrderId(orderBy: [TIMESTAMP_ASC, ROW_ID_ASC]) {{
          nodes {{ rowId {LOG_FIELDS} }} }} }} }}""",
}
DOCUMENTS = {"ours": OURS, "postgraphile": POSTGRAPHILE}

WORKLOADS = ("W1", "W2", "W3", "W4")
MIX = {"W4": ("W1",) * 9 + ("W2",)}  # W4's requests, in turn


@dataclass(frozen=True)
class Request:
    """One request a client sends: the token's trader, and the document's variables."""

    token: str
    body: dict[str, object]


def new_order(n: int) -> dict[str, object]:
    """The n-th submitted order (valid under the default order limits)."""
    return {
        "symbol": ("AAPL", "MSFT", "NVDA", "TSLA")[n % 4],
        "side": "BUY" if n % 2 else "SELL",
        "quantity": 1 + n % 100,
        "orderType": "LIMIT",
        "price": f"{100 + n % 50}.25",
    }


def variables(server: str, workload: str, trader: str, order_id: str, n: int) -> dict[str, object]:
    if workload == "W2":
        order = new_order(n)
        if server == "postgraphile":
            return {"input": {"order": {"traderId": trader, **order}}}
        return {"input": order}
    if workload == "W3":
        return {"id": order_id}
    return {}


def body(server: str, workload: str, trader: str, order_id: str, n: int) -> dict[str, object]:
    return {
        "query": DOCUMENTS[server][workload],
        "variables": variables(server, workload, trader, order_id, n),
    }
