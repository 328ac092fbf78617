"""Volume screening: candidates joined over adjacent slices of a series, and the runs that resume it.

Revision ID: 0011_volume_candidates
Revises: 0009_team
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_volume_candidates"
down_revision: str | Sequence[str] | None = "0009_team"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "volume_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("slices", sa.Integer(), nullable=False),
        sa.Column("unreadable", sa.Integer(), nullable=False),
        sa.Column("candidate_count", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name=op.f("fk_volume_runs_series_id_series")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_runs")),
        sa.UniqueConstraint("series_id", "model_version", name=op.f("uq_volume_runs_series_id")),
    )
    op.create_table(
        "volume_candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("key_slice_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("slice_index", sa.Integer(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("slice_first", sa.Integer(), nullable=False),
        sa.Column("slice_last", sa.Integer(), nullable=False),
        sa.Column("slices", sa.JSON(), nullable=False),
        sa.Column("matches_annotation", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lesion_id", sa.Integer(), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name=op.f("fk_volume_candidates_series_id_series")
        ),
        sa.ForeignKeyConstraint(
            ["key_slice_id"], ["key_slices.id"], name=op.f("fk_volume_candidates_key_slice_id_key_slices")
        ),
        sa.ForeignKeyConstraint(
            ["lesion_id"], ["lesions.id"], name=op.f("fk_volume_candidates_lesion_id_lesions")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["users.id"], name=op.f("fk_volume_candidates_decided_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volume_candidates")),
    )
    op.create_index("ix_volume_candidates_queue", "volume_candidates", ["model_version", "status", "score"])
    op.create_index("ix_volume_candidates_series", "volume_candidates", ["series_id", "model_version"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_volume_candidates_series", table_name="volume_candidates")
    op.drop_index("ix_volume_candidates_queue", table_name="volume_candidates")
    op.drop_table("volume_candidates")
    op.drop_table("volume_runs")
