"""The HTTP shortcut: a POST of a learned document answered by its compiled statement, with
PostgreSQL's JSON passed through as it is (no decode, no re-encode); a learned submitOrder or
cancelOrder by its one autocommit statement (mutations.py).

It is the operation stage only: graphql/endpoint.py has already read and decoded the body,
authenticated the caller and named the request, once for both paths; errors, bodies and
statuses are graphql/errors.py's.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from graphql import GraphQLSchema
from starlette.responses import Response

from app import metrics, telemetry
from app.auth.claims import Claims
from app.db.consistency import TOKEN_EXTENSION, TOKEN_HEADER
from app.db.failures import DatabaseUnavailable
from app.db.replicas import Replicas
from app.db.session import Database
from app.graphql import errors
from app.graphql.compiled.mutations import CompiledMutation, Declined
from app.graphql.compiled.plans import Plans
from app.settings import Settings

log = logging.getLogger(__name__)


class CompiledPath:
    """What graphql/endpoint.py asks before Strawberry runs (``answer``) and tells after the
    resolvers answered (``plans.learn``)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        schema: GraphQLSchema,
        replicas: Replicas | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.replicas = replicas
        self.schema = schema
        self.plans = Plans(settings)

    async def answer(
        self, data: object, claims: Claims, request_id: str, position: int | None = None
    ) -> Response | None:
        """The response to a POST whose decoded body is ``data``, or None to leave the request
        to Strawberry. ``position``: the request's consistency token (db/replicas.py)."""
        if not self.plans or not isinstance(data, dict):
            return None
        query, name, variables = data.get("query"), data.get("operationName"), data.get("variables")
        if not (isinstance(query, str) and isinstance(name, str | None)):
            return None
        plan = self.plans.get((query, name))
        if plan is None or not isinstance(variables, dict | None):
            return None
        if isinstance(plan, CompiledMutation):
            return await self.mutate(plan, variables, claims, request_id, name)
        try:
            bound = plan.bind(self.schema, variables, claims)
        except Exception:
            # A bug of the compiler, found before anything ran: the resolvers can answer.
            if self.settings.compiled_queries_strict:
                raise
            _queries("fallback").inc()
            log.exception(
                "request %s: compiled plan failed to bind; using the resolvers", request_id
            )
            return None
        if bound is None:
            # Unusual arguments: the resolvers give the precise error.
            _queries("declined").inc()
            return None
        telemetry.note(label=plan.label, operation_name=name)
        try:
            if self.replicas is None:
                raw = await self.database.read_json(claims, *bound)
            else:
                raw = await self.replicas.reader(position).read_json(claims, *bound)
        except Exception as failure:
            # Answered as the resolvers answer the same failure, and never run again through
            # them: the statement was sent (a timeout would only cost the caller twice).
            _queries("failed").inc()
            # At the first root field, where the resolvers meet the same failure first.
            root, node = plan.roots[0]
            error = errors.failed_field(failure, node, root.key, request_id)
            return errors.http_response(None, [error], request_id)
        _queries("answered").inc()
        return Response(
            b'{"data":' + raw.encode() + b"}",
            media_type="application/json",
            headers={"x-request-id": request_id},
        )

    async def mutate(
        self,
        plan: CompiledMutation,
        variables: dict[str, object] | None,
        claims: Claims,
        request_id: str,
        name: str | None,
    ) -> Response | None:
        """A learned submitOrder or cancelOrder (graphql/compiled/mutations.py)."""
        try:
            arguments = plan.arguments(self.schema, variables)
        except Declined:
            # Variables graphql-core refuses: the resolvers report them as they always do.
            _mutations(plan.name, "declined").inc()
            return None
        telemetry.note(label=plan.label, operation_name=name)
        try:
            answer = await plan.run(self.database, self.schema, arguments, claims)
            _mutations(plan.name, "answered").inc()
        except Exception as failure:
            # Sent once, never again through the resolvers (a write). Shaped as the same
            # failure in the resolver is; in the tests anything but an unavailable database
            # is a bug of this path and fails the request.
            _mutations(plan.name, "failed").inc()
            if self.settings.compiled_queries_strict and not isinstance(
                failure, DatabaseUnavailable
            ):
                raise
            error = errors.failed_field(failure, plan.root, plan.key, request_id)
            return errors.http_response(None, [error], request_id)
        if answer.error is not None:
            errors.log_errors([answer.error], request_id)
        return errors.http_response(
            answer.data,
            [] if answer.error is None else [answer.error],
            request_id,
            **await self.token(request_id),
        )

    async def token(self, request_id: str) -> dict[str, dict[str, str]]:
        """A mutation's consistency token (db/replicas.py), as ``http_response``'s keywords:
        in the header and the extensions, as graphql/endpoint.py issues it for the resolvers."""
        if self.replicas is None:
            return {}
        try:
            token = await self.replicas.token()
        except DatabaseUnavailable as error:
            log.warning("request %s: no consistency token: %s", request_id, error)
            return {}
        return {"headers": {TOKEN_HEADER: token}, "extensions": {TOKEN_EXTENSION: token}}


# Each outcome's series looked up once, not per request (prometheus_client's labels() is no
# dict lookup); a bounded set: outcomes times the two compiled mutations.
@functools.cache
def _queries(outcome: str) -> Any:
    return metrics.COMPILED_QUERIES.labels(outcome)


@functools.cache
def _mutations(name: str, outcome: str) -> Any:
    return metrics.COMPILED_MUTATIONS.labels(name, outcome)
