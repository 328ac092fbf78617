"""GET/POST /api/evaluation and the `evaluate` command: FROC results stored in the database."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.cli import main
from app.config import Settings
from app.db.models import EvaluationRun
from app.db.session import make_engine, make_session_factory
from app.deeplesion.schema import LesionRecord
from app.detection.preprocess import Transform, scale_for
from app.detection.runtime import Detector
from app.detection.testing import TINY_MODEL_VERSION, build_tiny_model
from app.main import create_app
from app.review.evaluations import latest_evaluation, save_evaluation
from tests.api.conftest import Api

HIT_FILE = "000001_01_01_108.png"


@pytest.fixture
def data_dir(review_dataset: tuple[Path, list[LesionRecord]], tmp_path: Path) -> Path:
    # A private copy, so a test can prove that nothing is written into it (it is mounted read-only).
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


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and mtime, to prove nothing was written there."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def _runs(database_url: str) -> list[EvaluationRun]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(EvaluationRun).order_by(EvaluationRun.id)))
    finally:
        engine.dispose()


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


def test_post_evaluation_is_stored_in_the_database_and_not_in_the_data_folder(
    admin: Api, data_dir: Path, database_url: str
) -> None:
    before = _snapshot(data_dir)
    r = admin.write("POST", "/api/evaluation", json={"split": "test", "against": "corrected"})
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert _snapshot(data_dir) == before
    [run] = _runs(database_url)
    assert body["stored_as"] == f"evaluation_runs/{run.id}"
    assert (run.model_version, run.split, run.against) == (TINY_MODEL_VERSION, "test", "corrected")
    assert run.result["created_at"] == body["created_at"] and run.result["run_by"] == "boss"
    # GET returns the stored row's result: the response of the run, without where it was stored.
    assert (
        admin.client.get("/api/evaluation").json()
        == run.result
        == {k: v for k, v in body.items() if k != "stored_as"}
    )


def test_get_evaluation_returns_the_latest_row_of_the_database(admin: Api, database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            base = {"model_version": "m", "created_at": "2026-11-22T06:00:00+00:00", "against": "original"}
            first = save_evaluation(session=session, result={**base, "split": "val", "images": 1})
            second = save_evaluation(session=session, result={**base, "split": "test", "images": 2})
            assert second > first
            assert latest_evaluation(session=session, split="val") == {**base, "split": "val", "images": 1}
            assert latest_evaluation(session=session, against="corrected") is None
    finally:
        engine.dispose()
    r = admin.client.get("/api/evaluation")
    assert r.status_code == 200 and r.json()["images"] == 2 and r.json()["split"] == "test"


def _tiny_model(tmp_path: Path) -> Path:
    return build_tiny_model(tmp_path / "cli.onnx")


def test_evaluate_cli_stores_the_result_in_the_dataset_database(
    data_dir: Path, database_url: str, tmp_path: Path
) -> None:
    before = _snapshot(data_dir)
    args = ["evaluate", str(data_dir), "--model", str(_tiny_model(tmp_path)), "--database-url", database_url]
    result = CliRunner().invoke(main, [*args, "--json", "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    [run] = _runs(database_url)
    assert out["stored_as"] == f"evaluation_runs/{run.id}" and run.split == "test"
    assert run.result["created_at"] == out["created_at"] and run.model_version == TINY_MODEL_VERSION
    assert _snapshot(data_dir) == before
    # The web app now shows what the command stored.
    with _app(data_dir, database_url, None) as c:
        api = Api(c, database_url).login("boss", "admin")
        assert api.client.get("/api/evaluation").json()["created_at"] == out["created_at"]


def test_evaluate_cli_without_a_database_says_so_and_still_prints_the_result(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LESION_REVIEW_DATABASE_URL", raising=False)
    before = _snapshot(data_dir)
    model = _tiny_model(tmp_path)
    # Default URL: the SQLite file in DATA_DIR, which was never imported here.
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", str(data_dir), "--model", str(model), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "not stored in the database" in result.stderr and "lesion-review import" in result.stderr
    assert "sensitivity%" in result.stdout
    as_json = runner.invoke(main, ["evaluate", str(data_dir), "--model", str(model), "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["stored_as"] is None
    assert _snapshot(data_dir) == before


def test_evaluate_cli_on_an_unmigrated_database_says_which_command_fixes_it(
    data_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    engine.connect().close()  # an empty SQLite file: reachable, never migrated
    engine.dispose()
    args = ["evaluate", str(data_dir), "--model", str(_tiny_model(tmp_path)), "--database-url", url]
    result = CliRunner().invoke(main, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "not migrated" in result.stderr and "lesion-review migrate" in result.stderr
    assert "FP/image" in result.stdout
