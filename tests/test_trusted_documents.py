"""Trusted documents (issue 21): loaded by ``python -m app documents``, named by requests over
HTTP (POST, GET) and both WebSocket protocols, enforced under TRUSTED_DOCUMENTS=require."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app import metrics
from app.__main__ import main
from app.graphql.trusted import TrustedDocuments
from tests import pg
from tests.api import Client, api_client, api_settings, graphql_endpoint
from tests.conftest import Db
from tests.pooler import pgbouncer
from tests.test_metrics import value
from tests.test_subscriptions import LEGACY_WS, TRANSPORT_WS, connection, harness

TRADER = uuid.UUID("d0c00000-0000-4000-8000-000000000001")

VIEWER = "query Viewer { viewer { role } }"
ORDERS = "query Orders($first: Int) { orders(first: $first) { edges { node { id status } } } }"
SUBMIT = "mutation Submit($input: SubmitOrderInput!) { submitOrder(input: $input) { id } }"
UPDATES = "subscription Updates { orderUpdates { id status } }"
ORDER = {"symbol": "AAPL", "side": "BUY", "quantity": 5, "orderType": "MARKET"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write(tmp_path: Path, name: str, manifest: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(manifest))
    return path


def codegen_manifest(*texts: str) -> dict[str, str]:
    """graphql-codegen's client preset with hashAlgorithm sha256 (bare hex ids)."""
    return {f"sha256:{sha(text)}": text for text in texts}


def apollo_manifest(*operations: tuple[str, str]) -> dict[str, object]:
    return {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": sha(body), "body": body, "name": name, "type": "query"}
            for name, body in operations
        ],
    }


def documents(database: Db, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``python -m app documents ARGS`` as the owner; (exit status, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", database.owner_url.render_as_string(hide_password=False))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["documents", *args])
    return status, out.getvalue(), err.getvalue()


async def stored_ids(database: Db) -> list[str]:
    conn = await asyncpg.connect(database.dsn())
    try:
        return [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM order_api_private.trusted_documents ORDER BY id"
            )
        ]
    finally:
        await conn.close()


async def post(client: Client, payload: dict[str, Any], token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.http.post("/graphql", json=payload, headers=headers)


def trusted(client: Client) -> TrustedDocuments:
    return graphql_endpoint(client.app).trusted


# --- requests -------------------------------------------------------------------------------


async def store(database: Db, *texts: str, roles: list[str] | None = None) -> None:
    from app.db import trusted_documents
    from app.graphql.manifests import Document

    await trusted_documents.add(
        database.owner_url.render_as_string(hide_password=False),
        [Document(f"sha256:{sha(t)}", t, re.split(r"\W", t.split()[1])[0]) for t in texts],
        roles,
    )


async def test_an_unknown_id_is_400_persisted_document_not_found(database: Db) -> None:
    await store(database, VIEWER)
    async with api_client(api_settings(database)) as client:
        token = client.token(TRADER)
        for payload in (
            {"documentId": f"sha256:{sha('nope')}"},
            {"documentId": "some-relay-id"},
            {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha("nope")}}},
        ):
            answer = await post(client, payload, token)
            assert answer.status_code == 400
            [error] = answer.json()["errors"]
            assert error["extensions"] == {"code": "PERSISTED_DOCUMENT_NOT_FOUND"}


async def test_require_mode_refuses_text_and_answers_ids(database: Db) -> None:
    await store(database, VIEWER)
    async with api_client(api_settings(database, trusted_documents="require")) as client:
        token = client.token(TRADER)
        refused = await post(client, {"query": VIEWER}, token)
        assert refused.status_code == 400
        [error] = refused.json()["errors"]
        assert error["extensions"] == {"code": "PERSISTED_DOCUMENT_REQUIRED"}
        by_get = await client.http.get(
            "/graphql", params={"query": VIEWER}, headers={"Authorization": f"Bearer {token}"}
        )
        assert by_get.status_code == 400
        answer = await post(client, {"documentId": f"sha256:{sha(VIEWER)}"}, token)
        assert answer.json() == {"data": {"viewer": {"role": "authenticated"}}}


async def test_off_mode_reads_no_ids(database: Db) -> None:
    await store(database, VIEWER)
    async with api_client(api_settings(database, trusted_documents="off")) as client:
        answer = await post(client, {"documentId": f"sha256:{sha(VIEWER)}"}, client.token(TRADER))
        assert answer.status_code == 400
        assert answer.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert len(trusted(client)) == 0


async def test_a_query_by_get_is_answered_and_a_mutation_by_get_is_405(database: Db) -> None:
    await store(database, ORDERS, SUBMIT)
    async with api_client(api_settings(database)) as client:
        headers = {"Authorization": f"Bearer {client.token(TRADER)}"}
        answer = await client.http.get(
            "/graphql",
            params={"documentId": f"sha256:{sha(ORDERS)}", "variables": '{"first": 2}'},
            headers=headers,
        )
        assert answer.json() == {"data": {"orders": {"edges": []}}}
        mutation = await client.http.get(
            "/graphql",
            params={
                "documentId": f"sha256:{sha(SUBMIT)}",
                "variables": json.dumps({"input": ORDER}),
            },
            headers=headers,
        )
        assert mutation.status_code == 405, mutation.text
        orders = await client.gql(
            "{ orders { edges { node { id } } } }", token=client.token(TRADER)
        )
        assert orders["data"]["orders"]["edges"] == []  # nothing was submitted
        # The same mutation by POST is answered.
        posted = await post(
            client,
            {"documentId": f"sha256:{sha(SUBMIT)}", "variables": {"input": ORDER}},
            client.token(TRADER),
        )
        assert "id" in posted.json()["data"]["submitOrder"]


async def test_a_trusted_document_is_compiled_before_its_first_call(database: Db) -> None:
    await store(database, VIEWER)
    async with api_client(api_settings(database)) as client:
        plans = graphql_endpoint(client.app).compiled.plans
        assert (VIEWER, "Viewer") in plans
        assert (VIEWER, None) in plans
        before = metrics.COMPILED_QUERIES.labels("answered")._value.get()
        answer = await post(client, {"documentId": f"sha256:{sha(VIEWER)}"}, client.token(TRADER))
        assert answer.json() == {"data": {"viewer": {"role": "authenticated"}}}
        assert metrics.COMPILED_QUERIES.labels("answered")._value.get() == before + 1


async def test_additions_and_removals_are_picked_up_without_a_restart(database: Db) -> None:
    async with api_client(api_settings(database)) as client:
        token = client.token(TRADER)
        payload = {"documentId": f"sha256:{sha(VIEWER)}"}
        assert (await post(client, payload, token)).status_code == 400
        await store(database, VIEWER)
        await trusted(client).refresh()  # what the poller does every second
        assert (await post(client, payload, token)).status_code == 200
        assert (VIEWER, "Viewer") in graphql_endpoint(client.app).compiled.plans
        conn = await asyncpg.connect(database.dsn())
        await conn.execute("DELETE FROM order_api_private.trusted_documents")
        await conn.close()
        await trusted(client).refresh()
        assert (await post(client, payload, token)).status_code == 400


async def test_a_role_scoped_document_is_unknown_to_other_roles(database: Db) -> None:
    report = "query Report { orders(first: 1) { edges { node { id } } } }"
    await store(database, report, roles=["compliance_auditor"])
    async with api_client(api_settings(database)) as client:
        payload = {"documentId": f"sha256:{sha(report)}"}
        trader = await post(client, payload, client.token(TRADER))
        assert trader.status_code == 400
        assert trader.json()["errors"][0]["extensions"]["code"] == "PERSISTED_DOCUMENT_NOT_FOUND"
        auditor = await post(client, payload, client.token(role="compliance_auditor"))
        assert auditor.json() == {"data": {"orders": {"edges": []}}}


async def test_logs_and_metrics_name_the_document_and_its_operation(
    database: Db, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.requests")
    await store(database, VIEWER)
    document_id = f"sha256:{sha(VIEWER)}"
    async with api_client(api_settings(database)) as client:
        await post(client, {"documentId": document_id}, client.token(TRADER))
        scraped = (await client.http.get("/metrics")).text
    count = value(
        scraped,
        "order_api_trusted_document_duration_seconds_count",
        document=document_id,
        operation_name="Viewer",
    )
    assert count >= 1
    [line] = [
        r.getMessage() for r in caplog.records if f"document_id={document_id}" in r.getMessage()
    ]
    assert "operation_name=Viewer" in line


# --- WebSocket ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_subscription_by_document_id_streams_over_both_protocols(
    database: Db, protocol: str
) -> None:
    await store(database, UPDATES)
    async with harness(database) as h:
        token = h.token(TRADER)
        async with connection(h, token, protocol=protocol) as ws:
            kind = "subscribe" if protocol == TRANSPORT_WS else "start"
            await ws.send_json(
                {"id": "1", "type": kind, "payload": {"documentId": f"sha256:{sha(UPDATES)}"}}
            )
            await h.subscribers(1)
            order_id = await h.submit(TRADER)
            message = await ws.receive_json(timeout=5)
            assert message["type"] == ("next" if protocol == TRANSPORT_WS else "data"), message
            assert message["payload"]["data"]["orderUpdates"]["id"] == order_id


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.parametrize(
    ("mode", "payload", "code"),
    [
        ("require", {"query": UPDATES}, "PERSISTED_DOCUMENT_REQUIRED"),
        ("allow", {"documentId": "unknown"}, "PERSISTED_DOCUMENT_NOT_FOUND"),
    ],
)
async def test_a_refused_subscription_is_an_error_message_on_that_operation(
    database: Db, protocol: str, mode: str, payload: dict[str, Any], code: str
) -> None:
    await store(database, UPDATES)
    async with (
        harness(database, trusted_documents=mode) as h,
        connection(h, h.token(TRADER), protocol=protocol) as ws,
    ):
        kind = "subscribe" if protocol == TRANSPORT_WS else "start"
        await ws.send_json({"id": "7", "type": kind, "payload": payload})
        message = await ws.receive_json(timeout=5)
        assert (message["type"], message["id"]) == ("error", "7")
        error = message["payload"][0] if protocol == TRANSPORT_WS else message["payload"]
        assert error["extensions"]["code"] == code
        # The connection stays: the stored document is still served on it.
        await ws.send_json(
            {"id": "8", "type": kind, "payload": {"documentId": f"sha256:{sha(UPDATES)}"}}
        )
        await h.subscribers(1)


async def test_pickup_and_requests_work_through_a_transaction_pooler(
    database: Db, cluster: pg.Cluster
) -> None:
    with pgbouncer(cluster.owner_url, pool_size=2) as bouncer:
        pooled = dataclasses.replace(database, pooler=bouncer)
        settings = api_settings(pooled)
        assert settings.db_pooler == "transaction"
        async with api_client(settings) as client:
            payload = {"documentId": f"sha256:{sha(VIEWER)}"}
            assert (await post(client, payload, client.token(TRADER))).status_code == 400
            await store(database, VIEWER)
            for _ in range(3):  # every poll on whichever server connection is free
                await trusted(client).refresh()
            answer = await post(client, payload, client.token(TRADER))
            assert answer.json() == {"data": {"viewer": {"role": "authenticated"}}}
