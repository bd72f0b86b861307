"""How big a document may be: depth, aliases and selected fields, with each fragment measured once.

A document's size is what it would be written out: a fragment counts wherever it is spread.
Measured naively, by walking a fragment again at each spread, that costs as much as the
written-out document, which a chain of fragments that each spread the next twice makes
exponential in the document's length (issue 18: 1 KB kept a server's event loop busy for
seconds). So each definition is walked once, its spreads left as names, and each fragment's
totals are computed once from its own and its spreads' (``measure``): the cost is linear in
the document, whatever the totals are.

The limits, each refused before anything executes:
- depth (``MAX_QUERY_DEPTH``): fields nested in fields, per operation; introspection fields
  (``__schema``, ``__typename``) do not deepen it (as Strawberry's QueryDepthLimiter, whose
  messages these are);
- aliases (``MAX_ALIASES``): aliased fields over the document's operations;
- fields (``MAX_TOKENS``): the fields an operation selects once its fragments are expanded. A
  written-out document selects fewer fields than it has tokens, so this refuses no document
  that could be sent without fragments; it bounds what a resolver sees of the selection
  (Strawberry's ``info.selected_fields`` expands every spread).

A document past a limit is refused before any other rule walks it (``limits_rule`` aborts the
validation on entering the document), so the rules after it only ever see documents within
the limits. Two of graphql-core's checks cost more than linear time even then, and are bounded
here in proportion to the document's length:
- OverlappingFieldsCanBeMergedRule compares fields with the same response name pairwise
  (``{ viewer { role role ... } }``, or many fragments spread side by side): it runs with a
  budget of work per character of the document (``OverlappingFieldsWithinBudget``);
- the variable rules (NoUndefinedVariablesRule and its siblings) walk, for each operation,
  every fragment it spreads: the operations times the fragments' length is bounded.

A fragment cycle is refused by graphql-core's NoFragmentCyclesRule; while measuring, a spread
on a cycle counts as an unknown fragment (nothing), so that measuring always ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SelectionSetNode,
    ValidationContext,
)
from graphql.validation.validate import ValidationAbortedError

CAP = 10**9
"""Totals stop counting here: a chain of spreads could otherwise build numbers of any size."""

EMPTY_SELECTION = "a selection set must select at least one field"

WORK_PER_CHARACTER = 1
"""The work a check that costs more than linear time may do per character of the document:
OverlappingFieldsCanBeMergedRule's budget (its units, about 4 µs each here), and the
operations times their fragments' characters. The documents of the tests, the benchmarks and
GraphiQL use less than a tenth of a unit per character."""

MIN_WORK = 2000
"""The budget of a short document, in the same units."""


@dataclass(slots=True)
class Totals:
    depth: int = 0
    """The deepest nesting of a selection, in fields (the definition's own selections: 0)."""
    aliases: int = 0
    fields: int = 0


@dataclass(slots=True)
class _Shape:
    """One definition walked once, its fragment spreads left unresolved."""

    own: Totals = field(default_factory=Totals)
    spreads: list[tuple[str, int | None]] = field(default_factory=list)
    """Each spread's fragment and the depth it is spread at (None inside an introspection
    field, where it adds aliases and fields but no depth)."""
    empty: SelectionSetNode | None = None


def _shape(selection_set: SelectionSetNode) -> _Shape:
    shape = _Shape()
    own = shape.own
    # Iterative, so that deep nesting cannot exhaust Python's stack.
    pending: list[tuple[SelectionSetNode, int | None]] = [(selection_set, 0)]
    while pending:
        current, level = pending.pop()
        if not current.selections and shape.empty is None:
            shape.empty = current
        for selection in current.selections:
            if level is not None:
                own.depth = max(own.depth, level)
            if isinstance(selection, FieldNode):
                own.fields += 1
                if selection.alias is not None:
                    own.aliases += 1
                if selection.selection_set is not None:
                    deeper = None
                    if level is not None and not selection.name.value.startswith("__"):
                        deeper = level + 1
                    pending.append((selection.selection_set, deeper))
            elif isinstance(selection, InlineFragmentNode):
                pending.append((selection.selection_set, level))
            elif isinstance(selection, FragmentSpreadNode):
                shape.spreads.append((selection.name.value, level))
    return shape


def _combined(shape: _Shape, fragments: dict[str, Totals]) -> Totals:
    """``shape``'s totals with those of the fragments it spreads (absent: unknown or cyclic)."""
    totals = Totals(shape.own.depth, shape.own.aliases, shape.own.fields)
    for name, level in shape.spreads:
        spread = fragments.get(name)
        if spread is None:
            continue
        if level is not None:
            totals.depth = max(totals.depth, min(level + spread.depth, CAP))
        totals.aliases = min(totals.aliases + spread.aliases, CAP)
        totals.fields = min(totals.fields + spread.fields, CAP)
    return totals


@dataclass(frozen=True, slots=True)
class Measured:
    operations: list[tuple[OperationDefinitionNode, Totals]]
    empty: SelectionSetNode | None
    """A selection set that selects nothing, if any: graphql-core parses ``{ viewer { } }``."""
    fragment_characters: int
    """The length of the document's fragment definitions."""


def characters(node: Node) -> int:
    """The length of ``node``'s text. Every document here is parsed from text, with locations."""
    return node.loc.end - node.loc.start if node.loc is not None else 0


def measure(document: DocumentNode) -> Measured:
    """Each operation's totals, every definition walked once and every fragment totalled once."""
    shapes: dict[str, _Shape] = {}
    operations: list[tuple[OperationDefinitionNode, _Shape]] = []
    empty: SelectionSetNode | None = None
    fragment_characters = 0
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragment_characters += characters(definition)
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            shape = _shape(definition.selection_set)
            empty = empty or shape.empty
            if isinstance(definition, OperationDefinitionNode):
                operations.append((definition, shape))
            else:
                # A duplicate name is refused by UniqueFragmentNamesRule; the first one counts.
                shapes.setdefault(definition.name.value, shape)
    fragments: dict[str, Totals] = {}
    for name in shapes:
        _total(name, shapes, fragments)
    totals = [(op, _combined(shape, fragments)) for op, shape in operations]
    return Measured(totals, empty, fragment_characters)


def _total(name: str, shapes: dict[str, _Shape], fragments: dict[str, Totals]) -> None:
    """Totals ``name`` and every fragment it reaches, each once (depth first, iteratively)."""
    if name in fragments:
        return
    stack: list[tuple[str, int]] = [(name, 0)]
    on_stack = {name}
    while stack:
        current, index = stack[-1]
        spreads = shapes[current].spreads
        while index < len(spreads):
            child = spreads[index][0]
            index += 1
            if child in shapes and child not in fragments and child not in on_stack:
                stack[-1] = (current, index)
                stack.append((child, 0))
                on_stack.add(child)
                break
        else:
            stack.pop()
            on_stack.discard(current)
            # A spread of a fragment still on the stack is a cycle: it counts for nothing.
            fragments[current] = _combined(shapes[current], fragments)


def _count(total: int) -> str:
    return f"more than {CAP - 1}" if total >= CAP else str(total)


def work_allowed(document: DocumentNode) -> int:
    """The most work a super-linear check may do on ``document``: proportional to its length."""
    return max(MIN_WORK, WORK_PER_CHARACTER * characters(document))


def refusals(
    document: DocumentNode, *, max_depth: int, max_aliases: int, max_fields: int
) -> list[GraphQLError]:
    """Why ``document`` is refused before it is validated: empty if it is within every limit."""
    measured = measure(document)
    if measured.empty is not None:
        return [GraphQLError(EMPTY_SELECTION, measured.empty)]
    errors: list[GraphQLError] = []
    aliases = 0
    for operation, totals in measured.operations:
        name = operation.name.value if operation.name else "anonymous"
        if totals.depth > max_depth:
            message = f"'{name}' exceeds maximum operation depth of {max_depth}"
            errors.append(GraphQLError(message, operation))
        if totals.fields > max_fields:
            message = (
                f"'{name}' selects {_count(totals.fields)} fields once its fragments are"
                f" expanded; at most {max_fields} are allowed"
            )
            errors.append(GraphQLError(message, operation))
        aliases = min(aliases + totals.aliases, CAP)
    if aliases > max_aliases:
        errors.append(GraphQLError(f"{_count(aliases)} aliases found. Allowed: {max_aliases}"))
    operations = len(measured.operations)
    if operations > 1 and operations * measured.fragment_characters > work_allowed(document):
        errors.append(
            GraphQLError(
                f"the document's {operations} operations share {measured.fragment_characters}"
                " characters of fragments, more than can be checked for each of them; send"
                " fewer operations per document"
            )
        )
    return errors


def limits_rule(*, max_depth: int, max_aliases: int, max_fields: int) -> type[ASTValidationRule]:
    """A validation rule refusing documents past the limits, in time linear in the document,
    before any rule listed after it walks the document.

    Made once per settings: a rule class is part of the validation cache's key."""

    class DocumentLimits(ASTValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.refusals = refusals(
                context.document,
                max_depth=max_depth,
                max_aliases=max_aliases,
                max_fields=max_fields,
            )

        def enter_document(self, *_: Any) -> None:
            # graphql-core's way to stop a validation: its error is the last one reported.
            if not self.refusals:
                return
            *first, last = self.refusals
            for error in first:
                self.report_error(error)
            raise ValidationAbortedError(last.message, last.nodes)

    return DocumentLimits


class OverlappingFieldsWithinBudget(OverlappingFieldsCanBeMergedRule):
    """graphql-core's rule with a budget of work proportional to the document's length (its
    own default is a constant 500,000 units, about two seconds of this event loop)."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        self.rule_context.remaining_complexity_budget = work_allowed(context.document)

    def enter_selection_set(self, *args: Any) -> None:
        try:
            super().enter_selection_set(*args)
        except ValidationAbortedError:
            # Its own message says only "Validation aborted."
            raise ValidationAbortedError(OVERLAPPING_TOO_COSTLY) from None


OVERLAPPING_TOO_COSTLY = (
    "the document selects fields of the same name too many times to be checked; alias or"
    " remove the repeated fields"
)
