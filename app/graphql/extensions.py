"""Abuse limits and caches, applied before any resolver runs.

Strawberry builds extensions per request from these factories; the parser and
validation caches live at module level, so they survive across requests.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from app.settings import Settings


def extensions_for(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    extensions: list[Callable[[], SchemaExtension]] = [
        # The token limit runs on the raw document, before the parser is asked to work.
        partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        # Parsing and validating cost more CPU than a typical query's database work.
        partial(ParserCache, maxsize=512),
        partial(ValidationCache, maxsize=512),
        partial(QueryDepthLimiter, max_depth=settings.max_query_depth),
        partial(MaxAliasesLimiter, max_alias_count=settings.max_aliases),
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    return extensions
