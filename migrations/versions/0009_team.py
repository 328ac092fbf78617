"""Team review: assignments, per-reader reads, adjudications (app.review.team).

Revision ID: 0009_team
Revises: 0010_followup
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_team"
down_revision: str | Sequence[str] | None = "0010_followup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "team_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("reader_ids", sa.JSON(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_team_assignments_created_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_assignments")),
    )
    op.create_table(
        "team_reads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("key_slice_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("reader_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=True),
        sa.Column("marks", sa.JSON(), nullable=True),
        sa.Column("undo", sa.JSON(), nullable=False),
        sa.Column("redo", sa.JSON(), nullable=False),
        sa.Column("claimed_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["team_assignments.id"],
            name=op.f("fk_team_reads_assignment_id_team_assignments"),
        ),
        sa.ForeignKeyConstraint(
            ["key_slice_id"], ["key_slices.id"], name=op.f("fk_team_reads_key_slice_id_key_slices")
        ),
        sa.ForeignKeyConstraint(["reader_id"], ["users.id"], name=op.f("fk_team_reads_reader_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_reads")),
        sa.UniqueConstraint(
            "assignment_id", "key_slice_id", "slot", name=op.f("uq_team_reads_assignment_id")
        ),
        sa.UniqueConstraint(
            "assignment_id", "key_slice_id", "reader_id", name="uq_team_reads_one_per_reader"
        ),
    )
    op.create_index("ix_team_reads_next", "team_reads", ["assignment_id", "status", "key_slice_id"])
    op.create_index("ix_team_reads_reader", "team_reads", ["reader_id", "status"])
    op.create_index("ix_team_reads_progress", "team_reads", ["assignment_id", "reader_id", "status"])
    op.create_table(
        "team_adjudications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("key_slice_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("disagreements", sa.JSON(), nullable=False),
        sa.Column("consensus", sa.JSON(), nullable=True),
        sa.Column("applied", sa.JSON(), nullable=False),
        sa.Column("resolved_by_id", sa.Integer(), nullable=True),
        sa.Column("resolved_at", TZ, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["team_assignments.id"],
            name=op.f("fk_team_adjudications_assignment_id_team_assignments"),
        ),
        sa.ForeignKeyConstraint(
            ["key_slice_id"], ["key_slices.id"], name=op.f("fk_team_adjudications_key_slice_id_key_slices")
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by_id"], ["users.id"], name=op.f("fk_team_adjudications_resolved_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_adjudications")),
        sa.UniqueConstraint(
            "assignment_id", "key_slice_id", name=op.f("uq_team_adjudications_assignment_id")
        ),
    )
    op.create_index("ix_team_adjudications_status", "team_adjudications", ["status", "id"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_team_adjudications_status", table_name="team_adjudications")
    op.drop_table("team_adjudications")
    op.drop_index("ix_team_reads_progress", table_name="team_reads")
    op.drop_index("ix_team_reads_reader", table_name="team_reads")
    op.drop_index("ix_team_reads_next", table_name="team_reads")
    op.drop_table("team_reads")
    op.drop_table("team_assignments")
