"""Trusted document manifests: a frontend build's documents, read and checked before any is stored.

Two formats, told apart by their shape:

- Apollo's persisted query manifest, ``{"format": "apollo-persisted-query-manifest",
  "version": 1, "operations": [{"id", "body", "name", "type"}]}``;
- a JSON object ``{id: documentText}``, as Relay's persist output and graphql-codegen's
  client preset (``persisted-documents.json``) write it.

An id ``sha256:<hex>``, or a 64-hex id in an Apollo manifest, must be the SHA-256 of its
text (lowercase hex): a mismatch refuses the file. Any other id (Relay's MD5, codegen's
sha1, a custom one) is kept as the manifest gives it. Migration 014 checks the first rule
again for every writer.

Every document is checked as a request's would be, with the served schema and the limits
(``MAX_TOKENS``, ``MAX_DOCUMENT_BYTES``, the validation rules of graphql/extensions.py,
depth and aliases among them): ``problem`` says why one is refused, in one line. The
servers check again when they pick a document up (graphql/trusted.py), against the schema
they serve.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from graphql import GraphQLError, GraphQLSchema, OperationDefinitionNode, parse, validate

from app.graphql.extensions import validation_rules
from app.graphql.inputs import text_problem
from app.settings import Settings

APOLLO_FORMAT = "apollo-persisted-query-manifest"
HASH_PREFIX = "sha256:"
MAX_ID_CHARS = 200
"""Migration 014's bound (ck_trusted_documents_id)."""

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class ManifestError(Exception):
    """A manifest that cannot be stored, or a document in it refused; the message is one line
    naming the file, and the operation and the reason where it is a document's fault."""


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    operation_name: str | None
    """The name of its operation (of the manifest's ``name`` when the text has several)."""

    @property
    def sha256(self) -> str:
        return sha256_of(self.text)


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Checked:
    """A document as the checks found it: its operations by name (None: anonymous)."""

    operations: tuple[str | None, ...]


def problem(text: str, schema: GraphQLSchema, settings: Settings) -> str | Checked:
    """Why ``text`` would be refused as a request's document, or what it holds."""
    unusable = text_problem(text)
    if unusable is not None:
        return f"the document {unusable}"
    if len(text.encode()) > settings.max_document_bytes:
        return f"larger than {settings.max_document_bytes} bytes (MAX_DOCUMENT_BYTES)"
    try:
        document = parse(text, max_tokens=settings.max_tokens)
    except GraphQLError as error:
        return error.message
    errors = validate(schema, document, rules=validation_rules(settings))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return errors[0].message + more
    operations = tuple(
        definition.name.value if definition.name else None
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    )
    return Checked(operations)


def read(path: Path) -> list[Document]:
    """The documents of one manifest file, their ids checked against their texts."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ManifestError(f"{path}: cannot read it: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not a JSON manifest: {error}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a manifest: expected a JSON object")
    if manifest.get("format") == APOLLO_FORMAT:
        return _apollo(path, manifest)
    return _plain(path, manifest)


def _apollo(path: Path, manifest: dict[str, object]) -> list[Document]:
    if manifest.get("version") != 1:
        raise ManifestError(f"{path}: only version 1 of {APOLLO_FORMAT} is known")
    operations = manifest.get("operations")
    if not isinstance(operations, list):
        raise ManifestError(f"{path}: {APOLLO_FORMAT} without an operations list")
    documents = []
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise ManifestError(f"{path}: operations[{index}] is not an object")
        id_, body, name = operation.get("id"), operation.get("body"), operation.get("name")
        if not (isinstance(id_, str) and isinstance(body, str)):
            raise ManifestError(f"{path}: operations[{index}] needs a string id and body")
        document = _document(path, id_, body, name if isinstance(name, str) else None)
        if _HEX64.fullmatch(id_) and id_ != document.sha256:
            raise ManifestError(_mismatch(path, document))
        documents.append(document)
    return documents


def _plain(path: Path, manifest: dict[str, object]) -> list[Document]:
    documents = []
    for id_, text in manifest.items():
        if not isinstance(text, str):
            raise ManifestError(
                f"{path}: not a manifest: {id_!r} maps to a {type(text).__name__}, not a"
                f" document's text (nor is it an {APOLLO_FORMAT})"
            )
        documents.append(_document(path, id_, text, None))
    return documents


def _document(path: Path, id_: str, text: str, name: str | None) -> Document:
    if not 1 <= len(id_) <= MAX_ID_CHARS:
        raise ManifestError(f"{path}: an id must be 1 to {MAX_ID_CHARS} characters: {id_!r:.80}")
    document = Document(id_, text, name)
    if id_.startswith(HASH_PREFIX) and id_ != HASH_PREFIX + document.sha256:
        raise ManifestError(_mismatch(path, document))
    return document


def _mismatch(path: Path, document: Document) -> str:
    return (
        f"{path}: id {document.id} is not the SHA-256 of its document (that is"
        f" {document.sha256}): the manifest and the documents it was built from differ"
    )


def checked(paths: Iterable[Path], schema: GraphQLSchema, settings: Settings) -> list[Document]:
    """Every document of ``paths``, each checked as a request's would be; the first refusal
    raises ManifestError, so that a command stores all of them or none."""
    documents: dict[str, tuple[Path, Document]] = {}
    for path in paths:
        for document in read(path):
            verdict = problem(document.text, schema, settings)
            if not isinstance(verdict, Checked):
                raise ManifestError(f"{path}: {describe(document)}: {verdict}")
            named = [name for name in verdict.operations if name is not None]
            if len(verdict.operations) == 1 and named:
                document = Document(document.id, document.text, named[0])
            seen = documents.get(document.id)
            if seen is not None and seen[1].text != document.text:
                raise ManifestError(f"{path}: id {document.id} names another document in {seen[0]}")
            documents[document.id] = (path, document)
    return [document for _, document in documents.values()]


def describe(document: Document) -> str:
    """How an error names a document: its operation and its id."""
    name = document.operation_name or _first_name(document.text) or "anonymous"
    return f"operation {name} (id {document.id:.80})"


_OPERATION_NAME = re.compile(r"\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)")


def _first_name(text: str) -> str | None:
    # For naming a document that may not even parse.
    match = _OPERATION_NAME.search(text)
    return match.group(1) if match else None
