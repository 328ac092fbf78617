"""Series-level facts the slice renderer needs: spacing and the DICOM window from the imported CSV."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, Series


def series_display_info(
    *, session: Session, series_folder: str
) -> tuple[tuple[float, float, float], tuple[float, float]] | None:
    """Spacing (x, y, z mm) and DICOM window (min, max HU) of a series' first key slice, or None."""
    query = (
        select(
            KeySlice.spacing_x, KeySlice.spacing_y, KeySlice.spacing_z, KeySlice.dicom_min, KeySlice.dicom_max
        )
        .join(Series, KeySlice.series_id == Series.id)
        .where(Series.folder == series_folder)
        .order_by(KeySlice.id)
        .limit(1)
    )
    row = session.execute(query).first()
    if row is None:
        return None
    sx, sy, sz, lo, hi = row
    return (float(sx), float(sy), float(sz)), (float(lo), float(hi))


def key_image_stored(*, session: Session, file_name: str) -> bool | None:
    """Whether a key slice's own image is on disk (the import's stored_slices); None for an unknown name."""
    row = session.execute(
        select(KeySlice.key_slice_index, Series.stored_slices)
        .join(Series, KeySlice.series_id == Series.id)
        .where(KeySlice.file_name == file_name)
    ).first()
    if row is None:
        return None
    index, stored = row
    return int(index) in {int(i) for i in (stored or [])}
