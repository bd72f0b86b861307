"""The /graphql endpoint: token -> claims -> one transaction -> execute -> commit or roll back.

A present but invalid token is answered 401 before anything executes. No
token means role anon. The whole operation runs in one transaction opened by
db/session.py; any error rolls all of it back, so a request with errors has
written nothing. A document that once passed every check may be answered by
its compiled plan (graphql/compiled.py) rather than the resolvers, in the same
transaction.

Subscriptions over WebSocket are served by graphql/websocket.py; this view only
names its handlers and authenticates their connection_init through it.
"""

from __future__ import annotations

import functools
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
from strawberry.http.ides import get_graphql_ide_html
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from app.auth.claims import Claims
from app.auth.jwt import InvalidToken, TokenVerifier, bearer_token
from app.db.listener import OrderChangeListener
from app.db.session import Database, DatabaseUnavailable
from app.graphql import body, compiled, inputs
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


# GraphiQL sends the Headers tab with HTTP requests only. Browsers cannot set headers on a
# WebSocket, so subscriptions would run anonymous: hand the same headers (which GraphiQL
# keeps in localStorage) to the socket's connection_init payload instead.
_WS_CONNECTION_PARAMS = """
        wsConnectionParams: () => {
          const parse = (text) => {
            try { return JSON.parse(text || "{}") || {}; } catch (error) { return {}; }
          };
          const state = parse(localStorage.getItem("graphiql:tabState"));
          const tab = state.tabs && state.tabs[state.activeTabIndex];
          return parse((tab && tab.headers) || localStorage.getItem("graphiql:headers"));
        },
        subscriptionUrl,"""


@functools.cache
def graphiql_html() -> str:
    html = get_graphql_ide_html(graphql_ide="graphiql")
    patched = html.replace("\n        subscriptionUrl,", _WS_CONNECTION_PARAMS, 1)
    if patched == html:  # a Strawberry upgrade moved the line: subscriptions stay anonymous
        log.warning("GraphiQL page not patched: subscriptions in GraphiQL will be anonymous")
    return patched


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
        listener: OrderChangeListener | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            # A socket that never sends connection_init is as slow a client as slow headers.
            connection_init_wait_timeout=timedelta(seconds=settings.request_read_timeout_seconds),
        )
        self.settings = settings
        self.database = database
        self.verifier = verifier
        # Each subscription's source of order changes, handed to it by graphql/websocket.py.
        self.feed = OrderFeed(database, listener) if listener is not None else None
        self._plans: dict[tuple[str, str | None], compiled.CompiledQuery] = {}
        assert isinstance(schema, strawberry.Schema)
        self.graphql_schema = schema._schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=body.bounded(receive, self.settings))
        try:
            response = await self._compiled_response(request) or await self.run(request)
        except HTTPException as refusal:
            # Refused before execution (bad token, oversized or malformed request): still a
            # GraphQL-shaped body with the contract's code, so clients need one error path.
            response = _refusal_response(refusal)
        await response(scope, receive, send)

    async def _compiled_response(self, request: Request) -> Response | None:
        """A hot read query answered by its compiled statement (graphql/compiled.py), with
        PostgreSQL's JSON passed through as it is; None leaves the request to Strawberry."""
        if not self._plans or request.method != "POST":
            return None
        if not request.headers.get("content-type", "").startswith("application/json"):
            return None
        self._check_length(request)
        try:
            data = body.decode_json(await request.body())  # Starlette keeps it for Strawberry
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        query, name, variables = data.get("query"), data.get("operationName"), data.get("variables")
        if not (isinstance(query, str) and isinstance(name, str | None)):
            return None
        plan = self._plans.get((query, name))
        if plan is None or not isinstance(variables, dict | None):
            return None
        claims = await self.claims_for(request.headers.get("authorization"))
        bound = plan.bind(self.graphql_schema, variables, claims)
        if bound is None:
            return None  # unusual arguments: the resolvers give the precise error
        request_id = inputs.request_id(request.headers.get("x-request-id"))
        headers = {"x-request-id": request_id}
        try:
            raw = await self.database.read_json(claims, *bound)
        except DatabaseUnavailable:
            log.warning("request %s: database unavailable", request_id, exc_info=True)
            error = format_error(GraphQLError("", original_error=DatabaseUnavailable()), request_id)
            return JSONResponse({"data": None, "errors": [error]}, 503, headers=headers)
        except Exception:
            # Logged whole; the resolvers then answer (and mask) whatever it is.
            log.exception("request %s: compiled query failed; using the resolvers", request_id)
            return None
        return Response(
            b'{"data":' + raw.encode() + b"}", media_type="application/json", headers=headers
        )

    def _check_length(self, request: Request) -> None:
        body.check_length_header(request.headers.get("content-length"), self.settings)

    def decode_json(self, data: str | bytes) -> object:
        return body.decode_json(data)  # HTTP bodies and WebSocket messages

    def parse_json(self, data: str | bytes) -> Any:
        return body.parse_json(data)  # HTTP bodies

    @property
    def graphql_ide_html(self) -> str:
        return graphiql_html()

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
        body.check_document(request_data.query, self.settings)
        try:
            async with self.database.transaction(context.claims) as tx:
                context.tx = tx
                result = await super().execute_single(
                    request, request_adapter, sub_response, context, root_value, request_data
                )
                self._learn(request_data, result)
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

    def _plan_key(self, request_data: Any) -> tuple[str, str | None] | None:
        query, name = request_data.query, request_data.operation_name
        if not self.settings.compiled_queries or not isinstance(query, str):
            return None
        return (query, name if isinstance(name, str) else None)

    def _learn(self, request_data: Any, result: ExecutionResult) -> None:
        # Only a document that passed every limit and validation rule once gets compiled:
        # those checks depend on its text alone, so their verdict holds for its reuse.
        key = self._plan_key(request_data)
        if key is None or result.errors or key in self._plans:
            return
        plan = compiled.compile_query(*key)
        if plan is None:
            return
        if len(self._plans) >= compiled.PLAN_CACHE_SIZE:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan

    async def process_result(
        self, request: Request | WebSocket, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        request_id = getattr(request.state, "request_id", "")
        response: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:  # logged by the schema (graphql/schema.py)
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


def _is_mutation(request_data: Any) -> bool:
    try:
        operation = get_operation_ast(parse(request_data.query), request_data.operation_name)
    except GraphQLError:
        return False
    return operation is not None and operation.operation == OperationType.MUTATION
