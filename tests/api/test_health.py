"""GET /api/health through create_app: database, data folder, synthetic flag and detector state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.db.session import SchemaOutdatedError
from app.main import create_app
from tests.api.conftest import Api, Template
from tests.api.slice_data import build_slice_dataset


@dataclass
class FakeDetector:
    """Stands in for app.detection.runtime.Detector: only the attributes health reads."""

    model_version: str = "test-model-7"
    provider: str = "CPUExecutionProvider"
    synthetic: bool = True


def get_health(settings: Settings, detector: object | None) -> dict[str, object]:
    with TestClient(create_app(settings, detector=detector)) as client:
        r = client.get("/api/health")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, object] = r.json()
    return body


def test_health_without_model_reports_review_mode(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d", import_db=True)
    body = get_health(data.settings, None)
    assert body["status"] == "ok"
    assert body["database"] == "sqlite"
    assert body["data_dir"] == data.root.name
    assert body["synthetic"] is False
    detector = body["detector"]
    assert isinstance(detector, dict)
    assert detector["loaded"] is False
    assert detector["provider"] is None and detector["model_version"] is None
    assert detector["error"]


def test_health_reports_a_loaded_detector(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d")
    body = get_health(data.settings, FakeDetector(model_version="m-42", provider="CUDAExecutionProvider"))
    assert body["detector"] == {
        "loaded": True,
        "provider": "CUDAExecutionProvider",
        "model_version": "m-42",
        "synthetic_model": True,
        "error": None,
    }


def test_synthetic_is_true_when_the_data_folder_has_synth_truth(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d")
    (data.root / "synth_truth.json").write_text(json.dumps({"generator": "test"}))
    assert get_health(data.settings, None)["synthetic"] is True


def test_missing_model_file_still_serves_and_names_the_reason(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d")
    settings = Settings(data_dir=data.root, model_path=tmp_path / "nowhere.onnx")
    body = get_health(settings, ...)
    detector = body["detector"]
    assert isinstance(detector, dict)
    assert detector["loaded"] is False
    assert "nowhere.onnx" in str(detector["error"])


def test_corrupt_model_file_is_review_mode_not_a_crash(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    body = get_health(Settings(data_dir=data.root, model_path=bad), ...)
    detector = body["detector"]
    assert isinstance(detector, dict)
    assert detector["loaded"] is False and detector["error"]


def test_unmigrated_database_refuses_to_start_naming_the_command(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d", import_db=False)
    with (
        pytest.raises(SchemaOutdatedError, match="lesion-review migrate"),
        TestClient(create_app(data.settings, detector=None)),
    ):
        pass


def test_openapi_schema_lists_the_slice_and_health_routes(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d")
    with TestClient(create_app(data.settings, detector=None)) as client:
        paths = client.get("/openapi.json").json()["paths"]
        docs = client.get("/docs")
    assert "/api/health" in paths
    assert "/api/slices/{name}.{fmt}" in paths and "/api/slices/{name}.raw" in paths
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_unknown_api_route_is_404_json(tmp_path: Path) -> None:
    data = build_slice_dataset(tmp_path / "d")
    with TestClient(create_app(data.settings, detector=None)) as client:
        r = client.get("/api/no-such-thing")
        wrong_method = client.delete("/api/health")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


def test_health_names_the_database_backend_in_use(client: TestClient, db_template: Template) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["database"] == db_template.kind


def test_slices_serve_on_every_backend(api: Api, app_settings: Settings) -> None:
    client = api.login("hugo").client
    stored = sorted((app_settings.data_dir / "Images_png").glob("*/*.png"))
    assert stored
    name = f"{stored[0].parent.name}_{stored[0].stem}"
    r = client.get(f"/api/slices/{name}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    raw = client.get(f"/api/slices/{name}.raw")
    assert raw.status_code == 200 and "x-spacing" in raw.headers
