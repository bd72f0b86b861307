"""The /graphql endpoint: token -> claims -> one transaction -> execute -> commit or roll back.

A present but invalid token is answered 401 before anything executes. No
token means role anon. The whole operation runs in one transaction opened by
db/session.py; any error rolls all of it back, so a request with errors has
written nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult

from app.auth.claims import Claims
from app.auth.jwt import InvalidToken, TokenVerifier, bearer_token
from app.db.session import Database, DatabaseUnavailable
from app.graphql.context import Context
from app.graphql.errors import UNAVAILABLE, code_of, format_error, log_unexpected
from app.settings import Settings

log = logging.getLogger(__name__)


class _RollBack(Exception):
    """Leaves the transaction block so that it rolls back, carrying the result out."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result


class GraphQLEndpoint(GraphQL[Context, None]):
    def __init__(
        self,
        schema: BaseSchema,
        *,
        settings: Settings,
        database: Database,
        verifier: TokenVerifier,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
        )
        self.settings = settings
        self.database = database
        self.verifier = verifier

    async def claims_for(self, authorization: str | None) -> Claims:
        try:
            raw = bearer_token(authorization)
            if raw is None:
                return Claims.anonymous()
            return await self.verifier.verify(raw)
        except InvalidToken as error:
            raise HTTPException(401, f"invalid token: {error.reason}") from None

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None = None
    ) -> Context:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if isinstance(request, Request):
            length = request.headers.get("content-length")
            if (
                length is not None
                and length.isdigit()
                and int(length) > self.settings.max_document_bytes * 2
            ):
                raise HTTPException(413, "request body too large")
            claims = await self.claims_for(request.headers.get("authorization"))
        else:
            # WebSocket callers authenticate in connection_init (subscriptions).
            claims = Claims.anonymous()
        request.state.request_id = request_id
        context = Context(claims=claims, settings=self.settings, request_id=request_id)
        if isinstance(response, Response):
            response.headers["x-request-id"] = request_id
        return context

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: Any,
    ) -> ExecutionResult:
        query = request_data.query
        if isinstance(query, str) and len(query.encode()) > self.settings.max_document_bytes:
            raise HTTPException(
                413, f"GraphQL document larger than {self.settings.max_document_bytes} bytes"
            )
        try:
            async with self.database.transaction(context.claims) as tx:
                context.tx = tx
                result = await super().execute_single(
                    request, request_adapter, sub_response, context, root_value, request_data
                )
                if result.errors:
                    raise _RollBack(result)
        except _RollBack as rollback:
            result = rollback.result
        except DatabaseUnavailable:
            log.warning("request %s: database unavailable", context.request_id, exc_info=True)
            sub_response.status_code = 503
            return ExecutionResult(
                data=None,
                errors=[GraphQLError("database unavailable", original_error=DatabaseUnavailable())],
            )
        finally:
            context.tx = None
        if result.errors:
            if any(code_of(error) == UNAVAILABLE for error in result.errors):
                sub_response.status_code = 503
            if result.data is not None and _is_mutation(request_data):
                # Rolled back: report no data rather than results that were never committed.
                result = ExecutionResult(
                    data=None, errors=result.errors, extensions=result.extensions
                )
        return result

    async def process_result(
        self, request: Request | WebSocket, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        request_id = getattr(request.state, "request_id", "")
        response: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            log_unexpected(result.errors, request_id)
            response["errors"] = [format_error(error, request_id) for error in result.errors]
        if result.extensions:
            response["extensions"] = result.extensions
        return response


def _is_mutation(request_data: Any) -> bool:
    try:
        operation = get_operation_ast(parse(request_data.query), request_data.operation_name)
    except GraphQLError:
        return False
    return operation is not None and operation.operation == OperationType.MUTATION
