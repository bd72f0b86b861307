"""The HTTP request body, read and decoded as a hostile client may send it.

- Its size is bounded however it is sent: ``Content-Length`` is checked before
  reading, and a chunked body is counted while it streams in, and reading stops
  at the limit (413).
- It must arrive in time: a client trickling its body is cut off (408)
  after ``REQUEST_READ_TIMEOUT_SECONDS`` (app/serving.py does the same for headers).
- It must be UTF-8 JSON (no NaN or Infinity) nested at most ``MAX_JSON_DEPTH``
  deep (400); Python's parser would otherwise recurse until RecursionError on a
  2 KB body. WebSocket messages are decoded by the same rules.
- A POST must declare it as ``application/json`` (415 otherwise).
- Its GraphQL document must be valid Unicode (400) and at most
  ``MAX_DOCUMENT_BYTES`` long (413).

Each refusal is a cross_web HTTPException, which graphql/endpoint.py answers
with a GraphQL-shaped body.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from cross_web import HTTPException
from starlette.types import Message, Receive

from app.graphql.inputs import text_problem
from app.settings import Settings

MAX_JSON_DEPTH = 32
"""Nesting the contract never needs more than a few levels of (body, variables, input, list)."""

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def max_body_bytes(settings: Settings) -> int:
    """The largest body accepted: a document of MAX_DOCUMENT_BYTES and as much for its variables."""
    return 2 * settings.max_document_bytes


JSON_MEDIA_TYPE = "application/json"


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` names JSON: exactly application/json, with parameters
    allowed but a charset only of UTF-8, the one the body is decoded with. Strawberry's own
    test is a case-sensitive substring ("application/jsonx" passed, "Application/JSON" not):
    this is its test made exact, so the two agree on every request they both see."""
    if content_type is None:
        return False
    media_type, *parameters = content_type.split(";")
    if media_type.strip() != JSON_MEDIA_TYPE:
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def check_content_type(method: str, content_type: str | None) -> None:
    """Refuse a POST whose body is not declared as JSON (415, as GraphQL over HTTP says)."""
    if method == "POST" and not is_json(content_type):
        raise HTTPException(
            415, f"the request body must be {JSON_MEDIA_TYPE} (charset, if given, utf-8)"
        )


def check_length_header(length: str | None, settings: Settings) -> None:
    """Refuse a declared Content-Length beyond the limit before reading any of the body."""
    if length is not None and length.isdigit() and int(length) > max_body_bytes(settings):
        raise HTTPException(413, "request body too large")


def bounded(receive: Receive, settings: Settings) -> Receive:
    """``receive`` that refuses a body past the size limit or arriving too slowly.

    Once the body is complete, further messages (a disconnect) pass through unbounded.
    """
    limit = max_body_bytes(settings)
    timeout = settings.request_read_timeout_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    received = 0
    complete = False

    async def receive_bounded() -> Message:
        nonlocal received, complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise HTTPException(408, f"request body not received within {timeout:g} s") from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, "request body too large")
            complete = not message.get("more_body", False)
        return message

    return receive_bounded


def _too_deep(text: str) -> bool:
    if text.count("{") + text.count("[") <= MAX_JSON_DEPTH:
        return False  # cannot nest deeper than it has brackets: no scan (most bodies)
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def decode_json(data: str | bytes) -> object:
    """JSON from a client (an HTTP body or a WebSocket message).

    Raises json.JSONDecodeError, which Strawberry answers with 400 over HTTP and by
    closing the socket (4400) over WebSocket.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise json.JSONDecodeError(
                "the body is not valid UTF-8", repr(data[: error.start]), error.start
            ) from None
    if _too_deep(data):
        raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", "", 0)
    try:
        return json.loads(data, parse_constant=_not_json, parse_float=_finite)
    except json.JSONDecodeError:
        raise
    except _NotJSON as error:
        raise json.JSONDecodeError(str(error), "", 0) from None
    except ValueError:  # an integer past Python's limit on digits
        raise json.JSONDecodeError("a number with too many digits", "", 0) from None


class _NotJSON(ValueError):
    """What Python's parser accepts and JSON does not."""


def _not_json(constant: str) -> float:
    raise _NotJSON(f"{constant} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _NotJSON("a number too large for a double")
    return value


def parse_json(data: str | bytes) -> Any:
    """decode_json for an HTTP body or the variables of a GET request: a precise 400."""
    try:
        return decode_json(data)
    except json.JSONDecodeError as error:
        raise HTTPException(400, f"not valid JSON: {error.msg}") from None


def check_document(query: object, settings: Settings) -> None:
    """Refuse a GraphQL document that is not valid Unicode (400) or too long (413)."""
    if not isinstance(query, str):
        return
    problem = text_problem(query)
    if problem is not None:
        raise HTTPException(400, f"the GraphQL document {problem}")
    if len(query.encode()) > settings.max_document_bytes:
        raise HTTPException(
            413, f"GraphQL document larger than {settings.max_document_bytes} bytes"
        )
