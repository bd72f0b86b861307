"""Trusted documents: a request names a stored document instead of sending its text.

The documents are loaded by ``python -m app documents add`` (graphql/manifests.py checks
them, db/trusted_documents.py stores them, migration 014). Each server process holds them
all, by id and by SHA-256, and picks up additions and removals by polling the stored
version every POLL_SECONDS (a one-row read; LISTEN would not pass a transaction-mode
pooler). On pickup each document is checked again against the schema this process serves
and compiled (graphql/compiled/plans.py ``trust``), so a trusted document's first call is
already answered by its compiled plan.

A request names a document, on every transport, with:

- ``documentId`` (GraphQL over HTTP, Appendix A: ``sha256:<hex>`` or the manifest's id) in
  a POST body, a GET's query string, or a WebSocket ``subscribe``/``start`` payload;
- ``extensions.persistedQuery.sha256Hash`` (Apollo's shape). This is not APQ: a request
  never registers a document, it is only answered from the stored list.

Every stored document answers to its id, to ``sha256:<hex of its text>`` and to that hex as
the APQ hash. ``resolve`` turns such a request into the request with the document's text,
once, in the front stage (graphql/endpoint.py, graphql/websocket.py), so the compiled path
and the resolvers both see an ordinary document. ``TRUSTED_DOCUMENTS``:

- ``allow``: ids and text both work;
- ``require``: text is refused, PERSISTED_DOCUMENT_REQUIRED (HTTP 400; over WebSocket the
  operation's error message);
- ``off``: ids are not read (nothing is polled).

An id no stored document answers to, or one whose roles exclude the caller's (a
role-scoped list, ``documents add --role``), is PERSISTED_DOCUMENT_NOT_FOUND (HTTP 400): not
allowed and missing look the same. The request's log line and ``/metrics`` name the
document's stored id and operation name (app/telemetry.py), bounded by the stored list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLSchema

from app import metrics, telemetry
from app.auth.claims import Claims
from app.db import trusted_documents
from app.db.session import Database
from app.db.trusted_documents import Stored
from app.graphql import body, errors
from app.graphql.compiled.plans import Key, Plans
from app.graphql.manifests import HASH_PREFIX, Checked, problem
from app.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often each process reads the stored version: additions and removals reach every
process within this (plus one load), well inside the 5 s the issue asks."""

NOT_FOUND_MESSAGE = "no trusted document has this id"
REQUIRED_MESSAGE = (
    "this server answers trusted documents only (TRUSTED_DOCUMENTS=require): send a"
    " documentId instead of the document's text"
)


@dataclass(frozen=True, slots=True)
class Trusted:
    id: str
    text: str
    label: tuple[str, str]
    """Its stored id and operation name, as logs and metrics name it."""
    roles: frozenset[str] | None


class TrustedDocuments:
    """This process's copy of the stored documents, and the front stage's resolution."""

    def __init__(
        self, settings: Settings, database: Database, schema: GraphQLSchema, plans: Plans
    ) -> None:
        self.mode = settings.trusted_documents
        self.settings = settings
        self.database = database
        self.schema = schema
        self.plans = plans
        self.version: int | None = None
        self._by_id: dict[str, Trusted] = {}
        self._by_hash: dict[str, Trusted] = {}
        self._poller: asyncio.Task[None] | None = None
        self._verdicts: dict[str, str | Checked] = {}
        """Each held text's check, by its SHA-256: a pickup checks only the new texts."""
        self._failing = False

    def __len__(self) -> int:
        return len(self._by_id)

    # --- pickup ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored documents (compiled before the first request), then keep polling."""
        if self.mode == "off":
            return
        await self._refresh_logged()
        self._poller = asyncio.create_task(self._poll(), name="trusted-documents")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            await self._refresh_logged()

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception:
            # Loud once, and once again when it recovers: the documents held stay served.
            if not self._failing:
                log.warning(
                    "cannot read the trusted documents (migration 014 applied?); serving the"
                    " %d held, retrying every %g s",
                    len(self),
                    POLL_SECONDS,
                    exc_info=True,
                )
            self._failing = True
            return
        if self._failing:
            log.info("trusted documents readable again")
        self._failing = False

    async def refresh(self) -> None:
        """Reload when the stored version moved (one-row read otherwise)."""
        engine = self.database.engine
        if self.version is not None and await trusted_documents.version(engine) == self.version:
            return
        version, stored = await trusted_documents.load(engine)
        self._replace(version, stored)

    def _replace(self, version: int, stored: list[Stored]) -> None:
        by_id: dict[str, Trusted] = {}
        by_hash: dict[str, Trusted] = {}
        keys: list[Key] = []
        verdicts: dict[str, str | Checked] = {}
        for row in stored:
            verdict = self._verdicts.get(row.sha256) or problem(
                row.text, self.schema, self.settings
            )
            verdicts[row.sha256] = verdict
            if not isinstance(verdict, Checked):
                # Loaded against another schema or other limits than this process serves.
                log.warning(
                    "trusted document %s is not served: %s", row.id, errors.shorten(verdict, 200)
                )
                continue
            document = Trusted(
                row.id,
                row.text,
                (row.id, row.operation_name or "-"),
                frozenset(row.roles) if row.roles else None,
            )
            by_id[row.id] = document
            by_hash.setdefault(row.sha256, document)
            keys.extend((row.text, name) for name in verdict.operations)
            if len(verdict.operations) == 1:
                keys.append((row.text, None))  # the request may leave operationName out
        self.plans.trust(keys)
        gone = {d.label for d in self._by_id.values()} - {d.label for d in by_id.values()}
        for label in gone:
            with contextlib.suppress(KeyError):  # never requested: no series
                metrics.TRUSTED_DOCUMENT_SECONDS.remove(*label)
        added = by_id.keys() - self._by_id.keys()
        removed = self._by_id.keys() - by_id.keys()
        self._by_id, self._by_hash, self.version = by_id, by_hash, version
        self._verdicts = verdicts
        metrics.TRUSTED_DOCUMENTS.set(len(by_id))
        log.info(
            "trusted documents at version %d: %d served (%d added, %d removed)",
            version,
            len(by_id),
            len(added),
            len(removed),
        )

    # --- resolution (the front stage) --------------------------------------------------------

    def find(self, document_id: str) -> Trusted | None:
        found = self._by_id.get(document_id)
        if found is None and document_id.startswith(HASH_PREFIX):
            found = self._by_hash.get(document_id[len(HASH_PREFIX) :])
        return found

    def resolve(self, data: object, claims: Claims) -> object:
        """A decoded POST body, or a WebSocket payload: the same request with the named
        document's text as its ``query``, or as it is when it names none. Raises
        errors.CodedRefusal (400) for an unknown id, or for text under ``require``."""
        if not isinstance(data, dict):
            return data  # a batch, or not an object: Strawberry refuses it as before
        named = self._named(data)
        if named is None:
            if self.mode == "require" and data.get("query") is not None:
                raise errors.CodedRefusal(400, REQUIRED_MESSAGE, errors.PERSISTED_DOCUMENT_REQUIRED)
            return data
        document = self.find(named)
        if document is None or (document.roles is not None and claims.role not in document.roles):
            raise errors.CodedRefusal(400, NOT_FOUND_MESSAGE, errors.PERSISTED_DOCUMENT_NOT_FOUND)
        sent = data.get("query")
        if sent is not None and sent != document.text:
            raise errors.CodedRefusal(
                400,
                "the query sent is not the trusted document its id names: send one of them",
                errors.BAD_USER_INPUT,
            )
        telemetry.note(document=document.label)
        resolved = {key: value for key, value in data.items() if key != "documentId"}
        resolved["query"] = document.text
        return resolved

    def resolve_query_params(self, params: Mapping[str, str], claims: Claims) -> Any:
        """A GET request's parameters decoded and resolved as ``resolve`` does a POST body's,
        or None when they name no document and may be left to Strawberry as they are."""
        data: dict[str, object] = dict(params)
        for key in ("variables", "extensions"):
            if data.get(key):
                data[key] = body.parse_json(params[key])
        if self.mode == "off" or self._named(data) is None:
            self.resolve(data, claims)  # only refuses text under require
            return None
        return self.resolve(data, claims)

    def _named(self, data: Mapping[str, object]) -> str | None:
        """The id a request names, or None."""
        if self.mode == "off":
            return None
        document_id = data.get("documentId")
        if document_id is not None:
            if not isinstance(document_id, str):
                raise errors.CodedRefusal(
                    400, "documentId must be a string", errors.PERSISTED_DOCUMENT_NOT_FOUND
                )
            return document_id
        extensions = data.get("extensions")
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if isinstance(persisted, dict) and "sha256Hash" in persisted:
            digest = persisted["sha256Hash"]
            if not isinstance(digest, str):
                raise errors.CodedRefusal(
                    400,
                    "extensions.persistedQuery.sha256Hash must be a string",
                    errors.PERSISTED_DOCUMENT_NOT_FOUND,
                )
            return HASH_PREFIX + digest.lower()
        return None
