"""Query and Mutation resolvers: parse arguments, call a service, translate the row."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext, Info

from app.graphql import order_events, scalars
from app.graphql.compiled.events import EventsExecutionContext
from app.graphql.context import Context
from app.graphql.errors import log_errors
from app.graphql.extensions import extensions_for
from app.graphql.hints import SchemaHints
from app.graphql.positions import POSITIONS_DESCRIPTION, Position, resolve_positions
from app.graphql.suggestions import SuggestInputFields
from app.graphql.types import (
    ExecutionAction,
    ExecutionLog,
    ExecutionLogConnection,
    ExecutionLogEdge,
    Fill,
    Order,
    OrderConnection,
    OrderEdge,
    OrderFilter,
    PageInfo,
    RecordFillInput,
    ReplaceOrderInput,
    SubmitOrderInput,
    Viewer,
)
from app.orders import pages, queries, service, validation, writers
from app.orders.pages import LOGS, ORDERS, Cursor, first_or_default
from app.settings import Settings

_REASON = f"At most {validation.MAX_REASON_LENGTH} characters, kept in the audit trail."


@strawberry.type
class Query:
    @strawberry.field
    async def viewer(self, info: Info[Context, None]) -> Viewer:
        # Asked of PostgreSQL itself, inside the request's transaction.
        return Viewer.from_row(await queries.viewer(info.context.tx))

    @strawberry.field(
        description="Null when the order does not exist or is not visible to the caller"
        " (the two are indistinguishable)."
    )
    async def order(self, info: Info[Context, None], id: UUID) -> Order | None:
        row = await queries.order_by_id(info.context.tx, id)
        return Order.from_row(row) if row is not None else None

    @strawberry.field(
        description=f"Newest first (created_at DESC, then id). first: 1..{pages.MAX_PAGE}."
    )
    async def orders(
        self,
        info: Info[Context, None],
        first: int | None = ORDERS.default_first,
        after: str | None = None,
        filter: OrderFilter | None = None,
    ) -> OrderConnection:
        symbol = filter.symbol if filter is not None else None
        page = await queries.orders_page(
            info.context.tx,
            first=first_or_default(first, ORDERS.default_first),
            after=Cursor.decode(after) if after is not None else None,
            trader_id=filter.trader_id if filter else None,
            statuses=[s.value for s in filter.status] if filter and filter.status else None,
            symbol=validation.normalized(symbol) if symbol is not None else None,
            side=filter.side.value if filter and filter.side else None,
        )
        edges = [
            OrderEdge(
                cursor=ORDERS.cursor_of(row),
                node=Order.from_row(row),
            )
            for row in page.rows
        ]
        return OrderConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
        )

    @strawberry.field(description=f"Newest first. first: 1..{pages.MAX_PAGE}.")
    async def execution_logs(
        self,
        info: Info[Context, None],
        order_id: UUID | None = None,
        action: ExecutionAction | None = None,
        first: int | None = LOGS.default_first,
        after: str | None = None,
    ) -> ExecutionLogConnection:
        page = await queries.logs_page(
            info.context.tx,
            first=first_or_default(first, LOGS.default_first),
            after=Cursor.decode(after) if after is not None else None,
            order_id=order_id,
            action=action.value if action else None,
        )
        edges = [
            ExecutionLogEdge(
                cursor=LOGS.cursor_of(row),
                node=ExecutionLog.from_row(row),
            )
            for row in page.rows
        ]
        return ExecutionLogConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
        )

    positions: list[Position] = strawberry.field(
        resolver=resolve_positions, description=POSITIONS_DESCRIPTION
    )

    @strawberry.field(
        description="The cursor of the newest order event the caller may see, read in the"
        " same snapshot as the rest of the document (null before any): subscribe with"
        " orderEvents(after:) to miss nothing after what the document read."
    )
    async def events_cursor(self, info: Info[Context, None]) -> str | None:
        return await order_events.events_cursor(info)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="A trader submits an order for themself (role authenticated). Same"
        " clientOrderId and same content again: the existing order, nothing new written."
    )
    async def submit_order(self, info: Info[Context, None], input: SubmitOrderInput) -> Order:
        row = await service.submit_order(
            writers.InTransaction(info.context.tx),
            symbol=input.symbol,
            side=input.side.value,
            quantity=input.quantity,
            order_type=input.order_type,
            price=input.price,
            stop_loss=input.stop_loss,
            take_profit=input.take_profit,
            expires_at=input.expires_at,
            client_order_id=input.client_order_id,
            stop_price=input.stop_price,
            time_in_force=input.time_in_force,
        )
        return Order.from_row(row)

    @strawberry.mutation(description="The owner cancels a PENDING or PARTIAL order.")
    async def cancel_order(
        self,
        info: Info[Context, None],
        id: UUID,
        reason: Annotated[str | None, strawberry.argument(description=_REASON)] = None,
    ) -> Order:
        return Order.from_row(
            await service.cancel_order(
                writers.InTransaction(info.context.tx), order_id=id, reason=reason
            )
        )

    @strawberry.mutation(
        description="The owner replaces a working (PENDING or PARTIAL) order: a new order is"
        " created with replacesId set, and the old one becomes REPLACED once the venue"
        " confirms. If the old order fills first, the replacement is REJECTED and the old"
        " order's fills stand. Returns the new order."
    )
    async def replace_order(
        self, info: Info[Context, None], id: UUID, input: ReplaceOrderInput
    ) -> Order:
        changes = {
            name: getattr(input, name)
            for name in service.REPLACEABLE
            if getattr(input, name) is not strawberry.UNSET
        }
        return Order.from_row(
            await service.replace_order(info.context.tx, order_id=id, changes=changes)
        )

    @strawberry.mutation(description="Execution engine only (role service_role).")
    async def approve_order(self, info: Info[Context, None], id: UUID) -> Order:
        return Order.from_row(await service.approve_order(info.context.tx, order_id=id))

    @strawberry.mutation(description="Execution engine only (role service_role).")
    async def record_fill(self, info: Info[Context, None], input: RecordFillInput) -> Fill:
        row = await service.record_fill(
            info.context.tx,
            order_id=input.order_id,
            quantity_filled=input.quantity_filled,
            price_at_fill=input.price_at_fill,
            venue=input.venue,
            commission=input.commission,
            timestamp=input.timestamp,
        )
        return Fill.from_row(row)

    @strawberry.mutation(description="Execution engine only (role service_role).")
    async def reject_order(
        self,
        info: Info[Context, None],
        id: UUID,
        reason: Annotated[str, strawberry.argument(description=_REASON)],
        error_code: Annotated[
            str | None,
            strawberry.argument(
                description=f"Optional; at most {validation.MAX_ERROR_CODE_LENGTH} characters"
                " (the venue's or the risk check's code, e.g. INSUFFICIENT_FUNDS)."
            ),
        ] = None,
    ) -> Order:
        row = await service.reject_order(
            info.context.tx, order_id=id, reason=reason, error_code=error_code
        )
        return Order.from_row(row)


class Schema(strawberry.Schema):
    hints: SchemaHints | None = None
    """Set when introspection is off: errors then name no more of the schema than the
    document did (graphql/hints.py)."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry logs every error at ERROR with its traceback, a client's typo included;
        # graphql/errors.py logs by whose fault it is.
        context = execution_context.context if execution_context is not None else None
        log_errors(errors, context.request_id if isinstance(context, Context) else "-")
        if self.hints is not None:
            # Every result's errors pass here before any transport shapes them (HTTP, both
            # WebSocket protocols); the log above keeps the whole message for the operator.
            variables = execution_context.variables if execution_context is not None else None
            errors[:] = [self.hints.concealed(error, variables) for error in errors]


def build_schema(settings: Settings, subscription: type | None = None) -> strawberry.Schema:
    schema = Schema(
        query=Query,
        mutation=Mutation,
        subscription=subscription,
        extensions=[
            *extensions_for(settings),
            # Suggestions name the schema's fields: only where the schema is not hidden.
            *([SuggestInputFields] if settings.introspection else []),
        ],
        scalar_overrides=scalars.OVERRIDES,
        execution_context_class=EventsExecutionContext,
    )
    if not settings.introspection:
        schema.hints = SchemaHints(schema._schema)
    return schema
