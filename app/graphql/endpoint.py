"""The /graphql endpoint: token -> claims -> one transaction -> execute -> commit or roll back.

The dispatcher only; each arrow is another module's. A present but invalid
token is answered 401 before anything executes (auth/jwt.py verifies it); no
token means role anon. The operation runs in one transaction under the policy
of graphql/operation.py; errors are shaped by graphql/errors.py, the GraphiQL
page is graphql/graphiql.py's. A document that once passed every check may be
answered by its compiled plan (graphql/compiled.py) rather than the resolvers,
in the same transaction.

Subscriptions over WebSocket are served by graphql/websocket.py; this view only
names its handlers and authenticates their connection_init through it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import strawberry
from cross_web import HTTPException
from graphql import GraphQLError, OperationType
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
from app.db.session import Database
from app.graphql import body, compiled, errors, graphiql, inputs, operation
from app.graphql.context import Context
from app.graphql.errors import UNAVAILABLE, code_of, format_error, log_errors
from app.graphql.subscriptions import OrderFeed
from app.graphql.websocket import LegacyWSHandler, TransportWSHandler, connection_claims
from app.settings import Settings

log = logging.getLogger(__name__)


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
            # Refused before execution (bad token, oversized or malformed request).
            response = errors.refusal_response(refusal)
            telemetry.note(codes=[errors.refusal_code(refusal.status_code)])
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
        request_id = inputs.request_id(request.headers.get("x-request-id"))
        try:
            bound = plan.bind(self.graphql_schema, variables, claims)
        except Exception:
            # A bug of the compiler, found before anything ran: the resolvers can answer.
            if self.settings.compiled_queries_strict:
                raise
            log.exception(
                "request %s: compiled plan failed to bind; using the resolvers", request_id
            )
            return None
        if bound is None:
            return None  # unusual arguments: the resolvers give the precise error
        telemetry.note(
            request_id=request_id, role=claims.role, operation=plan.operation, operation_name=name
        )
        headers = {"x-request-id": request_id}
        try:
            raw = await self.database.read_json(claims, *bound)
        except Exception as failure:
            # Answered as the resolvers answer the same failure, and never run again through
            # them: the statement was sent (a timeout would only cost the caller twice).
            error = GraphQLError(str(failure), original_error=failure)
            status = 503 if code_of(error) == UNAVAILABLE else 200
            if status == 503:
                log.warning("request %s: database unavailable: %s", request_id, failure)
            else:
                log_errors([error], request_id)
            answer = {"data": None, "errors": [format_error(error, request_id)]}
            return JSONResponse(answer, status, headers=headers)
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
            raise HTTPException(401, errors.invalid_token_message(error.reason)) from None

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
        if isinstance(request, WebSocket):
            # Browsers cannot set headers on a WebSocket; other clients may, on the upgrade.
            context.upgrade_authorization = request.headers.get("authorization")
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
            and operation.operation_type(query, request_data.operation_name)
            == OperationType.SUBSCRIPTION
        ):
            # Over HTTP the stream would have nowhere to go (it was an INTERNAL_SERVER_ERROR).
            raise HTTPException(400, SUBSCRIPTIONS_OVER_HTTP)
        execute = super().execute_single

        async def execute_and_learn() -> ExecutionResult:
            result = await execute(
                request, request_adapter, sub_response, context, root_value, request_data
            )
            self._learn(request_data, result)
            return result

        outcome = await operation.run(
            self.database,
            context,
            execute_and_learn,
            query=query,
            operation_name=request_data.operation_name,
        )
        if outcome.status_code is not None:
            sub_response.status_code = outcome.status_code
        return outcome.result

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
        try:
            plan = compiled.compile_query(*key)
        except Exception:
            # A bug of the compiler: this document keeps taking the resolvers.
            if self.settings.compiled_queries_strict:
                raise
            log.exception("compiling a query failed; it will take the resolvers")
            return
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


SUBSCRIPTIONS_OVER_HTTP = (
    "subscriptions are served over WebSocket at this URL (graphql-transport-ws or graphql-ws)"
)
