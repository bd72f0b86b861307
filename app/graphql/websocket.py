"""Subscriptions over WebSocket: authentication, token expiry, errors shaped by graphql/errors.py.

Over WebSocket (graphql-transport-ws, and the legacy graphql-ws) only
subscriptions are served. The token comes with ``connection_init``, as
``{"Authorization": "Bearer ..."}`` in its payload, or else in the upgrade
request's Authorization header, and is verified exactly as over HTTP. A
present but invalid token closes the socket with 4401 (Unauthorized; the
legacy protocol first gets a ``connection_error``). No token means role anon,
whose subscriptions fail with UNAUTHENTICATED. The socket is closed with 4401
as well when the token expires (``exp`` plus the leeway HTTP allows).

A ``subscribe`` (``start``) payload may name a trusted document (``documentId``, or
Apollo's ``extensions.persistedQuery.sha256Hash``) instead of sending its ``query``:
graphql/trusted.py resolves it as over HTTP. Its refusals (an unknown id, text under
``TRUSTED_DOCUMENTS=require``) are that operation's error message; the connection stays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, Protocol, cast, runtime_checkable

from graphql import GraphQLError, GraphQLFormattedError
from strawberry.http.async_base_view import AsyncBaseHTTPView, AsyncWebSocketAdapter
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws import types as transport_ws
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws import types as legacy_ws
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from app.auth.claims import Claims, refused_from
from app.auth.jwt import InvalidToken, TokenVerifier, bearer_token, sole_authorization
from app.graphql import errors
from app.graphql.compiled.events import Answered
from app.graphql.context import Context
from app.graphql.subscriptions import OrderFeed
from app.graphql.trusted import TrustedDocuments

log = logging.getLogger(__name__)

WS_UNAUTHORIZED = 4401
"""Close code for a refused or expired token. graphql-transport-ws defines 4401 Unauthorized
(Strawberry's own rejection path would send 4403 Forbidden, which clients read as "this token
may not", not "get a new token"); the legacy protocol defines no codes and gets the same."""


class TokenRefused(Exception):
    """A WebSocket caller's token is present but invalid; the connection is refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def close_reason(self) -> str:
        # A close frame's reason is at most 123 bytes.
        return f"Unauthorized: {self.reason}".encode()[:123].decode(errors="ignore")


async def connection_claims(context: Context, verifier: TokenVerifier) -> Claims:
    """The claims of the token that came with connection_init, verified exactly as over HTTP.

    Raises TokenRefused for a present but invalid token; the handlers close the socket for it.
    """
    params, headers = context.connection_params, context.upgrade_authorization
    # The connection's context lives as long as the socket: it keeps no raw token.
    context.connection_params, context.upgrade_authorization = None, ()
    try:
        header = sole_authorization(headers)
        authorization = _authorization_param(params)
        raw = bearer_token(authorization if authorization is not None else header)
        return Claims.anonymous() if raw is None else await verifier.verify(raw)
    except InvalidToken as error:
        raise TokenRefused(error.reason) from None


@runtime_checkable
class _SubscriptionView(Protocol):
    """What the handlers need of the view that serves them (graphql/endpoint.py's)."""

    feed: OrderFeed | None
    trusted: TrustedDocuments


class _AuthenticatedHandler:
    """What both protocols' handlers share: the schema they see, the upgrade request's
    Authorization header, and the task that closes the connection once its token expires.

    Listed before the Strawberry handler it extends, whose __init__ and hooks it relies on;
    the declarations below are that handler's attributes.
    """

    view: AsyncBaseHTTPView[Any, Any, Any, Any, Any, Context, None]
    websocket: AsyncWebSocketAdapter
    context: Context
    schema: BaseSchema
    connection_acknowledged: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = _WebSocketSchema.wrap(self.schema, self.view)
        self._expiry: asyncio.Task[None] | None = None

    def _watch_expiry(self) -> None:
        """After connection_init: once acknowledged, close the connection when its token expires."""
        if self.connection_acknowledged and self._expiry is None:
            self._expiry = _close_at_expiry(self.context, self._expire)

    def _stop_watching_expiry(self) -> None:
        # The expiry task may itself be what is shutting the connection down.
        if self._expiry is not None and self._expiry is not asyncio.current_task():
            self._expiry.cancel()

    async def _expire(self) -> None:
        """Closes the connection, whose token has expired, ending its operations."""
        raise NotImplementedError

    def _resolved(self, message: Any) -> tuple[Any, GraphQLFormattedError | None]:
        """The subscribe (start) message with a trusted document it names resolved into its
        text, and None; or the message as it is, and the error refusing its operation."""
        view = self.view
        if not (self.connection_acknowledged and isinstance(view, _SubscriptionView)):
            return message, None  # Strawberry closes an unacknowledged connection itself
        payload = message.get("payload")
        try:
            resolved = view.trusted.resolve(payload, self.context.claims)
        except errors.CodedRefusal as refusal:
            request_id = self.context.request_id
            error = GraphQLError(refusal.reason, original_error=refusal)
            errors.log_errors([error], request_id)
            return message, errors.contract_error(error, request_id).formatted
        if resolved is payload:
            return message, None  # names no document (or is no object: Strawberry refuses it)
        log.info(
            "request %s: operation %s by trusted document %s",
            self.context.request_id,
            message.get("id"),
            payload.get("documentId") or "by its sha256Hash",
        )
        return {**message, "payload": resolved}, None


class TransportWSHandler(_AuthenticatedHandler, BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with this API's authentication and token expiry."""

    async def handle_subscribe(self, message: transport_ws.SubscribeMessage) -> None:
        message, refused = self._resolved(message)
        if refused is not None:
            await self.send_message(
                transport_ws.ErrorMessage(id=message["id"], type="error", payload=[refused])
            )
            return
        await super().handle_subscribe(message)

    async def handle_connection_init(self, message: transport_ws.ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except TokenRefused as refused:
            await self.websocket.close(WS_UNAUTHORIZED, refused.close_reason)
            return
        self._watch_expiry()

    async def _expire(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(WS_UNAUTHORIZED, "Unauthorized: token expired")

    async def shutdown(self) -> None:
        self._stop_watching_expiry()
        await super().shutdown()


class LegacyWSHandler(_AuthenticatedHandler, BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol (subscriptions-transport-ws), authenticated alike."""

    async def handle_start(self, message: legacy_ws.StartMessage) -> None:
        message, refused = self._resolved(message)
        if refused is not None:
            await self.send_message(
                legacy_ws.ErrorMessage(type="error", id=message["id"], payload=refused)
            )
            return
        await super().handle_start(message)

    async def handle_connection_init(self, message: legacy_ws.ConnectionInitMessage) -> None:
        if self.connection_acknowledged:
            # The protocol has no rule for it; a second token on a live connection is refused
            # rather than silently swapping whose orders it streams.
            await self.websocket.close(4429, "Too many initialisation requests")
            return
        try:
            await super().handle_connection_init(message)
        except TokenRefused as refused:
            await self.send_message(
                {"type": "connection_error", "payload": errors.token_refused(refused.reason)}
            )
            await self.websocket.close(WS_UNAUTHORIZED, refused.close_reason)
            return
        self._watch_expiry()

    async def _expire(self) -> None:
        # Closing ends the handler's receive loop, whose cleanup stops the operations.
        await self.websocket.close(WS_UNAUTHORIZED, "Unauthorized: token expired")

    async def cleanup(self) -> None:
        self._stop_watching_expiry()
        await super().cleanup()


class _WebSocketSchema:
    """The schema as the WebSocket handlers see it: subscriptions only, a context per
    operation, and errors shaped like the HTTP path's (extensions.code, internals masked)."""

    def __init__(self, schema: BaseSchema, view: _SubscriptionView) -> None:
        self._schema = schema
        self._view = view

    @classmethod
    def wrap(cls, schema: BaseSchema, view: object) -> BaseSchema:
        if not isinstance(view, _SubscriptionView):
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
        context = _operation_context(context_value, self._view.feed)
        source = await self._schema.subscribe(
            query,
            variable_values=variable_values,
            context_value=context,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
        )
        return _shaped(source, context.request_id)


def _operation_context(connection: Context, feed: OrderFeed | None) -> Context:
    """A context of its own for each operation of a WebSocket connection.

    The connection's context is shared by all of its operations, which run concurrently;
    each subscription primes its own loaders with the rows it read (subscriptions.py).
    """
    return Context(
        claims=connection.claims,
        settings=connection.settings,
        request_id=connection.request_id,
        feed=feed,
    )


async def _shaped(
    source: AsyncGenerator[ExecutionResult, None], request_id: str
) -> AsyncGenerator[ExecutionResult, None]:
    """The results with errors shaped by graphql/errors.py, as over HTTP.

    A document refused while it is parsed (a syntax error, too many tokens) is raised out of
    Strawberry's stream instead of yielded; it becomes the stream's first result, as every
    other refusal before execution is, so both protocols send their error message for it
    (any other exception there too, masked as over HTTP).
    """
    first = True
    try:
        async with aclosing(source):
            async for result in source:
                first = False
                if isinstance(result.data, Answered):
                    # A batch of events built without graphql-core (compiled/events.py).
                    for data in result.data.events:
                        yield ExecutionResult(data, None, result.extensions)
                    continue
                if result.errors:
                    shaped = [errors.contract_error(error, request_id) for error in result.errors]
                    result = dataclasses.replace(result, errors=shaped)
                yield result
    except Exception as error:
        if not first:
            raise
        refused = errors.refused_before_execution(error, request_id)
        yield PreExecutionError(data=None, errors=[refused])


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


def _close_at_expiry(
    context: Context, close: Callable[[], Awaitable[None]]
) -> asyncio.Task[None] | None:
    """A task that closes the connection once HTTP would refuse its token as expired."""
    expires_at = context.claims.expires_at
    if expires_at is None:
        return None
    deadline = refused_from(expires_at, context.settings.jwt_leeway_seconds)

    async def watch() -> None:
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
        try:
            await close()
        except Exception:  # the peer may be gone already; the connection ends either way
            log.debug("closing a connection whose token expired failed", exc_info=True)

    return asyncio.create_task(watch(), name="ws-token-expiry")
