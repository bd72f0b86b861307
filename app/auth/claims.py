"""What the rest of the application knows about a caller, once its token is verified."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Claims:
    role: str
    """One of ``app.settings.APP_ROLES``; the database role the request runs as."""
    sub: UUID | None
    """The trader id; None for anonymous callers and for service tokens without ``sub``."""
    raw: Mapping[str, Any] = field(repr=False)  # a claim set is never logged, even by repr()
    """The complete verified payload, handed unchanged to Postgres as ``request.jwt.claims``."""
    expires_at: datetime | None
    """Timezone-aware UTC, from ``exp``; None for anonymous callers."""
    _json: list[str] = field(default_factory=list, init=False, repr=False, compare=False)
    """``to_json``'s text, once: the verifier reuses a token's Claims for every request."""

    @classmethod
    def anonymous(cls) -> Claims:
        return cls(role="anon", sub=None, raw=MappingProxyType({"role": "anon"}), expires_at=None)

    def expired(self, now: datetime, leeway_seconds: float) -> bool:
        """Whether the token is refused at ``now``; see expired()."""
        return expired(self.expires_at, now, leeway_seconds)

    def to_json(self) -> str:
        # RLS policies read this back with ->> and casts, so the text must round-trip exactly
        # what the issuer signed; NaN/Infinity would not be valid jsonb.
        if not self._json:
            self._json.append(json.dumps(dict(self.raw), separators=(",", ":"), allow_nan=False))
        return self._json[0]


def refused_from(expires_at: datetime, leeway_seconds: float) -> datetime:
    """The moment a token that expires at ``expires_at`` stops being accepted: ``exp`` plus the
    leeway (JWT_LEEWAY_SECONDS) allowed for clock skew."""
    return expires_at + timedelta(seconds=leeway_seconds)


def expired(expires_at: datetime | None, now: datetime, leeway_seconds: float) -> bool:
    """The one rule for token expiry, used by verification (auth/jwt.py, and its cache of
    verified tokens), WebSocket connections (graphql/websocket.py) and every subscription
    event (graphql/subscriptions.py), so that they all refuse a token at the same moment.
    No ``exp`` (anonymous callers) never expires."""
    return expires_at is not None and now >= refused_from(expires_at, leeway_seconds)
