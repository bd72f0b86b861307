"""``python -m app documents``: the trusted documents a frontend's build sends, loaded into the
database as its owner (``DATABASE_URL``, else the embedded PostgreSQL).

``add`` checks every document of every file against the schema this code serves and its
limits (graphql/manifests.py) before storing any, and stores them in one transaction: all
or nothing. Every server process picks the change up within seconds (graphql/trusted.py).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from app.cli import arguments
from app.cli.connections import connecting, embedded_settings
from app.settings import APP_ROLES, Settings

DETAILS = """\
A manifest is Apollo's persisted query manifest, or a JSON object {id: documentText} as
Relay's persist output and graphql-codegen's client preset (persisted-documents.json)
write it. An id sha256:<hex> (or a 64-hex id in an Apollo manifest) must be the SHA-256 of
its document. Every document is checked against the served schema and limits before any
is stored; one refused document stores none. TRUSTED_DOCUMENTS=require then refuses any
document sent as text."""


def add_parser(sub: Any) -> None:
    documents = arguments.add_command(
        sub,
        "documents",
        "the trusted documents: add, list, remove",
        "python -m app documents add persisted-documents.json",
        details=DETAILS,
    )
    documents.set_defaults(run=run)
    actions = documents.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = arguments.add_command(
        actions,
        "add",
        "check every document of the manifests, then store them all (or none)",
        "python -m app documents add web/persisted-documents.json",
        details=DETAILS,
    )
    add.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a manifest")
    add.add_argument(
        "--role",
        action="append",
        choices=APP_ROLES,
        dest="roles",
        help="only callers of this role may use these documents (repeatable; default: any)",
    )
    arguments.add_command(
        actions,
        "list",
        "print the stored documents: id, operation, roles",
        "python -m app documents list",
    )
    remove = arguments.add_command(
        actions,
        "remove",
        "remove one stored document (by the id its manifest gave it)",
        "python -m app documents remove sha256:5d4c...",
    )
    remove.add_argument("id", metavar="ID")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.db import trusted_documents

    # Checked before any database is reached (or the embedded one started): nothing to undo.
    documents = _checked(settings, args.files) if args.action == "add" else []
    configured = settings.database_url
    settings, _ = embedded_settings(settings)
    owner_url = settings.database_url
    assert owner_url is not None
    if args.action == "add":
        with connecting("DATABASE_URL" if configured else "embedded", configured):
            try:
                added, present = asyncio.run(
                    trusted_documents.add(owner_url, documents, args.roles)
                )
            except trusted_documents.Conflict as conflict:
                raise arguments.CommandFailed(str(conflict)) from None
        print(f"{added} trusted documents added, {present} already stored")
        return 0
    with connecting("DATABASE_URL" if configured else "embedded", configured):
        if args.action == "list":
            for stored in asyncio.run(trusted_documents.listed(owner_url)):
                roles = ",".join(stored.roles) if stored.roles else "any role"
                print(f"{stored.id}\t{stored.operation_name or '-'}\t{roles}")
            return 0
        if not asyncio.run(trusted_documents.remove(owner_url, args.id)):
            raise arguments.CommandFailed(f"no trusted document has the id {args.id!r}")
    print(f"removed {args.id}")
    return 0


def _checked(settings: Settings, files: list[Path]) -> list[Any]:
    from app.graphql import manifests
    from app.graphql.schema import build_schema
    from app.graphql.subscriptions import Subscription

    schema = build_schema(settings, subscription=Subscription)._schema
    try:
        return manifests.checked(files, schema, settings)
    except manifests.ManifestError as error:
        raise arguments.CommandFailed(f"nothing stored: {error}") from None
