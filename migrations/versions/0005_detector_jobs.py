"""Detector runs as background jobs (detector_jobs: evaluations, screenings); a stored FROC links to its job.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "detector_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("progress_done", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("active_lock", sa.Integer(), nullable=True),
        sa.Column("worker_host", sa.String(length=255), nullable=False),
        sa.Column("worker_pid", sa.Integer(), nullable=False),
        sa.Column("worker_token", sa.String(length=32), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detector_jobs")),
        sa.UniqueConstraint("active_lock", name=op.f("uq_detector_jobs_active_lock")),
    )
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_evaluation_runs_job_id"), ["job_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_evaluation_runs_job_id_detector_jobs"), "detector_jobs", ["job_id"], ["id"]
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("evaluation_runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_evaluation_runs_job_id_detector_jobs"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_evaluation_runs_job_id"), type_="unique")
        batch_op.drop_column("job_id")
    op.drop_table("detector_jobs")
