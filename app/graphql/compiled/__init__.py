"""Hot read queries answered by one SQL statement that builds the response JSON in PostgreSQL.

Resolving GraphQL field by field costs far more CPU in Python than the database spends on a
page of orders. For the shapes the frontend asks over and over (``orders``, ``order``,
``executionLogs``, ``viewer`` with plain field selections), the validated document is
compiled once into a single statement whose ``json_build_object`` tree *is* the ``data`` of
the response.

- compiler.py: document -> statement, from the field registry (orders/fields.py) and the
  lists' ordering and cursor (orders/pages.py), so both paths answer from the same facts;
- mutations.py: submitOrder and cancelOrder documents -> one autocommit statement calling
  migration 007's functions, with the service's own rules in Python;
- plans.py: the documents learned so far (the plan cache);
- http.py: the HTTP shortcut graphql/endpoint.py tries before Strawberry.

Nothing is skipped:
- a document is compiled only after it went through the normal path once with every limit
  and validation rule and produced no errors; those checks depend on the document text
  alone, so their verdict holds for its reuse;
- variables are coerced per request by graphql-core, and arguments go through the same
  checks as the resolvers (first, cursors, symbol); anything unusual is left to the
  resolvers, which report the error;
- the statement runs in the caller's transaction, so row level security applies to every
  table it reads, exactly as for the resolvers.

Documents with fragments, directives, other mutations, subscriptions or fields the compiler
does not know are simply not compiled. A compiler bug (compiling or binding raises) fails the
request under ``COMPILED_QUERIES_STRICT`` (the tests), and is otherwise logged, counted
(``order_api_compiled_queries_total{outcome="fallback"}``) and answered by the resolvers.
"""

from app.graphql.compiled.compiler import CompiledQuery, compile_query
from app.graphql.compiled.http import CompiledPath
from app.graphql.compiled.plans import Plans

__all__ = ["CompiledPath", "CompiledQuery", "Plans", "compile_query"]
