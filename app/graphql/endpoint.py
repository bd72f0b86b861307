"""The /graphql endpoint: body -> auth -> operation -> errors, the same stages for every request.

The dispatcher only; each arrow is another module's. The front stage (``serve``)
runs once per HTTP request, whichever path answers it: the body's declared type
and size (graphql/body.py), the caller's claims (a present but invalid token is
answered 401 before anything executes; auth/jwt.py verifies it; no token means
role anon), the request id and its telemetry, then the JSON body of a POST,
decoded once, and a trusted document it names resolved into its text
(graphql/trusted.py). The operation stage is either a learned document's compiled plan
(graphql/compiled/), or Strawberry's resolvers in one transaction under the
policy of graphql/operation.py, which are handed what the front stage found and
do not look again. Errors, bodies and statuses are graphql/errors.py's, the
GraphiQL page is graphql/graphiql.py's.

Subscriptions over WebSocket are served by graphql/websocket.py; this view only
names its handlers and authenticates their connection_init through it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, cast

import strawberry
from cross_web import HTTPException
from graphql import OperationType
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from app import telemetry
from app.auth.claims import Claims
from app.auth.jwt import InvalidToken, TokenVerifier, bearer_token, sole_authorization
from app.db.change_feed import ChangeFeed
from app.db.consistency import TOKEN_EXTENSION, TOKEN_HEADER, MalformedToken
from app.db.consistency import requested_token as requested_position
from app.db.failures import DatabaseUnavailable
from app.db.replicas import Reader, Replicas
from app.db.session import Database
from app.graphql import body, errors, graphiql, inputs, operation
from app.graphql.compiled import CompiledPath
from app.graphql.compiled import events as compiled_events
from app.graphql.context import Context
from app.graphql.subscriptions import OrderFeed
from app.graphql.trusted import TrustedDocuments
from app.graphql.websocket import LegacyWSHandler, TransportWSHandler, connection_claims
from app.settings import Settings

log = logging.getLogger(__name__)

_DECODED: ContextVar[tuple[bytes | None, object] | None] = ContextVar("decoded_body", default=None)
"""The body the front stage read and what it decoded to, while Strawberry runs the request
(no body: a GET's parameters, resolved from a trusted document)."""


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def encode_json(self, data: object) -> str:
        # Strawberry's encoding, and orderEvents' built events spliced in as they are.
        return compiled_events.encode(data)

    def __init__(
        self,
        schema: BaseSchema,
        *,
        settings: Settings,
        database: Database,
        verifier: TokenVerifier,
        changes: ChangeFeed | None = None,
        replicas: Replicas | None = None,
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
        self.replicas = replicas
        # Each subscription's source of order changes, handed to it by graphql/websocket.py.
        self.feed = OrderFeed(database, changes, replicas) if changes is not None else None
        assert isinstance(schema, strawberry.Schema)
        self.graphql_schema = schema._schema
        self.compiled = CompiledPath(settings, database, self.graphql_schema, replicas)
        self.trusted = TrustedDocuments(
            settings, database, self.graphql_schema, self.compiled.plans
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=body.bounded(receive, self.settings))
        try:
            response = await self.serve(request)
        except HTTPException as refusal:
            # Refused before execution (bad token, oversized or malformed request).
            response = errors.refusal_response(refusal)
        await response(scope, receive, send)

    async def serve(self, request: Request) -> Response:
        """The front stage, once, then the compiled plan or Strawberry's resolvers."""
        headers = request.headers
        body.check_content_type(request.method, headers.get("content-type"))
        body.check_length_header(headers.get("content-length"), self.settings)
        claims = await self.claims_for(headers.getlist("authorization"))
        request_id = inputs.request_id(headers.get("x-request-id"))
        telemetry.note(request_id=request_id, role=claims.role)
        if request.method != "POST":
            params = self.trusted.resolve_query_params(request.query_params, claims)
            decoded = None if params is None else (None, params)
            position = self.read_position(request, None)
            return await self.resolve(request, claims, request_id, decoded, position)
        raw = await request.body()
        data = self.trusted.resolve(body.parse_json(raw), claims)
        position = self.read_position(request, data)
        answer = await self.compiled.answer(data, claims, request_id, position)
        if answer is not None:
            return answer
        return await self.resolve(request, claims, request_id, (raw, data), position)

    def read_position(self, request: Request, data: object) -> int | None:
        """The position a request's consistency token names (db/replicas.py), or None; read
        only with replicas configured (without, no token is issued either)."""
        if self.replicas is None:
            return None
        header = request.headers.get(TOKEN_HEADER)
        if isinstance(data, dict):
            extensions = data.get("extensions")
        else:  # GET: the extensions parameter, JSON as the body's would be
            given = request.query_params.get("extensions")
            extensions = body.parse_json(given) if given else None
        try:
            return requested_position(header, extensions)
        except MalformedToken as error:
            raise HTTPException(400, str(error)) from None

    async def resolve(
        self,
        request: Request,
        claims: Claims,
        request_id: str,
        decoded: tuple[bytes | None, object] | None,
        position: int | None = None,
    ) -> Response:
        """Strawberry's run, with the context and the decoded body of the front stage."""
        request.state.request_id = request_id  # process_result's and get_sub_response's
        context = Context(claims=claims, settings=self.settings, request_id=request_id)
        context.read_position = position
        token = _DECODED.set(decoded)
        try:
            return await self.run(request, context=context)
        finally:
            _DECODED.reset(token)

    def decode_json(self, data: str | bytes) -> object:
        return body.decode_json(data)  # WebSocket messages

    def parse_json(self, data: str | bytes) -> Any:
        decoded = _DECODED.get()
        if decoded is not None and decoded[0] is data:
            return decoded[1]  # the body, decoded by the front stage
        return body.parse_json(data)  # the variables of a GET request

    def parse_query_params(self, params: Any) -> dict[str, Any]:
        decoded = _DECODED.get()
        if decoded is not None and decoded[0] is None:
            return cast(dict[str, Any], decoded[1])  # resolved from a trusted document
        return super().parse_query_params(params)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A GET naming a trusted document has no query parameter, and is no page request.
        return _DECODED.get() is None and super().should_render_graphql_ide(request)

    @property
    def graphql_ide_html(self) -> str:
        return graphiql.page_html()

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.page_response()

    async def claims_for(self, authorization: Sequence[str]) -> Claims:
        """The claims of a request's Authorization headers (``headers.getlist``), or 401."""
        try:
            raw = bearer_token(sole_authorization(authorization))
            if raw is None:
                return Claims.anonymous()
            return await self.verifier.verify(raw)
        except InvalidToken as error:
            raise HTTPException(401, errors.invalid_token_message(error.reason)) from None

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None = None
    ) -> Context:
        """A WebSocket connection's context; an HTTP request's is the front stage's."""
        if not isinstance(request, WebSocket):
            raise TypeError("HTTP requests get their context from GraphQLEndpoint.serve")
        request_id = inputs.request_id(request.headers.get("x-request-id"))
        request.state.request_id = request_id
        telemetry.note(request_id=request_id, role="anon")
        # WebSocket callers authenticate in connection_init (subscriptions).
        context = Context(claims=Claims.anonymous(), settings=self.settings, request_id=request_id)
        # Browsers cannot set headers on a WebSocket; other clients may, on the upgrade.
        context.upgrade_authorization = request.headers.getlist("authorization")
        return context

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        response = await super().get_sub_response(request)
        response.headers["x-request-id"] = request.state.request_id
        return response

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
        if (
            request.method == "GET"
            and isinstance(query, str)
            and "mutation" in query  # spares the parse for every other GET
            and operation.operation_type(query, request_data.operation_name)
            == OperationType.MUTATION
        ):
            # GraphQL over HTTP: a GET may not mutate (Strawberry answers 400).
            raise HTTPException(405, MUTATIONS_OVER_GET)
        execute = super().execute_single

        async def execute_and_learn() -> ExecutionResult:
            result = await execute(
                request, request_adapter, sub_response, context, root_value, request_data
            )
            self.compiled.plans.learn(
                request_data.query, request_data.operation_name, succeeded=not result.errors
            )
            return result

        database: Database | Reader = self.database
        if self.replicas is not None and operation.reads_only(query):
            database = self.replicas.reader(context.read_position)
        outcome = await operation.run(
            database,
            context,
            execute_and_learn,
            query=query,
            operation_name=request_data.operation_name,
        )
        sub_response.status_code = outcome.status_code
        sub_response.headers.update(outcome.headers)
        if self.replicas is not None and database is self.database and outcome.status_code != 503:
            await self.issue_token(sub_response, outcome.result, context.request_id)
        return outcome.result

    async def issue_token(
        self, response: Response, result: ExecutionResult, request_id: str
    ) -> None:
        """A mutation's answer names the primary's position after its commit: the token a
        client sends back to read its own write from a replica (db/replicas.py)."""
        assert self.replicas is not None
        try:
            token = await self.replicas.token()
        except DatabaseUnavailable as error:
            # Committed or not, the primary is away: reads without a token are all there is.
            log.warning("request %s: no consistency token: %s", request_id, error)
            return
        response.headers[TOKEN_HEADER] = token
        result.extensions = {**(result.extensions or {}), TOKEN_EXTENSION: token}

    async def process_result(
        self, request: Request | WebSocket, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # Errors are logged by the schema (graphql/schema.py), shaped by graphql/errors.py.
        shaped = errors.http_body(
            result.data, result.errors, request.state.request_id, result.extensions
        )
        return cast(GraphQLHTTPResponse, shaped)

    # --- WebSocket (graphql/websocket.py) -------------------------------------------------

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate at connection_init, exactly as an HTTP request."""
        context.claims = await connection_claims(context, self.verifier)
        return await super().on_ws_connect(context)


MUTATIONS_OVER_GET = "mutations are not allowed over GET: send them by POST"

SUBSCRIPTIONS_OVER_HTTP = (
    "subscriptions are served over WebSocket at this URL (graphql-transport-ws or graphql-ws)"
)
