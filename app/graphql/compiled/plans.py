"""The plan cache: documents that passed every check once, compiled, by (text, operation).

Two kinds: learned (a document the resolvers answered without errors, at most
PLAN_CACHE_SIZE of them, the oldest dropped first), and trusted (graphql/trusted.py: the
stored trusted documents, compiled when a server picks them up, held while they are
stored and never dropped for a learned one)."""

from __future__ import annotations

import logging

from app import metrics
from app.graphql.compiled import compiler
from app.graphql.compiled.compiler import CompiledQuery
from app.graphql.compiled.mutations import CompiledMutation, compile_mutation
from app.settings import Settings

log = logging.getLogger(__name__)

PLAN_CACHE_SIZE = 512

Key = tuple[str, str | None]
"""The document's text and the operation name."""


class Plans:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._plans: dict[Key, CompiledQuery | CompiledMutation] = {}
        self._trusted: dict[Key, CompiledQuery | CompiledMutation] = {}
        self.mutations = settings.compiled_mutations
        """Off when the login role may not call migration 007's functions (app/main.py)."""

    def __bool__(self) -> bool:
        return bool(self._plans) or bool(self._trusted)

    def __contains__(self, key: Key) -> bool:
        return key in self._plans or key in self._trusted

    def get(self, key: Key) -> CompiledQuery | CompiledMutation | None:
        plan = self._plans.get(key)
        return plan if plan is not None else self._trusted.get(key)

    def trust(self, keys: list[Key]) -> None:
        """Compile the trusted documents' operations now (graphql/trusted.py, which checked
        each against the served schema and limits first), in place of the previous ones."""
        trusted: dict[Key, CompiledQuery | CompiledMutation] = {}
        for key in keys:
            plan = self._trusted.get(key) or self._plans.get(key) or self._compile(key)
            if plan is not None:
                trusted[key] = plan
        self._trusted = trusted

    def learn(self, query: object, operation_name: object, *, succeeded: bool) -> None:
        """After the resolvers answered a document: compile it if it may be compiled.

        Only a document that passed every limit and validation rule once gets compiled:
        those checks depend on its text alone, so their verdict holds for its reuse."""
        if not (succeeded and isinstance(query, str)):
            return
        key = (query, operation_name if isinstance(operation_name, str) else None)
        if key in self:
            return
        plan = self._compile(key)
        if plan is None:
            return
        if len(self._plans) >= PLAN_CACHE_SIZE:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan

    def _compile(self, key: Key) -> CompiledQuery | CompiledMutation | None:
        plan: CompiledQuery | CompiledMutation | None = None
        try:
            if self.settings.compiled_queries:
                plan = compiler.compile_query(*key)
            if plan is None and self.mutations:
                plan = compile_mutation(*key)
        except Exception:
            # A bug of the compiler: this document keeps taking the resolvers.
            if self.settings.compiled_queries_strict:
                raise
            metrics.COMPILED_QUERIES.labels("fallback").inc()
            log.exception("compiling a query failed; it will take the resolvers")
            return None
        return plan
