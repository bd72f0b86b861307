"""The HTTP shortcut: a POST of a learned document answered by its compiled statement, with
PostgreSQL's JSON passed through as it is (no decode, no re-encode); a learned submitOrder or
cancelOrder by its one autocommit statement (mutations.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from graphql import GraphQLError, GraphQLSchema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app import metrics, telemetry
from app.auth.claims import Claims
from app.db.failures import DatabaseUnavailable
from app.db.session import Database
from app.graphql import body, inputs
from app.graphql.compiled.mutations import Answer, CompiledMutation, Declined
from app.graphql.compiled.plans import Plans
from app.graphql.errors import UNAVAILABLE, code_of, format_error, log_errors
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
        claims_for: Callable[[Sequence[str]], Awaitable[Claims]],
    ) -> None:
        self.settings = settings
        self.database = database
        self.schema = schema
        self.claims_for = claims_for
        self.plans = Plans(settings)

    async def answer(self, request: Request) -> Response | None:
        """The response, or None to leave the request to Strawberry."""
        if not self.plans or request.method != "POST":
            return None
        if not body.is_json(request.headers.get("content-type")):
            return None
        body.check_length_header(request.headers.get("content-length"), self.settings)
        try:
            data = body.decode_json(await request.body())  # Starlette keeps it for Strawberry
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        query, name, variables = data.get("query"), data.get("operationName"), data.get("variables")
        if not (isinstance(query, str) and isinstance(name, str | None)):
            return None
        plan = self.plans.get((query, name))
        if plan is None or not isinstance(variables, dict | None):
            return None
        claims = await self.claims_for(request.headers.getlist("authorization"))
        request_id = inputs.request_id(request.headers.get("x-request-id"))
        if isinstance(plan, CompiledMutation):
            return await self.mutate(plan, variables, claims, request_id, name)
        try:
            bound = plan.bind(self.schema, variables, claims)
        except Exception:
            # A bug of the compiler, found before anything ran: the resolvers can answer.
            if self.settings.compiled_queries_strict:
                raise
            metrics.COMPILED_QUERIES.labels("fallback").inc()
            log.exception(
                "request %s: compiled plan failed to bind; using the resolvers", request_id
            )
            return None
        if bound is None:
            # Unusual arguments: the resolvers give the precise error.
            metrics.COMPILED_QUERIES.labels("declined").inc()
            return None
        telemetry.note(
            request_id=request_id, role=claims.role, operation=plan.operation, operation_name=name
        )
        headers = {"x-request-id": request_id}
        try:
            raw = await self.database.read_json(claims, *bound)
        except Exception as failure:
            # Answered as the resolvers answer the same failure, and never run again through
            # them: the statement was sent (a timeout would only cost the caller twice).
            metrics.COMPILED_QUERIES.labels("failed").inc()
            # At the first root field, where the resolvers meet the same failure first.
            root, node = plan.roots[0]
            error = GraphQLError(
                str(failure), nodes=[node], path=[root.key], original_error=failure
            )
            status = 503 if code_of(error) == UNAVAILABLE else 200
            if status == 503:
                log.warning("request %s: database unavailable: %s", request_id, failure)
            else:
                log_errors([error], request_id)
            answer = {"data": None, "errors": [format_error(error, request_id)]}
            return JSONResponse(answer, status, headers=headers)
        metrics.COMPILED_QUERIES.labels("answered").inc()
        return Response(
            b'{"data":' + raw.encode() + b"}", media_type="application/json", headers=headers
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
            metrics.COMPILED_MUTATIONS.labels(plan.name, "declined").inc()
            return None
        telemetry.note(
            request_id=request_id, role=claims.role, operation=plan.operation, operation_name=name
        )
        headers = {"x-request-id": request_id}
        status = 200
        try:
            answer = await plan.run(self.database, self.schema, arguments, claims)
            metrics.COMPILED_MUTATIONS.labels(plan.name, "answered").inc()
        except Exception as failure:
            # Sent once, never again through the resolvers (a write). Shaped as the same
            # failure in the resolver is; in the tests anything but an unavailable database
            # is a bug of this path and fails the request.
            metrics.COMPILED_MUTATIONS.labels(plan.name, "failed").inc()
            if self.settings.compiled_queries_strict and not isinstance(
                failure, DatabaseUnavailable
            ):
                raise
            error = GraphQLError(
                str(failure), nodes=[plan.root], path=[plan.key], original_error=failure
            )
            if code_of(error) == UNAVAILABLE:
                status = 503
                log.warning("request %s: database unavailable: %s", request_id, failure)
            answer = Answer(None, error)
        if answer.error is None:
            return JSONResponse({"data": answer.data}, headers=headers)
        if status != 503:
            log_errors([answer.error], request_id)
        telemetry.note(codes=[code_of(answer.error)])
        body = {"data": None, "errors": [format_error(answer.error, request_id)]}
        return JSONResponse(body, status, headers=headers)
