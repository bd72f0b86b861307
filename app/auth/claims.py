"""What the rest of the application knows about a caller, once its token is verified."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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

    @classmethod
    def anonymous(cls) -> Claims:
        return cls(role="anon", sub=None, raw=MappingProxyType({"role": "anon"}), expires_at=None)

    def to_json(self) -> str:
        # RLS policies read this back with ->> and casts, so the text must round-trip exactly
        # what the issuer signed; NaN/Infinity would not be valid jsonb.
        return json.dumps(dict(self.raw), separators=(",", ":"), allow_nan=False)
