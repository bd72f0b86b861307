"""One GraphQL operation over HTTP, in one transaction: commit without errors, roll back with any.

The transaction is opened by db/session.py as the caller's role with the caller's claims; the
operation's resolvers share it through the Context. Any error rolls all of it back, so a request
with errors has written nothing, and a mutation that rolled back reports no data rather than
results that were never committed. Errors, and the HTTP status they call for, are shaped by
graphql/errors.py.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cross_web import HTTPException
from graphql import GraphQLError, OperationDefinitionNode, OperationType, get_operation_ast, parse
from strawberry.types import ExecutionResult

from app.db.failures import DatabaseUnavailable
from app.db.replicas import Reader
from app.db.session import Database
from app.graphql import errors
from app.graphql.context import Context


@dataclass(frozen=True, slots=True)
class Outcome:
    result: ExecutionResult
    status_code: int = 200
    """The HTTP status the result calls for (errors.http_status)."""
    headers: dict[str, str] = field(default_factory=dict)
    """The headers it calls for (errors.http_headers)."""


class _RollBack(Exception):
    """Leaves the transaction block so that it rolls back, carrying the result out."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result


async def run(
    database: Database | Reader,
    context: Context,
    execute: Callable[[], Awaitable[ExecutionResult]],
    *,
    query: object,
    operation_name: object,
) -> Outcome:
    """``execute()`` in a transaction of its own as the context's caller: committed when its
    result has no errors, rolled back otherwise. ``query`` and ``operation_name`` name the
    operation, so that a rolled back mutation can be told apart."""
    try:
        async with database.transaction(
            context.claims, isolation=_isolation(query, operation_name)
        ) as tx:
            context.tx = tx
            result = await execute()
            if result.errors:
                raise _RollBack(result)
    except _RollBack as rollback:
        result = rollback.result
    except DatabaseUnavailable as unavailable:
        result = _failed(errors.database_unavailable(unavailable, context.request_id))
    except HTTPException:
        raise
    except Exception as fault:
        # Ours, outside any resolver (opening or committing the transaction, e.g. a
        # transaction pooler without DB_POOLER=transaction): still a GraphQL-shaped body
        # rather than plain text.
        result = _failed(errors.internal_fault(fault))
    finally:
        context.tx = None
    if not result.errors:
        return Outcome(result)
    status, headers = errors.http_status(result.errors), errors.http_headers(result.errors)
    if result.data is not None and operation_type(query, operation_name) == OperationType.MUTATION:
        # Rolled back: report no data rather than results that were never committed.
        result = ExecutionResult(data=None, errors=result.errors, extensions=result.extensions)
    return Outcome(result, status, headers)


def _isolation(query: object, operation_name: object) -> str | None:
    """REPEATABLE READ for a query that asks for eventsCursor: the cursor must be read in the
    snapshot of everything else the document reads (one snapshot per transaction), so that
    orderEvents(after:) neither misses nor repeats what the document showed. Read-only, so
    it never fails to serialize. Any other operation: READ COMMITTED."""
    if (
        isinstance(query, str)
        and "eventsCursor" in query  # spares the parse for every other request
        and operation_type(query, operation_name) == OperationType.QUERY
    ):
        return "REPEATABLE READ"
    return None


def _failed(error: GraphQLError) -> ExecutionResult:
    return ExecutionResult(data=None, errors=[error])


def operation_type(query: object, operation_name: object) -> OperationType | None:
    """The type of the operation to run; None when the document does not parse (Strawberry
    then reports why) or names no operation it holds."""
    if not isinstance(query, str):
        return None
    try:
        operation = get_operation_ast(
            parse(query), operation_name if isinstance(operation_name, str) else None
        )
    except GraphQLError:
        return None
    return operation.operation if operation is not None else None


def reads_only(query: object) -> bool:
    """Whether every operation of the document is a query, so that a replica may answer it,
    whichever operation is chosen; a document holding a mutation, or that does not parse
    (Strawberry then says why), goes to the primary whole."""
    return isinstance(query, str) and _reads_only(query)


@functools.lru_cache(maxsize=1024)  # a frontend sends the same few documents again and again
def _reads_only(query: str) -> bool:
    try:
        document = parse(query)
    except GraphQLError:
        return False
    kinds = {d.operation for d in document.definitions if isinstance(d, OperationDefinitionNode)}
    return kinds == {OperationType.QUERY}
