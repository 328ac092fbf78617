"""app/api/errors.py: each domain error becomes its documented HTTP answer; only real bugs are a 500."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import Body, FastAPI
from fastapi.testclient import TestClient

from app.api.errors import install_error_handlers
from app.deeplesion.errors import (
    CorruptSliceError,
    CsvValidationError,
    InvalidGeometryError,
    InvalidWindowError,
    SliceNotFoundError,
    UnsafePathError,
)
from app.review.errors import EditConflictError, InvalidInputError, NotFoundError, PermissionDeniedError

DATA_DIR = Path("/srv/deeplesion")
CHANGED_AT = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)

RAISED: dict[str, Exception] = {
    "slice_missing": SliceNotFoundError(str(DATA_DIR / "Images_png/000001_01_01/109.png")),
    "unsafe": UnsafePathError("../../etc/passwd"),
    "corrupt": CorruptSliceError(
        str(DATA_DIR / "Images_png/000001_01_01/110.png"),
        f"cannot decode PNG: broken data stream when reading {DATA_DIR}/Images_png/000001_01_01/110.png",
    ),
    "window": InvalidWindowError("window width must be 1..65535, got 0"),
    "geometry": InvalidGeometryError("RECIST axes are not perpendicular"),
    "csv": CsvValidationError(
        ["line 3, column Bounding_boxes: expected 4 numbers", "line 9: bad gender 'X'"]
    ),
    "not_found": NotFoundError("lesion 99 does not exist"),
    "conflict": EditConflictError(
        "lesion 4 was changed by ada",
        current={"id": 4, "version": 3},
        changed_by="ada",
        changed_at=CHANGED_AT,
    ),
    "forbidden": PermissionDeniedError("only admins may do this"),
    "invalid": InvalidInputError("original lesions cannot be deleted"),
    "bug": ZeroDivisionError("division by zero"),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.state.settings = type("S", (), {"data_dir": DATA_DIR})()
    install_error_handlers(app)

    @app.get("/raise/{which}")
    def raise_it(which: str) -> None:
        raise RAISED[which]

    @app.post("/echo")
    def echo(count: int = Body(embed=True, ge=0)) -> int:
        return count

    return TestClient(app, raise_server_exceptions=False)


def test_missing_slice_is_404_naming_the_file_relative_to_the_data_root(client: TestClient) -> None:
    r = client.get("/raise/slice_missing")
    assert r.status_code == 404
    assert r.json()["code"] == "slice_not_found"
    assert r.json()["file"] == "Images_png/000001_01_01/109.png"
    assert str(DATA_DIR) not in r.text


def test_unsafe_name_is_a_plain_404_that_echoes_nothing(client: TestClient) -> None:
    r = client.get("/raise/unsafe")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert "passwd" not in r.text


def test_corrupt_slice_is_422_and_hides_absolute_paths(client: TestClient) -> None:
    r = client.get("/raise/corrupt")
    body = r.json()
    assert r.status_code == 422 and body["code"] == "corrupt_slice"
    assert body["file"] == "Images_png/000001_01_01/110.png"
    assert "broken data stream" in body["detail"]
    assert str(DATA_DIR) not in r.text


@pytest.mark.parametrize(("which", "code"), [("window", "invalid_window"), ("geometry", "invalid_geometry")])
def test_window_and_geometry_errors_are_422(client: TestClient, which: str, code: str) -> None:
    r = client.get(f"/raise/{which}")
    assert r.status_code == 422 and r.json()["code"] == code
    assert r.json()["detail"] == str(RAISED[which])


def test_csv_validation_is_422_with_every_error(client: TestClient) -> None:
    r = client.get("/raise/csv")
    assert r.status_code == 422
    assert r.json()["errors"] == RAISED["csv"].errors  # type: ignore[attr-defined]


def test_edit_conflict_is_409_with_current_state_author_and_time(client: TestClient) -> None:
    r = client.get("/raise/conflict")
    body = r.json()
    assert r.status_code == 409 and body["code"] == "edit_conflict"
    assert body["current"] == {"id": 4, "version": 3}
    assert body["changed_by"] == "ada"
    assert datetime.fromisoformat(body["changed_at"]) == CHANGED_AT


@pytest.mark.parametrize(
    ("which", "status", "code"),
    [("not_found", 404, "not_found"), ("forbidden", 403, "forbidden"), ("invalid", 422, "invalid_input")],
)
def test_review_errors_map_to_their_status(client: TestClient, which: str, status: int, code: str) -> None:
    r = client.get(f"/raise/{which}")
    assert (r.status_code, r.json()["code"], r.json()["detail"]) == (status, code, str(RAISED[which]))


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"count": -1}', b'{"count": "many"}', b"\xff\xfe\x00", b'{"count": NaN}', b""],
)
def test_malformed_or_invalid_json_is_422_with_json_safe_errors(client: TestClient, body: bytes) -> None:
    r = client.post("/echo", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_input" and isinstance(r.json()["errors"], list)


def test_an_unexpected_bug_is_a_logged_500_json(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="app.api.errors"):
        r = client.get("/raise/bug")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error", "code": "internal_error"}
    assert any(rec.exc_info and rec.exc_info[0] is ZeroDivisionError for rec in caplog.records)
