"""The /graphql endpoint: token -> claims -> one transaction -> execute -> commit or roll back.

A present but invalid token is answered 401 before anything executes. No
token means role anon. The whole operation runs in one transaction opened by
db/session.py; any error rolls all of it back, so a request with errors has
written nothing.

Over WebSocket (graphql-transport-ws, and the legacy graphql-ws) only
subscriptions are served. The token comes with ``connection_init``, as
``{"Authorization": "Bearer ..."}`` in its payload, or else in the upgrade
request's Authorization header, and is verified exactly as over HTTP. A
present but invalid token closes the socket with 4401 (Unauthorized; the
legacy protocol first gets a ``connection_error``). No token means role anon,
whose subscriptions fail with UNAUTHENTICATED. The socket is closed with 4401
as well when the token expires (``exp`` plus the leeway HTTP allows).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import strawberry
from cross_web import HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.async_base_view import AsyncWebSocketAdapter
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions.protocols.graphql_transport_ws import types as transport_ws
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws import types as legacy_ws
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from app.auth.claims import Claims
from app.auth.jwt import InvalidToken, TokenVerifier, bearer_token
from app.db.listener import OrderChangeListener
from app.db.session import Database, DatabaseUnavailable, Tx
from app.graphql import compiled
from app.graphql.context import Context
from app.graphql.errors import UNAVAILABLE, code_of, format_error, log_unexpected
from app.graphql.subscriptions import FEED, OrderFeed, UpdatesMissed
from app.settings import Settings

log = logging.getLogger(__name__)


class _RollBack(Exception):
    """Leaves the transaction block so that it rolls back, carrying the result out."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result


WS_UNAUTHORIZED = 4401
"""Close code for a refused or expired token. graphql-transport-ws defines 4401 Unauthorized
(Strawberry's own rejection path would send 4403 Forbidden, which clients read as "this token
may not", not "get a new token"); the legacy protocol defines no codes and gets the same."""

_CONNECTION_PARAMS = "ws_connection_params"
_UPGRADE_AUTHORIZATION = "ws_upgrade_authorization"


class TokenRefused(Exception):
    """A WebSocket caller's token is present but invalid; the connection is refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def close_reason(self) -> str:
        # A close frame's reason is at most 123 bytes.
        return f"Unauthorized: {self.reason}".encode()[:123].decode(errors="ignore")


class _TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with this API's authentication and token expiry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = _WebSocketSchema.wrap(self.schema, self.view)
        _remember_upgrade_authorization(self.websocket, self.context)
        self._expiry: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: transport_ws.ConnectionInitMessage) -> None:
        if not self.connection_init_received:
            self.context.extra[_CONNECTION_PARAMS] = message.get("payload")
        try:
            await super().handle_connection_init(message)
        except TokenRefused as refused:
            await self.websocket.close(WS_UNAUTHORIZED, refused.close_reason)
            return
        if self.connection_acknowledged and self._expiry is None:
            self._expiry = _close_at_expiry(self.context, self._expire)

    async def _expire(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(WS_UNAUTHORIZED, "Unauthorized: token expired")

    async def shutdown(self) -> None:
        _cancel(self._expiry)
        await super().shutdown()


class _LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol (subscriptions-transport-ws), authenticated alike."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = _WebSocketSchema.wrap(self.schema, self.view)
        _remember_upgrade_authorization(self.websocket, self.context)
        self._expiry: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: legacy_ws.ConnectionInitMessage) -> None:
        if self.connection_acknowledged:
            # The protocol has no rule for it; a second token on a live connection is refused
            # rather than silently swapping whose orders it streams.
            await self.websocket.close(4429, "Too many initialisation requests")
            return
        self.context.extra[_CONNECTION_PARAMS] = message.get("payload")
        try:
            await super().handle_connection_init(message)
        except TokenRefused as refused:
            await self.send_message(
                {
                    "type": "connection_error",
                    "payload": {
                        "message": f"invalid token: {refused.reason}",
                        "extensions": {"code": "UNAUTHENTICATED"},
                    },
                }
            )
            await self.websocket.close(WS_UNAUTHORIZED, refused.close_reason)
            return
        if self.connection_acknowledged and self._expiry is None:
            self._expiry = _close_at_expiry(self.context, self._expire)

    async def _expire(self) -> None:
        # Closing ends the handler's receive loop, whose cleanup stops the operations.
        await self.websocket.close(WS_UNAUTHORIZED, "Unauthorized: token expired")

    async def cleanup(self) -> None:
        _cancel(self._expiry)
        await super().cleanup()


class GraphQLEndpoint(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = _TransportWSHandler
    graphql_ws_handler_class = _LegacyWSHandler

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
        )
        self.settings = settings
        self.database = database
        self.verifier = verifier
        self.feed = OrderFeed(database, listener) if listener is not None else None
        self._plans: dict[tuple[str, str | None], compiled.CompiledQuery] = {}
        assert isinstance(schema, strawberry.Schema)
        self.graphql_schema = schema._schema

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
                result = await self._execute_compiled(tx, request_data)
                if result is None:
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

    async def _execute_compiled(self, tx: Tx, request_data: Any) -> ExecutionResult | None:
        """The answer of a compiled document (graphql/compiled.py), or None for the resolvers."""
        key = self._plan_key(request_data)
        plan = self._plans.get(key) if key is not None else None
        if plan is None:
            return None
        bound = plan.bind(self.graphql_schema, request_data.variables, tx)
        if bound is None:
            return None  # unusual arguments: the resolvers give the precise error
        try:
            return ExecutionResult(data=await compiled.execute(tx, *bound), errors=None)
        except Exception as error:  # masked for the client and logged whole, like a resolver's
            return ExecutionResult(
                data=None, errors=[GraphQLError(str(error), original_error=error)]
            )

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
        if result.errors:
            log_unexpected(result.errors, request_id)
            response["errors"] = [format_error(error, request_id) for error in result.errors]
        if result.extensions:
            response["extensions"] = result.extensions
        return response

    # --- WebSocket -------------------------------------------------------------------------

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticate at connection_init, exactly as an HTTP request (see module docstring)."""
        params = context.extra.pop(_CONNECTION_PARAMS, None)
        header = context.extra.pop(_UPGRADE_AUTHORIZATION, None)
        try:
            authorization = _authorization_param(params)
            raw = bearer_token(authorization if authorization is not None else header)
            context.claims = Claims.anonymous() if raw is None else await self.verifier.verify(raw)
        except InvalidToken as error:
            raise TokenRefused(error.reason) from None
        return await super().on_ws_connect(context)

    def operation_context(self, connection: Context) -> Context:
        """A context of its own for each operation of a WebSocket connection.

        The connection's context is shared by all of its operations, which run concurrently;
        each subscription primes its own loaders with the rows it read (subscriptions.py).
        """
        extra = dict(connection.extra)
        if self.feed is not None:
            extra[FEED] = self.feed
        return Context(
            claims=connection.claims,
            settings=connection.settings,
            request_id=connection.request_id,
            extra=extra,
        )


class _WebSocketSchema:
    """The schema as the WebSocket handlers see it: subscriptions only, a context per
    operation, and errors shaped like the HTTP path's (extensions.code, internals masked)."""

    def __init__(self, schema: BaseSchema, endpoint: GraphQLEndpoint) -> None:
        self._schema = schema
        self._endpoint = endpoint

    @classmethod
    def wrap(cls, schema: BaseSchema, view: object) -> BaseSchema:
        if not isinstance(view, GraphQLEndpoint):
            raise TypeError("the WebSocket handlers serve GraphQLEndpoint only")
        # The handlers call stream() or subscribe() and nothing else of the schema.
        return cast(BaseSchema, cls(schema, view))

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Any = None,
    ) -> AsyncGenerator[ExecutionResult, None]:
        # Queries and mutations need the HTTP path's transaction; only subscriptions come here.
        return await self.subscribe(
            query, variable_values, context_value, root_value, operation_name, operation_extensions
        )

    async def subscribe(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> AsyncGenerator[ExecutionResult, None]:
        if not isinstance(context_value, Context):
            raise TypeError("WebSocket operations run with the connection's Context")
        context = self._endpoint.operation_context(context_value)
        source = await self._schema.subscribe(
            query,
            variable_values=variable_values,
            context_value=context,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
        )
        return _shaped(source, context.request_id)


async def _shaped(
    source: AsyncGenerator[ExecutionResult, None], request_id: str
) -> AsyncGenerator[ExecutionResult, None]:
    async with aclosing(source):
        async for result in source:
            if result.errors:
                log_unexpected(
                    [e for e in result.errors if not _expected_here(e.original_error)], request_id
                )
                errors = [_contract_error(error, request_id) for error in result.errors]
                result = dataclasses.replace(result, errors=errors)
            yield result


def _expected_here(original: BaseException | None) -> bool:
    """Errors that only the WebSocket path produces, none of them a fault of the server."""
    return isinstance(original, UpdatesMissed | InvalidOperationTypeError)


def _contract_error(error: GraphQLError, request_id: str) -> GraphQLError:
    """The error as the client sees it: the HTTP path's message and extensions."""
    original = error.original_error
    if isinstance(original, UpdatesMissed):
        message = original.message
        extensions: dict[str, Any] = {"code": original.code, "reason": original.reason}
    elif isinstance(original, InvalidOperationTypeError):
        message = (
            "only subscriptions are served over WebSocket; send queries and mutations over HTTP"
        )
        extensions = {"code": "BAD_USER_INPUT"}
    else:
        formatted = format_error(error, request_id)
        message, extensions = formatted["message"], formatted["extensions"]
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=original,
        extensions=extensions,
    )


def _authorization_param(params: object) -> str | None:
    """The Authorization entry of connection_init's payload (any capitalisation)."""
    if not isinstance(params, Mapping):
        return None
    for key, value in params.items():
        if isinstance(key, str) and key.lower() == "authorization":
            if not isinstance(value, str):
                raise InvalidToken("malformed authorization header")
            return value
    return None


def _remember_upgrade_authorization(websocket: AsyncWebSocketAdapter, context: Context) -> None:
    # Browsers cannot set headers on a WebSocket; other clients may, on the upgrade request.
    if isinstance(websocket, ASGIWebSocketAdapter):
        header = websocket.ws.headers.get("authorization")
        if header is not None:
            context.extra[_UPGRADE_AUTHORIZATION] = header


def _close_at_expiry(
    context: Context, close: Callable[[], Awaitable[None]]
) -> asyncio.Task[None] | None:
    """A task that closes the connection once HTTP would refuse its token as expired."""
    expires_at = context.claims.expires_at
    if expires_at is None:
        return None
    deadline = expires_at + timedelta(seconds=context.settings.jwt_leeway_seconds)

    async def watch() -> None:
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
        try:
            await close()
        except Exception:  # the peer may be gone already; the connection ends either way
            log.debug("closing a connection whose token expired failed", exc_info=True)

    return asyncio.create_task(watch(), name="ws-token-expiry")


def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and task is not asyncio.current_task():
        task.cancel()


def _is_mutation(request_data: Any) -> bool:
    try:
        operation = get_operation_ast(parse(request_data.query), request_data.operation_name)
    except GraphQLError:
        return False
    return operation is not None and operation.operation == OperationType.MUTATION
