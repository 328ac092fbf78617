"""Evaluation runs carry their split and reference (original/corrected): the database is their one store.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # The server defaults only fill rows that might already exist; the models set both columns.
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("split", sa.String(length=8), nullable=False, server_default="all"))
        batch_op.add_column(
            sa.Column("against", sa.String(length=16), nullable=False, server_default="original")
        )
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.alter_column("split", server_default=None)
        batch_op.alter_column("against", server_default=None)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.drop_column("against")
        batch_op.drop_column("split")
