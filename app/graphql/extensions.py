"""Abuse limits and caches, applied before any resolver runs.

Strawberry builds extensions per request from these factories. The parser and
validation caches live at module level; the limit rules are created once here
so that every request validates with the *same* rule classes, which is what
lets the validation cache hit (a rule class made per request is a new cache key).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    NoSchemaIntrospectionCustomRule,
    SelectionSetNode,
    ValidationContext,
    visit,
)
from graphql.language import Visitor
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
from app.telemetry import OperationRecorder

CACHE_SIZE = 512


def _empty_selection_set(document: DocumentNode) -> SelectionSetNode | None:
    found: list[SelectionSetNode] = []

    class Empty(Visitor):
        def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
            if not node.selections:
                found.append(node)

    visit(document, Empty())
    return found[0] if found else None


def _max_depth_rule(max_depth: int) -> type[ASTValidationRule]:
    """Strawberry's depth limit, refusing empty selection sets first.

    graphql-core parses ``{ viewer { } }`` (the grammar now allows it), and Strawberry's depth
    limiter fails on it with an internal error; the contract never needs one.
    """
    depth_rule = max_depth_rule(max_depth, None, None)

    class MaxDepth(ASTValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            empty = _empty_selection_set(context.document)
            if empty is not None:
                context.report_error(
                    GraphQLError("a selection set must select at least one field", empty)
                )
            else:
                depth_rule(context)  # reports its errors to the context while it is built

    return MaxDepth


def extensions_for(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    rules: list[type[ASTValidationRule]] = [
        _max_depth_rule(settings.max_query_depth),
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
        # Names the operation in the request's log line and metrics (app/telemetry.py).
        OperationRecorder,
    ]
