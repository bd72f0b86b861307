"""``GET /graphql/schema.graphql``: the served schema as SDL, for client code generators.

It follows ``GRAPHQL_INTROSPECTION``: the SDL is exactly what introspection reveals, so a
deployment that turns introspection off to keep its schema private must not publish it at
another URL (404 then). With introspection on, it is the same schema, printed by graphql-core
from the very object that executes requests, so the two cannot drift.
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from strawberry.schema import BaseSchema

from app.settings import Settings

PATH = "/graphql/schema.graphql"


def sdl_route(schema: BaseSchema, settings: Settings) -> Route:
    text = schema.as_str() + "\n"
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'

    async def schema_sdl(request: Request) -> Response:
        if not settings.introspection:
            return PlainTextResponse("introspection is disabled on this server\n", 404)
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return PlainTextResponse(text, headers={"ETag": etag, "Cache-Control": "no-cache"})

    return Route(PATH, schema_sdl, methods=["GET"])
