"""Detector predictions carry a proposed RECIST measurement (long axis, short axis end points).

Revision ID: 0012_prediction_recist
Revises: 0011_volume_candidates
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0012_prediction_recist"
down_revision: str | Sequence[str] | None = "0011_volume_candidates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Nullable: the runs stored before this revision have boxes only.
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("recist", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("recist")
