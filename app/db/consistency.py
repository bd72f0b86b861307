"""The consistency token: the opaque text a mutation's answer carries (``X-Consistency-Token``,
``extensions.consistencyToken``) and a later read sends back, naming a WAL position of the
primary that the replica answering the read must have replayed (app/db/replicas.py).

Versioned (``1.`` then the position in 16 hex digits) so that its shape may change; clients
must treat it as opaque.
"""

from __future__ import annotations

import re

TOKEN_HEADER = "X-Consistency-Token"
TOKEN_EXTENSION = "consistencyToken"


class MalformedToken(ValueError):
    """A consistency token that this server never issued the shape of (BAD_USER_INPUT)."""


_TOKEN = re.compile(r"1\.([0-9a-f]{16})")


def format_token(lsn: int) -> str:
    """The opaque token for a WAL position: versioned, so that its shape may change."""
    return f"1.{lsn:016x}"


def parse_token(raw: object) -> int:
    """The WAL position a token names, or MalformedToken."""
    found = _TOKEN.fullmatch(raw) if isinstance(raw, str) else None
    if found is None:
        raise MalformedToken(
            f"malformed {TOKEN_HEADER} (extensions.{TOKEN_EXTENSION}): send back the value of"
            " a mutation's response unchanged"
        )
    return int(found.group(1), 16)


def requested_token(header: str | None, extensions: object) -> int | None:
    """The position a request asks to read at, from its header or its ``extensions``; None
    when it sends neither. Both must agree when both are sent."""
    sent = extensions.get(TOKEN_EXTENSION) if isinstance(extensions, dict) else None
    if header is None and sent is None:
        return None
    positions = {parse_token(value) for value in (header, sent) if value is not None}
    if len(positions) > 1:
        raise MalformedToken(
            f"{TOKEN_HEADER} and extensions.{TOKEN_EXTENSION} name different positions"
        )
    return positions.pop()
