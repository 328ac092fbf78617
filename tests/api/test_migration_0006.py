"""Migration 0006 moves a database with review work in the old shape into the lesion-facts model intact."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text

from app.db.models import Lesion, UndoItem
from app.db.session import _alembic_config, make_engine, make_session_factory
from tests.api.conftest import _pg_execute, _pg_url
from tests.components import postgres_server, require_component


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database migrated only up to 0005 (before the lesion facts)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        make_engine(url).dispose()
        command.upgrade(_alembic_config(url), "0005")
        yield url
        return
    server, how = postgres_server()
    require_component("postgresql", server is not None, how)
    assert server is not None
    name = f"lr_mig_{uuid.uuid4().hex[:10]}"
    _pg_execute(server, f'CREATE DATABASE "{name}"')
    try:
        url = _pg_url(server, name)
        command.upgrade(_alembic_config(url), "0005")
        yield url
    finally:
        _pg_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _seed(url: str) -> None:
    """One key slice: an edited csv lesion, a flagged one, a dataset-noisy one, a drawn and a deleted one."""
    engine = make_engine(url)
    j = json.dumps
    with engine.begin() as c:
        c.execute(
            text("INSERT INTO users (id, name, role, created_at) VALUES (1, 'ann', 'reviewer', '2026-01-01')")
        )
        c.execute(text("INSERT INTO patients (id, gender) VALUES (1, 'F')"))
        c.execute(text("INSERT INTO studies (id, patient_id, study_index, age) VALUES (1, 1, 1, 60)"))
        c.execute(
            text(
                "INSERT INTO series (id, study_id, series_index, folder, stored_slices)"
                " VALUES (1, 1, 1, 'f', :s)"
            ),
            {"s": j([108])},
        )
        c.execute(
            text(
                "INSERT INTO key_slices (id, file_name, series_id, patient_index, study_index, series_index,"
                " key_slice_index, split, spacing_x, spacing_y, spacing_z, image_width, image_height,"
                " dicom_min, dicom_max, slice_first, slice_last, gender, version, lesion_count, max_size_mm,"
                " lesion_type_mask, noisy, prediction_count, unreviewed_predictions)"
                " VALUES (1, '000001_01_01_108.png', 1, 1, 1, 1, 108, 3, 0.5, 0.5, 5, 128, 128, -175, 275,"
                " 106, 110, 'F', 3, 4, 99, 0, true, 0, 0)"
            )
        )
        for i in (1, 2, 3):
            c.execute(
                text(
                    "INSERT INTO original_lesions (id, key_slice_id, row_number, measurement_coordinates,"
                    " bounding_box, lesion_diameters_px, normalized_location, coarse_lesion_type,"
                    " possibly_noisy, slice_range, spacing_mm, image_size, dicom_window, patient_gender,"
                    " patient_age, train_val_test)"
                    " VALUES (:i, 1, :i, :r, :b, :d, :loc, 4, :n, :sr, :sp, :sz, :w, 'F', 60, 3)"
                ),
                {
                    "i": i,
                    "r": j([11, 21, 51, 21, 31, 11, 31, 31]),
                    "b": j([6, 6, 56, 36]),
                    "d": j([40, 20]),
                    "loc": j([0.5, 0.5, 0.5]),
                    "n": 1 if i == 3 else 0,
                    "sr": j([106, 110]),
                    "sp": j([0.5, 0.5, 5]),
                    "sz": j([128, 128]),
                    "w": j([-175, 275]),
                },
            )
        rows = [
            # id, original, origin, source, review, recist, box, noisy, reason, text
            (
                1,
                1,
                "original",
                "csv",
                "edited",
                [13, 21, 53, 21, 33, 11, 33, 31],
                [8, 6, 58, 36],
                False,
                None,
                None,
            ),
            (
                2,
                2,
                "original",
                "csv",
                "flagged",
                [11, 21, 51, 21, 31, 11, 31, 31],
                [6, 6, 56, 36],
                False,
                "other",
                "x",
            ),
            (
                3,
                3,
                "original",
                "csv",
                "unreviewed",
                [11, 21, 51, 21, 31, 11, 31, 31],
                [6, 6, 56, 36],
                True,
                None,
                None,
            ),
            (4, None, "added", "manual", "confirmed", None, [70, 70, 90, 100], False, None, None),
            (5, None, "added", "prediction", "deleted", None, [10, 90, 30, 110], False, None, None),
        ]
        for lid, orig, origin, source, review, recist, box, noisy, reason, note in rows:
            c.execute(
                text(
                    "INSERT INTO lesions (id, key_slice_id, original_id, origin, source, review, recist, box,"
                    " lesion_type, slice_index, size_mm, noisy, flag_reason, flag_text, version,"
                    " updated_by_id, updated_at) VALUES (:id, 1, :o, :origin, :source, :review, :r, :b, 4,"
                    " 108, 1, :noisy, :reason, :note, 2, 1, '2026-01-02')"
                ),
                {
                    "id": lid,
                    "o": orig,
                    "origin": origin,
                    "source": source,
                    "review": review,
                    "r": None if recist is None else j(recist),
                    "b": j(box),
                    "noisy": noisy,
                    "reason": reason,
                    "note": note,
                },
            )
        # A prediction that points at a lesion: SQLite rebuilds the lesions table under it.
        c.execute(
            text(
                "INSERT INTO predictions (id, key_slice_id, model_version, box, score, status,"
                " matches_annotation, lesion_id, version, created_at)"
                " VALUES (1, 1, 'm', :b, 0.9, 'accepted', false, 5, 1, '2026-01-02')"
            ),
            {"b": j([10, 90, 30, 110])},
        )
        c.execute(
            text(
                "INSERT INTO audit_log (id, at, user_id, user_name, action, key_slice_id, lesion_id)"
                " VALUES (1, '2026-01-02', 1, 'ann', 'edit', 1, 1)"
            )
        )
        c.execute(
            text(
                "INSERT INTO undo_items (id, audit_id, user_id, key_slice_id, state, changed_at)"
                " VALUES (1, 1, 1, 1, 'done', '2026-01-02')"
            )
        )
    engine.dispose()


def test_upgrade_keeps_every_reviewer_fact_and_moves_csv_geometry_to_the_0_based_frame(
    old_database: str,
) -> None:
    _seed(old_database)
    command.upgrade(_alembic_config(old_database), "head")
    engine = make_engine(old_database)
    try:
        with make_session_factory(engine)() as s:
            les = {le.id: le for le in s.execute(select(Lesion)).scalars()}
            # csv lesions were stored in the file's 1-based frame; drawn ones were already 0-based.
            assert les[1].box == [7, 5, 57, 35] and les[1].recist == [12, 20, 52, 20, 32, 10, 32, 30]
            assert les[4].box == [70, 70, 90, 100]
            assert [les[i].origin for i in range(1, 6)] == ["csv", "csv", "csv", "drawn", "prediction"]
            assert (les[2].flag_reason, les[2].flag_note, les[2].flagged_by_id) == ("other", "x", 1)
            assert les[3].flag_reason == "dataset" and les[1].flag_reason is None
            assert (
                les[4].confirmed_by_id == 1 and les[4].created_by_id == 1 and les[1].confirmed_by_id is None
            )
            assert les[5].deleted and not les[4].deleted
            # Sizes become the long axis in mm (spacing 0.5): 40 px long axis -> 20 mm; box 20x30 -> 10 mm.
            assert les[1].size_mm == pytest.approx(20.0) and les[4].size_mm == pytest.approx(10.0)
            max_size = s.execute(text("SELECT max_size_mm FROM key_slices WHERE id = 1")).scalar_one()
            assert max_size == pytest.approx(20.0)
            # Old-shape snapshots cannot be undone: their stack entries are closed, the history stays.
            assert s.get_one(UndoItem, 1).state == "dead"
            assert s.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == 1
            assert s.execute(text("SELECT lesion_id FROM predictions WHERE id = 1")).scalar_one() == 5
            if s.get_bind().dialect.name == "sqlite":
                assert s.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()
