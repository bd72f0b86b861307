"""``python -m app documents add|list|remove`` (issue 21): both manifest formats, ids checked
against their texts, each command all or nothing, one line for every refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.api import api_client, api_settings
from tests.conftest import Db
from tests.test_trusted_documents import (
    ORDERS,
    TRADER,
    VIEWER,
    apollo_manifest,
    codegen_manifest,
    documents,
    post,
    sha,
    stored_ids,
    write,
)


def test_a_codegen_manifest_is_stored_and_answers_by_every_id(
    database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    relay = {"a1b2c3-relay-md5": ORDERS}
    files = [
        write(tmp_path, "persisted-documents.json", codegen_manifest(VIEWER)),
        write(tmp_path, "relay.json", relay),
    ]
    status, out, err = documents(database, monkeypatch, "add", *map(str, files))
    assert (status, err) == (0, "")
    assert "2 trusted documents added" in out

    status, out, _ = documents(database, monkeypatch, "list")
    assert status == 0
    assert f"sha256:{sha(VIEWER)}\tViewer\tany role" in out
    assert "a1b2c3-relay-md5\tOrders\tany role" in out

    async def requests() -> None:
        async with api_client(api_settings(database)) as client:
            token = client.token(TRADER)
            for payload in (
                {"documentId": f"sha256:{sha(VIEWER)}"},
                {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(VIEWER)}}},
            ):
                answer = await post(client, payload, token)
                assert answer.json() == {"data": {"viewer": {"role": "authenticated"}}}
            # Relay's own id, and the sha256 of its text that every document answers to.
            for document_id in ("a1b2c3-relay-md5", f"sha256:{sha(ORDERS)}"):
                answer = await post(
                    client, {"documentId": document_id, "variables": {"first": 1}}, token
                )
                assert answer.json() == {"data": {"orders": {"edges": []}}}

    asyncio.run(requests())


def test_an_apollo_manifests_bare_hex_ids_answer_to_sha256_ids_too(
    database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifest = write(tmp_path, "apollo.json", apollo_manifest(("Viewer", VIEWER)))
    assert documents(database, monkeypatch, "add", str(manifest))[0] == 0

    async def requests() -> None:
        async with api_client(api_settings(database)) as client:
            token = client.token(TRADER)
            for document_id in (sha(VIEWER), f"sha256:{sha(VIEWER)}"):
                answer = await post(client, {"documentId": document_id}, token)
                assert answer.json() == {"data": {"viewer": {"role": "authenticated"}}}

    asyncio.run(requests())


@pytest.mark.parametrize("apollo", [True, False], ids=["apollo", "codegen"])
def test_an_id_that_is_not_its_documents_sha256_refuses_the_file(
    database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apollo: bool
) -> None:
    wrong = sha(VIEWER + " ")
    manifest: object = (
        {
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [
                {"id": sha(ORDERS), "body": ORDERS, "name": "Orders", "type": "query"},
                {"id": wrong, "body": VIEWER, "name": "Viewer", "type": "query"},
            ],
        }
        if apollo
        else {f"sha256:{sha(ORDERS)}": ORDERS, f"sha256:{wrong}": VIEWER}
    )
    status, _, err = documents(
        database, monkeypatch, "add", str(write(tmp_path, "m.json", manifest))
    )
    assert status == 1
    [line] = err.splitlines()
    assert f"id {'' if apollo else 'sha256:'}{wrong} is not the SHA-256 of its document" in line
    assert asyncio.run(stored_ids(database)) == []


def test_one_invalid_document_stores_none_of_the_commands_documents(
    database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = write(tmp_path, "good.json", codegen_manifest(VIEWER))
    too_deep = "query TooDeep { viewer { " + "role " + "} }"
    deep = "query Deep { " + "orders { edges { node { id } } } " * 1 + "}"
    bad = write(
        tmp_path,
        "bad.json",
        {"x1": ORDERS, "x2": "query Typo { viewer { rol } }", "x3": too_deep, "x4": deep},
    )
    status, _, err = documents(database, monkeypatch, "add", str(good), str(bad))
    assert status == 1
    [line] = err.splitlines()
    assert "nothing stored" in line
    assert "operation Typo (id x2)" in line
    assert "Cannot query field 'rol' on type 'Viewer'" in line
    assert "Traceback" not in err
    assert asyncio.run(stored_ids(database)) == []


def test_documents_past_the_limits_are_refused_naming_the_limit(
    database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MAX_QUERY_DEPTH", "2")
    monkeypatch.setenv("MAX_ALIASES", "1")
    deep = write(tmp_path, "deep.json", {"d": "query Deep { orders { edges { node { id } } } }"})
    status, _, err = documents(database, monkeypatch, "add", str(deep))
    assert status == 1
    assert "operation Deep (id d): 'Deep' exceeds maximum operation depth of 2" in err
    aliases = write(
        tmp_path, "aliases.json", {"a": "query Aliases { a: viewer { role } b: viewer { role } }"}
    )
    status, _, err = documents(database, monkeypatch, "add", str(aliases))
    assert status == 1
    assert "operation Aliases (id a): 2 aliases found. Allowed: 1" in err


def test_remove_takes_a_document_away_and_an_unknown_id_is_one_line(
    database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    documents(database, monkeypatch, "add", str(write(tmp_path, "m.json", {"v": VIEWER})))
    assert documents(database, monkeypatch, "remove", "v")[:2] == (0, "removed v\n")
    status, _, err = documents(database, monkeypatch, "remove", "v")
    assert status == 1
    assert err == "python -m app documents remove: error: no trusted document has the id 'v'\n"


def test_an_id_stored_with_another_text_refuses_the_command(
    database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    documents(database, monkeypatch, "add", str(write(tmp_path, "a.json", {"v": VIEWER})))
    again = write(tmp_path, "b.json", {"v": VIEWER})
    assert documents(database, monkeypatch, "add", str(again))[1] == (
        "0 trusted documents added, 1 already stored\n"
    )
    other = write(tmp_path, "c.json", {"w": ORDERS, "v": ORDERS})
    status, _, err = documents(database, monkeypatch, "add", str(other))
    assert status == 1
    assert "id v is already stored with another text" in err
    assert asyncio.run(stored_ids(database)) == ["v"]


def test_help_never_acts(database: Db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    documents(database, monkeypatch, "add", str(write(tmp_path, "m.json", {"v": VIEWER})))
    for args in (["remove", "v", "--help"], ["add", str(tmp_path / "none.json"), "--help"]):
        with pytest.raises(SystemExit) as exit_:
            documents(database, monkeypatch, *args)
        assert exit_.value.code == 0
    assert asyncio.run(stored_ids(database)) == ["v"]
