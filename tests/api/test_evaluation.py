"""GET/POST /api/evaluation: the stored FROC result of the loaded detector, admin-only runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.deeplesion.schema import LesionRecord
from app.detection.preprocess import Transform, scale_for
from app.detection.runtime import Detector
from app.detection.testing import TINY_MODEL_VERSION, build_tiny_model
from app.main import create_app
from tests.api.conftest import Api

HIT_FILE = "000001_01_01_108.png"


@pytest.fixture
def data_dir(review_dataset: tuple[Path, list[LesionRecord]], tmp_path: Path) -> Path:
    # A private copy: evaluation results are written into the data folder.
    dst = tmp_path / "data"
    shutil.copytree(review_dataset[0], dst)
    return dst


def _hitting_detector(records: list[LesionRecord], tmp_path: Path) -> Detector:
    """A fixed-output model whose first row lands exactly on the clean lesion of HIT_FILE."""
    rec = next(r for r in records if r.file_name == HIT_FILE and not r.possibly_noisy)
    w, h = rec.image_size
    s = scale_for(rec.spacing_mm[0], w, h)
    t = Transform(scale_x=round(w * s) / w, scale_y=round(h * s) / h, width=w, height=h)
    box = t.to_input(np.array([rec.bounding_box]))[0]
    rows = np.array([[*box, 0.9], [1.0, 1.0, 8.0, 8.0, 0.5]], dtype=np.float32)
    return Detector.load(build_tiny_model(tmp_path / "hit.onnx", rows=rows))


def _app(data_dir: Path, database_url: str, detector: object | None) -> TestClient:
    settings = Settings(data_dir=data_dir, database_url=database_url, model_path=None)
    return TestClient(create_app(settings, detector=detector))


@pytest.fixture
def admin(
    data_dir: Path, database_url: str, review_dataset: tuple[Path, list[LesionRecord]], tmp_path: Path
) -> Iterator[Api]:
    with _app(data_dir, database_url, _hitting_detector(review_dataset[1], tmp_path)) as c:
        yield Api(c, database_url).login("boss", "admin")


def test_get_evaluation_without_login_is_401(data_dir: Path, database_url: str) -> None:
    with _app(data_dir, database_url, None) as c:
        assert c.get("/api/evaluation").status_code == 401


def test_get_evaluation_before_any_run_is_404(admin: Api) -> None:
    r = admin.client.get("/api/evaluation")
    assert r.status_code == 404 and r.json()["code"] == "no_evaluation"


def test_post_evaluation_as_reviewer_is_403(data_dir: Path, database_url: str, tmp_path: Path) -> None:
    with _app(data_dir, database_url, Detector.load(build_tiny_model(tmp_path / "t.onnx"))) as c:
        api = Api(c, database_url).login("rita", "reviewer")
        assert api.write("POST", "/api/evaluation", json={}).status_code == 403  # type: ignore[attr-defined]


def test_post_evaluation_without_model_is_503(data_dir: Path, database_url: str) -> None:
    with _app(data_dir, database_url, None) as c:
        api = Api(c, database_url).login("boss", "admin")
        r = api.write("POST", "/api/evaluation", json={})
        assert r.status_code == 503 and r.json()["code"] == "no_model"  # type: ignore[attr-defined]


def test_post_evaluation_scores_the_test_split_and_get_returns_it(
    admin: Api, review_dataset: tuple[Path, list[LesionRecord]]
) -> None:
    records = review_dataset[1]
    test_files = {r.file_name for r in records if r.train_val_test == 3}
    clean = [r for r in records if r.train_val_test == 3 and not r.possibly_noisy and r.file_name == HIT_FILE]
    r = admin.write("POST", "/api/evaluation", json={"split": "test"})
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert r.headers["cache-control"] == "no-store"  # type: ignore[attr-defined]
    # 000001_01_01_112.png is not stored: evaluated on the one stored test key slice only.
    assert body["images"] == 1 and body["missing_key_slices"] == len(test_files) - 1
    assert body["lesions"] == len(clean) and body["noisy_excluded"] == 1
    assert body["sensitivity"] == [1.0] * 6  # the fixed box equals the lesion's box
    assert body["model_version"] == TINY_MODEL_VERSION and body["against"] == "original"
    latest = admin.client.get("/api/evaluation").json()
    assert latest["created_at"] == body["created_at"] and latest["sensitivity"] == body["sensitivity"]


def test_post_evaluation_against_corrected_state(admin: Api) -> None:
    r = admin.write("POST", "/api/evaluation", json={"split": "test", "against": "corrected"})
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    assert r.json()["against"] == "corrected"  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [{"split": "bogus"}, {"against": "maybe"}, {"extra": 1}])
def test_post_evaluation_with_bad_body_is_422(admin: Api, body: dict[str, str]) -> None:
    assert admin.write("POST", "/api/evaluation", json=body).status_code == 422  # type: ignore[attr-defined]
