"""The contract's DateTime, written as PostgreSQL writes JSON timestamps (db/timestamps.py).

Compiled queries (graphql/compiled.py) put timestamps into the response with
``to_json`` as they are; the resolvers answer the very same text through this.
"""

from __future__ import annotations

import dataclasses

from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types.scalar import ScalarDefinition

from app.db.timestamps import isoformat

DATETIME: ScalarDefinition = dataclasses.replace(DateTimeDefinition, serialize=isoformat)
"""Strawberry's DateTime (same name, same parsing), serialized like PostgreSQL's to_json."""
