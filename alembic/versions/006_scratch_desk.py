"""Scratch: orders.desk (a throwaway field, reverted)

Revision ID: 006
Revises: 005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "006"
down_revision: str | None = "005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE public.orders ADD COLUMN desk text")


def downgrade() -> None:
    op.execute("ALTER TABLE public.orders DROP COLUMN desk")
