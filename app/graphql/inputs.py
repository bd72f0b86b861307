"""What the API accepts as text from a client, and how much of a client's value it repeats.

PostgreSQL's text cannot hold a NUL character, and UTF-8 (the wire and the
database encoding) cannot hold a lone surrogate, which JSON's ``\\ud800`` escape
makes. Either reaching a statement fails inside the driver as an internal error.
So every string a client sends is checked before execution, at the two doors by
which text enters an operation:

- the variables, before graphql-core coerces them (``InputCheckingExecutionContext``,
  used for queries, mutations and subscriptions alike);
- the document's string literals (``TextLiteralsRule``, a validation rule, so its
  verdict is cached with the document's other validation results).

Both refuse with BAD_USER_INPUT naming the argument or input field. A lone
surrogate in the document's own text never gets this far: the HTTP body is
refused before (graphql/body.py), and graphql-core's lexer refuses one elsewhere.

Error messages quote a client's value through ``excerpt``, never whole.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    ObjectFieldNode,
    OperationDefinitionNode,
    StringValueNode,
    ValidationRule,
    VariableNode,
    visit,
)
from graphql.language import Visitor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

EXCERPT_CHARS = 40
"""The most of a client's value that an error message or a log line repeats."""

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None if it can."""
    match = _NOT_TEXT.search(value)
    if match is None:
        return None
    if match.group() == "\x00":
        return "must not contain a NUL character (\\u0000)"
    return "must be valid Unicode (it contains a lone surrogate)"


def printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so that it can be encoded (logs, responses)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """A client's value as an error message may quote it: a short, printable prefix."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return printable(text)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(header: str | None) -> str:
    """The caller's X-Request-Id if it looks like one (it is logged and echoed), else a new id."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def refused_text(field: str, problem: str, nodes: Any = None) -> GraphQLError:
    return GraphQLError(f"{field} {problem}", nodes, extensions={"field": field})


# --- variables ---------------------------------------------------------------------------------


def _bad_strings(
    value: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            yield path, problem
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _bad_strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _bad_strings(item, (*path, index))


def _arguments_using(document: DocumentNode) -> dict[str, str]:
    """The argument or input field each variable is first passed to directly, in one walk
    (a walk per variable would cost the document's size times its variables)."""
    found: dict[str, str] = {}

    class Usage(Visitor):
        def enter_variable(self, node: VariableNode, key: Any, parent: Any, *_: Any) -> None:
            if isinstance(parent, ArgumentNode | ObjectFieldNode):
                found.setdefault(node.name.value, parent.name.value)

    visit(document, Usage())
    return found


def variable_errors(document: DocumentNode, variables: dict[str, Any]) -> list[GraphQLError]:
    """One error per variable holding text that cannot be stored, naming the field it feeds."""
    errors: list[GraphQLError] = []
    arguments: dict[str, str] | None = None
    defined = {
        definition.variable.name.value
        for operation in document.definitions
        if isinstance(operation, OperationDefinitionNode)
        for definition in operation.variable_definitions or ()
    }
    for name, value in variables.items():
        if name not in defined:
            continue  # graphql-core ignores a variable no operation declares
        for path, problem in _bad_strings(value, ()):
            names = [part for part in path if isinstance(part, str)]
            if not names and arguments is None:
                arguments = _arguments_using(document)
            field = names[-1] if names else (arguments or {}).get(name, name)
            errors.append(refused_text(printable(field), problem))
            break  # one error per variable is enough to fix it
    return errors


class InputCheckingExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, refusing variables that hold text no column can store."""

    @classmethod
    def build(  # graphql-core's long signature, passed through
        cls,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: dict[str, Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if isinstance(raw_variable_values, dict):
            errors = variable_errors(document, raw_variable_values)
            if errors:
                return errors
        return super().build(
            schema, document, root_value, context_value, raw_variable_values, *args, **kwargs
        )


# --- literals ----------------------------------------------------------------------------------


class TextLiteralsRule(ValidationRule):
    """Refuses a string literal holding a NUL character (``"\\u0000"``), naming its field."""

    def enter_string_value(
        self, node: StringValueNode, key: Any, parent: Any, path: Any, ancestors: Any
    ) -> None:
        problem = text_problem(node.value)
        if problem is None:
            return
        field = "value"
        # Lazily, nearest first: the owner is almost always the parent, and copying every
        # ancestor for each literal would cost the document's depth per literal.
        for ancestor in itertools.chain((parent,), reversed(ancestors)):
            if isinstance(ancestor, ArgumentNode | ObjectFieldNode):
                field = ancestor.name.value
                break
        self.report_error(refused_text(field, problem, node))
