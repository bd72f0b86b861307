"""The /graphql endpoint: token -> claims -> one transaction -> execute -> commit or roll back.

A present but invalid token is answered 401 before anything executes. No
token means role anon. The whole operation runs in one transaction opened by
db/session.py; any error rolls all of it back, so a request with errors has
written nothing. A document that once passed every check may be answered by
its compiled plan (graphql/compiled/) rather than the resolvers, in the same
transaction.

Subscriptions over WebSocket are served by graphql/websocket.py; this view only
names its handlers and authenticates their connection_init through it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import strawberry
from cross_web import HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from app import telemetry
from app.auth.claims import Claims
from app.auth.jwt import InvalidToken, TokenVerifier, bearer_token
from app.db.change_feed import ChangeFeed
from app.db.session import Database, DatabaseUnavailable
from app.graphql import body, graphiql, inputs
from app.graphql.compiled import CompiledPath
from app.graphql.context import Context
from app.graphql.errors import UNAVAILABLE, code_of, format_error
from app.graphql.subscriptions import OrderFeed
from app.graphql.websocket import LegacyWSHandler, TransportWSHandler, connection_claims
from app.settings import Settings

log = logging.getLogger(__name__)


class _RollBack(Exception):
    """Leaves the transaction block so that it rolls back, carrying the result out."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: BaseSchema,
        *,
        settings: Settings,
        database: Database,
        verifier: TokenVerifier,
        changes: ChangeFeed | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            # The WebSocket upgrade's Origin check (Strawberry's): no Origin (not a browser)
            # and same-origin pass; another origin only if CORS_ORIGINS lists it.
            allowed_origins=settings.cors_origins,
            # A socket that never sends connection_init is as slow a client as slow headers.
            connection_init_wait_timeout=timedelta(seconds=settings.request_read_timeout_seconds),
        )
        self.settings = settings
        self.database = database
        self.verifier = verifier
        # Each subscription's source of order changes, handed to it by graphql/websocket.py.
        self.feed = OrderFeed(database, changes) if changes is not None else None
        assert isinstance(schema, strawberry.Schema)
        self.graphql_schema = schema._schema
        self.compiled = CompiledPath(settings, database, self.graphql_schema, self.claims_for)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=body.bounded(receive, self.settings))
        try:
            response = await self.compiled.answer(request) or await self.run(request)
        except HTTPException as refusal:
            # Refused before execution (bad token, oversized or malformed request): still a
            # GraphQL-shaped body with the contract's code, so clients need one error path.
            response = _refusal_response(refusal)
            telemetry.note(codes=[_REFUSAL_CODES.get(refusal.status_code, "BAD_USER_INPUT")])
        await response(scope, receive, send)

    def _check_length(self, request: Request) -> None:
        body.check_length_header(request.headers.get("content-length"), self.settings)

    def decode_json(self, data: str | bytes) -> object:
        return body.decode_json(data)  # HTTP bodies and WebSocket messages

    def parse_json(self, data: str | bytes) -> Any:
        return body.parse_json(data)  # HTTP bodies

    @property
    def graphql_ide_html(self) -> str:
        return graphiql.page_html()

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.page_response()

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
        request_id = inputs.request_id(request.headers.get("x-request-id"))
        if isinstance(request, Request):
            self._check_length(request)
            claims = await self.claims_for(request.headers.get("authorization"))
        else:
            # WebSocket callers authenticate in connection_init (subscriptions).
            claims = Claims.anonymous()
        request.state.request_id = request_id
        telemetry.note(request_id=request_id, role=claims.role)
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
        body.check_document(query, self.settings)
        if (
            isinstance(query, str)
            and "subscription" in query  # spares the parse for every other request
            and _operation_type(request_data) == OperationType.SUBSCRIPTION
        ):
            # Over HTTP the stream would have nowhere to go (it was an INTERNAL_SERVER_ERROR).
            raise HTTPException(400, SUBSCRIPTIONS_OVER_HTTP)
        try:
            async with self.database.transaction(context.claims) as tx:
                context.tx = tx
                result = await super().execute_single(
                    request, request_adapter, sub_response, context, root_value, request_data
                )
                self.compiled.plans.learn(
                    request_data.query, request_data.operation_name, succeeded=not result.errors
                )
                if result.errors:
                    raise _RollBack(result)
        except _RollBack as rollback:
            result = rollback.result
        except DatabaseUnavailable as unavailable:
            log.warning("request %s: database unavailable: %s", context.request_id, unavailable)
            sub_response.status_code = 503
            return ExecutionResult(
                data=None,
                errors=[GraphQLError("database unavailable", original_error=unavailable)],
            )
        except HTTPException:
            raise
        except Exception as fault:
            # Ours, outside any resolver (opening or committing the transaction, e.g. a
            # transaction pooler without DB_POOLER=transaction): masked and logged whole
            # (process_result), but still a GraphQL-shaped body rather than plain text.
            sub_response.status_code = 500
            return ExecutionResult(
                data=None, errors=[GraphQLError("internal error", original_error=fault)]
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
        if result.errors:  # logged by the schema (graphql/schema.py)
            telemetry.note(codes=[code_of(error) for error in result.errors])
            response["errors"] = [format_error(error, request_id) for error in result.errors]
        if result.extensions:
            response["extensions"] = result.extensions
        return response

    # --- WebSocket (graphql/websocket.py) -------------------------------------------------

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate at connection_init, exactly as an HTTP request."""
        context.claims = await connection_claims(context, self.verifier)
        return await super().on_ws_connect(context)


_REFUSAL_CODES = {401: "UNAUTHENTICATED", 404: "NOT_FOUND", 503: "SERVICE_UNAVAILABLE"}


def _refusal_response(refusal: HTTPException) -> Response:
    code = _REFUSAL_CODES.get(refusal.status_code, "BAD_USER_INPUT")
    headers = {}
    if refusal.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return JSONResponse(
        {"data": None, "errors": [{"message": refusal.reason, "extensions": {"code": code}}]},
        status_code=refusal.status_code,
        headers=headers,
    )


SUBSCRIPTIONS_OVER_HTTP = (
    "subscriptions are served over WebSocket at this URL (graphql-transport-ws or graphql-ws)"
)


def _operation_type(request_data: Any) -> OperationType | None:
    """The type of the operation to run; None when the document does not parse (Strawberry
    then reports why) or names no operation it holds."""
    query = request_data.query
    if not isinstance(query, str):
        return None
    try:
        operation = get_operation_ast(parse(query), request_data.operation_name)
    except GraphQLError:
        return None
    return operation.operation if operation is not None else None


def _is_mutation(request_data: Any) -> bool:
    return _operation_type(request_data) == OperationType.MUTATION
