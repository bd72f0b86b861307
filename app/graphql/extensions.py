"""Abuse limits and caches, applied before any resolver runs.

Strawberry builds extensions per request from these factories. The parser and
validation caches live at module level; the limit rules are created once here
so that every request validates with the *same* rule classes, which is what
lets the validation cache hit (a rule class made per request is a new cache key).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from graphql import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as max_aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as max_depth_rule

from app.graphql.inputs import TextLiteralsRule
from app.settings import Settings

CACHE_SIZE = 512


def extensions_for(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    rules: list[type[ASTValidationRule]] = [
        max_depth_rule(settings.max_query_depth, None, None),
        max_aliases_rule(settings.max_aliases),
        TextLiteralsRule,
    ]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return [
        # The token limit runs on the raw document, before the parser is asked to work.
        partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        # Parsing and validating cost more CPU than a typical query's database work.
        partial(ParserCache, maxsize=CACHE_SIZE),
        partial(AddValidationRules, rules),
        partial(ValidationCache, maxsize=CACHE_SIZE),
    ]
