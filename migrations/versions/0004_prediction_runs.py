"""Record every detector run per (key slice, model version), also empty ones, in prediction_runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "prediction_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_slice_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("prediction_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_slice_id"], ["key_slices.id"], name=op.f("fk_prediction_runs_key_slice_id_key_slices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_runs")),
        sa.UniqueConstraint("key_slice_id", "model_version", name=op.f("uq_prediction_runs_key_slice_id")),
    )
    # Runs that already stored predictions keep being served from the cache; runs that found
    # nothing were never recorded in the database and will run once more.
    op.execute(
        "INSERT INTO prediction_runs (key_slice_id, model_version, created_at, threshold, prediction_count) "
        "SELECT key_slice_id, model_version, MIN(created_at), NULL, COUNT(*) "
        "FROM predictions GROUP BY key_slice_id, model_version"
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("prediction_runs")
