"""Abuse limits and caches, applied before any resolver runs.

Strawberry builds extensions per request from these factories. The parser and
validation caches live at module level; the limit rules are created once here
so that every request validates with the *same* rule classes, which is what
lets the validation cache hit (a rule class made per request is a new cache key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from graphql import (
    ASTValidationRule,
    NoSchemaIntrospectionCustomRule,
    OverlappingFieldsCanBeMergedRule,
    specified_rules,
)
from strawberry.extensions import (
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)

from app.graphql.inputs import TextLiteralsRule
from app.graphql.limits import OverlappingFieldsWithinBudget, limits_rule
from app.settings import Settings
from app.telemetry import OperationRecorder

CACHE_SIZE = 512


def validation_rules(settings: Settings) -> tuple[type[ASTValidationRule], ...]:
    """Every rule a document is validated with (Strawberry adds two of its own, both linear).

    The limits come first: a document past them is refused before any other rule walks it
    (graphql/limits.py). graphql-core's rules follow, the one that compares fields pairwise
    with a budget proportional to the document."""
    rules: list[type[ASTValidationRule]] = [
        limits_rule(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_fields=settings.max_tokens,
        ),
        *(
            OverlappingFieldsWithinBudget if rule is OverlappingFieldsCanBeMergedRule else rule
            for rule in specified_rules
        ),
        TextLiteralsRule,
    ]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return tuple(rules)


class ValidationRules(SchemaExtension):
    """Validates with ``rules`` instead of Strawberry's default (graphql-core's rules)."""

    def __init__(self, rules: tuple[type[ASTValidationRule], ...]) -> None:
        self.rules = rules

    def on_operation(self) -> Iterator[None]:
        self.execution_context.validation_rules = self.rules
        yield


def extensions_for(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    return [
        # The token limit runs on the raw document, before the parser is asked to work.
        partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        # Parsing and validating cost more CPU than a typical query's database work.
        partial(ParserCache, maxsize=CACHE_SIZE),
        partial(ValidationRules, validation_rules(settings)),
        partial(ValidationCache, maxsize=CACHE_SIZE),
        # Names the operation in the request's log line and metrics (app/telemetry.py).
        OperationRecorder,
    ]
