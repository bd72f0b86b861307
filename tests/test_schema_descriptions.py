"""Every input field says its rules where GraphiQL shows them: the schema's descriptions."""

from __future__ import annotations

from typing import Any

from tests.api import api_client, api_settings
from tests.conftest import Db

INPUT_TYPES = ("SubmitOrderInput", "RecordFillInput", "OrderFilter")
INTROSPECT = """
query($name: String!) {
  __type(name: $name) { description inputFields { name description } }
}
"""


async def test_every_input_field_describes_its_rules(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        types: dict[str, Any] = {}
        for name in INPUT_TYPES:
            body = await client.gql(INTROSPECT, {"name": name})
            types[name] = body["data"]["__type"]
    for name, described in types.items():
        assert described["description"], name
        missing = [f["name"] for f in described["inputFields"] if not f["description"]]
        assert missing == [], (name, missing)
    submit = {f["name"]: f["description"] for f in types["SubmitOrderInput"]["inputFields"]}
    # Bounds that come from the order limits name the column and the migration's default.
    assert "order_limits.max_quantity (default 100,000)" in submit["quantity"]
    assert "order_limits.max_notional (default 5,000,000)" in submit["quantity"]
    # Which order types take a price.
    assert "refused for MARKET" in submit["price"]
    assert "LIMIT and STOP" in types["SubmitOrderInput"]["description"]
    assert "64 printable ASCII" in submit["clientOrderId"]
