"""Review services without HTTP: racing writers, box/RECIST helpers, type masks, sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.db.models import AuthSession, Lesion
from app.db.session import make_engine, make_session_factory, upgrade_database
from app.review import corrections
from app.review.errors import EditConflictError, InvalidInputError
from app.review.importer import import_dataset, pack_raw, unpack_raw
from app.review.summary import iou, type_mask, types_from_mask
from app.review.users import create_user, resolve_session, start_session
from tests.api.review_data import build_review_dataset


@pytest.fixture
def factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    build_review_dataset(data)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    import_dataset(engine=engine, data_dir=data)
    yield make_session_factory(engine)
    engine.dispose()


def test_racing_writers_with_the_same_version_one_wins_one_gets_a_conflict(factory) -> None:  # type: ignore[no-untyped-def]
    with factory() as s:
        alice = create_user(session=s, name="alice", password="password-a", role="reviewer")
        bob = create_user(session=s, name="bob", password="password-b", role="reviewer")
        s.commit()
        lesion_id, version = s.execute(select(Lesion.id, Lesion.version).limit(1)).one()
    first, second = factory(), factory()
    # Both load the lesion before either writes, as two requests arriving together would.
    first.get(Lesion, lesion_id)
    second.get(Lesion, lesion_id)
    corrections.flag(session=first, user=alice, lesion_id=lesion_id, version=version, reason="duplicate")
    with pytest.raises(EditConflictError) as err:
        corrections.confirm(session=second, user=bob, lesion_id=lesion_id, version=version)
    assert err.value.changed_by == "alice" and err.value.current["review"] == "flagged"
    with factory() as s:
        assert s.get_one(Lesion, lesion_id).flag_reason == "duplicate"


def test_stale_write_that_passed_the_check_is_caught_at_flush(factory) -> None:  # type: ignore[no-untyped-def]
    with factory() as s:
        user = create_user(session=s, name="carl", password="password-c", role="reviewer")
        s.commit()
        lesion_id, version = s.execute(select(Lesion.id, Lesion.version).limit(1)).one()
    racing = factory()
    racing.get(Lesion, lesion_id)  # loaded at `version`
    with factory() as other:  # another writer commits in between, bypassing the service
        other.execute(
            update(Lesion).where(Lesion.id == lesion_id).values(version=version + 1, confirmed_by_id=user.id)
        )
        other.commit()
    # The in-memory check still sees the old version; the versioned UPDATE must refuse it.
    with pytest.raises(EditConflictError):
        corrections.flag(
            session=racing, user=user, lesion_id=lesion_id, version=version, reason="other", note="x"
        )
    with factory() as s:
        lesion = s.get_one(Lesion, lesion_id)
        assert lesion.confirmed_by_id == user.id and lesion.flag_reason is None


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        # Inclusive pixels, as the dataset's FROC: [0,10] spans 11 px, the overlap [5,10] 6 px.
        ([0, 0, 10, 10], [5, 0, 15, 10], 66 / 176),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),
    ],
)
def test_iou(a: list[float], b: list[float], expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)


def test_type_mask_round_trips_every_type() -> None:
    for types in ([-1], [1, 8], [-1, 2, 3, 4, 5, 6, 7]):
        assert types_from_mask(type_mask(types)) == sorted(types)


def test_raw_cells_pack_and_unpack() -> None:
    from app.deeplesion.schema import COLUMNS

    raw = {c: f"v, {i}" for i, c in enumerate(COLUMNS)}
    assert unpack_raw(pack_raw(raw)) == raw
    assert unpack_raw(None) is None and pack_raw(None) is None


def test_expired_session_is_not_accepted(factory) -> None:  # type: ignore[no-untyped-def]
    with factory() as s:
        user = create_user(session=s, name="dana", password="password-d", role="admin")
        token, csrf = start_session(session=s, user=user)
        s.commit()
        assert resolve_session(session=s, token=token) == (user, csrf)
        s.execute(update(AuthSession).values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        s.commit()
        assert resolve_session(session=s, token=token) is None
        assert resolve_session(session=s, token="made-up") is None


@pytest.mark.parametrize(
    ("name", "password", "role"),
    [
        ("local", "long-enough", "admin"),
        ("x y", "long-enough", "reviewer"),
        ("ok", "short", "reviewer"),
        ("ok", "long-enough", "root"),
    ],
)
def test_create_user_rejects_bad_input(factory, name: str, password: str, role: str) -> None:  # type: ignore[no-untyped-def]
    with factory() as s, pytest.raises(InvalidInputError):
        create_user(session=s, name=name, password=password, role=role)


def test_local_user_is_created_once(factory) -> None:  # type: ignore[no-untyped-def]
    from app.review.users import count_users, ensure_local_user

    with factory() as first:
        a = ensure_local_user(session=first)
        first.commit()
    with factory() as second:
        assert ensure_local_user(session=second) == a
        # The automatic reviewer cannot sign in, so it does not count as a user for the loopback rule.
        assert count_users(session=second) == 0


def test_stale_prediction_accept_gets_a_conflict_with_the_winners_state(factory) -> None:  # type: ignore[no-untyped-def]
    from app.db.models import KeySlice, Prediction
    from app.detection.runtime import Detection
    from app.review import predictions

    with factory() as s:
        bob = create_user(session=s, name="bob", password="password-b", role="reviewer")
        s.commit()
        file_name = s.execute(select(KeySlice.file_name).limit(1)).scalar_one()
        stored = predictions.store_predictions(
            session=s, file_name=file_name, model_version="m1", detections=[Detection((10, 10, 40, 40), 0.9)]
        )
    pred_id, version = stored[0]["id"], stored[0]["version"]
    racing = factory()
    racing.get(Prediction, pred_id)  # loaded at `version`
    with factory() as other:  # another reviewer rejects it in between, bypassing the service
        other.execute(
            update(Prediction).where(Prediction.id == pred_id).values(version=version + 1, status="rejected")
        )
        other.commit()
    with pytest.raises(EditConflictError) as err:
        predictions.accept(session=racing, user=bob, prediction_id=pred_id, version=version)
    assert err.value.current["status"] == "rejected"
    with factory() as s:
        assert s.get_one(Prediction, pred_id).status == "rejected"
        assert s.execute(select(Lesion).where(Lesion.origin != "csv")).first() is None
