"""One home for a lesion's state: independent facts instead of one review string, 0-based geometry.

The `review` string (unreviewed|confirmed|flagged|edited|deleted), `source` and `noisy` become independent
columns (flag with reason, note, who and when; confirmation with who and when; deletion; creation), origin
becomes csv|drawn|prediction, and lesions imported from DL_info.csv move to the 0-based pixel frame (the file
counts from 1). Sizes become the long axis in mm. Undo stacks recorded in the old snapshot shape are closed
(history stays readable; steps made before this migration can no longer be undone).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

"""

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAD = 5.0  # the dataset's box padding, as app.deeplesion.schema.BOX_PADDING_PX at the time of writing


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def _long_axis_px(recist: list[float] | None, box: list[float]) -> float:
    if recist is not None:
        return max(
            math.hypot(recist[2] - recist[0], recist[3] - recist[1]),
            math.hypot(recist[6] - recist[4], recist[7] - recist[5]),
        )
    return max(0.0, box[2] - box[0] - 2 * _PAD, box[3] - box[1] - 2 * _PAD)


def upgrade() -> None:
    """Upgrade schema and move the data."""
    with op.batch_alter_table("original_lesions", schema=None) as batch_op:
        batch_op.alter_column("measurement_coordinates", existing_type=sa.JSON(), nullable=True)
        batch_op.alter_column("lesion_diameters_px", existing_type=sa.JSON(), nullable=True)
    with op.batch_alter_table("lesions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flag_note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("flagged_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("confirmed_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("created_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_lesions_flagged_by_id_users"), "users", ["flagged_by_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_lesions_confirmed_by_id_users"), "users", ["confirmed_by_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_lesions_created_by_id_users"), "users", ["created_by_id"], ["id"]
        )

    conn = op.get_bind()
    spacing = dict(conn.execute(sa.text("SELECT id, spacing_x FROM key_slices")).all())
    rows = conn.execute(
        sa.text(
            "SELECT id, key_slice_id, origin, source, review, recist, box, noisy, flag_reason, flag_text,"
            " updated_by_id, updated_at FROM lesions"
        )
    ).all()
    update = sa.text(
        "UPDATE lesions SET origin = :origin, recist = :recist, box = :box, size_mm = :size_mm,"
        " flag_reason = :flag_reason, flag_note = :flag_note, flagged_by_id = :flagged_by_id,"
        " flagged_at = :flagged_at, confirmed_by_id = :confirmed_by_id, confirmed_at = :confirmed_at,"
        " deleted = :deleted, created_by_id = :created_by_id, created_at = :created_at WHERE id = :id"
    ).bindparams(sa.bindparam("recist", type_=sa.JSON()), sa.bindparam("box", type_=sa.JSON()))
    for r in rows:
        recist, box = _json(r.recist), _json(r.box)
        csv_row = r.origin == "original"
        if csv_row:  # imported as the file's 1-based values
            recist = None if recist is None else [float(v) - 1.0 for v in recist]
            box = [float(v) - 1.0 for v in box]
        flagged = r.review == "flagged"
        reason = r.flag_reason if flagged else ("dataset" if r.noisy else None)
        confirmed = r.review == "confirmed" or (not csv_row and r.review != "deleted")
        conn.execute(
            update,
            {
                "id": r.id,
                "origin": "csv" if csv_row else ("prediction" if r.source == "prediction" else "drawn"),
                "recist": recist,
                "box": box,
                "size_mm": _long_axis_px(recist, box) * float(spacing[r.key_slice_id]),
                "flag_reason": reason,
                "flag_note": r.flag_text if flagged else None,
                "flagged_by_id": r.updated_by_id if flagged else None,
                "flagged_at": r.updated_at if flagged else None,
                "confirmed_by_id": r.updated_by_id if confirmed else None,
                "confirmed_at": r.updated_at if confirmed else None,
                "deleted": r.review == "deleted",
                "created_by_id": None if csv_row else r.updated_by_id,
                "created_at": None if csv_row else r.updated_at,
            },
        )
    conn.execute(
        sa.text(
            "UPDATE key_slices SET max_size_mm = COALESCE((SELECT MAX(l.size_mm) FROM lesions l"
            " WHERE l.key_slice_id = key_slices.id AND l.deleted = :no), 0)"
        ),
        {"no": False},
    )
    conn.execute(sa.text("UPDATE undo_items SET state = 'dead' WHERE state IN ('done', 'undone')"))

    with op.batch_alter_table("lesions", schema=None) as batch_op:
        batch_op.drop_index("ix_lesions_key_slice_review")
        batch_op.drop_column("review")
        batch_op.drop_column("source")
        batch_op.drop_column("noisy")
        batch_op.drop_column("flag_text")
        batch_op.create_index("ix_lesions_key_slice_deleted", ["key_slice_id", "deleted"], unique=False)


def downgrade() -> None:
    """Not supported: the old single review string cannot hold a flagged and edited lesion."""
    raise NotImplementedError("0006 cannot be downgraded: restore a backup taken before the upgrade")
