"""Follow-up lesion graph: links between lesions of a patient's studies (matched, confirmed, broken).

Revision ID: 0010_followup
Revises: 0007
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010_followup"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "lesion_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_index", sa.Integer(), nullable=False),
        sa.Column("from_lesion_id", sa.Integer(), nullable=False),
        sa.Column("to_lesion_id", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["from_lesion_id"], ["lesions.id"], name=op.f("fk_lesion_links_from_lesion_id_lesions")
        ),
        sa.ForeignKeyConstraint(
            ["to_lesion_id"], ["lesions.id"], name=op.f("fk_lesion_links_to_lesion_id_lesions")
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["users.id"], name=op.f("fk_lesion_links_updated_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lesion_links")),
        sa.UniqueConstraint("from_lesion_id", "to_lesion_id", name=op.f("uq_lesion_links_from_lesion_id")),
    )
    op.create_index(op.f("ix_lesion_links_patient_index"), "lesion_links", ["patient_index"])
    op.create_index(op.f("ix_lesion_links_from_lesion_id"), "lesion_links", ["from_lesion_id"])
    op.create_index(op.f("ix_lesion_links_to_lesion_id"), "lesion_links", ["to_lesion_id"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_lesion_links_to_lesion_id"), table_name="lesion_links")
    op.drop_index(op.f("ix_lesion_links_from_lesion_id"), table_name="lesion_links")
    op.drop_index(op.f("ix_lesion_links_patient_index"), table_name="lesion_links")
    op.drop_table("lesion_links")
