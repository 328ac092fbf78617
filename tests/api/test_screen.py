"""`lesion-review screen`: resumable batch prediction into the database and the missed-lesion check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main
from app.db.models import PredictionRun
from app.db.session import make_engine, make_session_factory
from app.deeplesion.schema import LesionRecord
from app.detection.preprocess import Transform, scale_for
from app.detection.testing import build_tiny_model
from app.review.detector_jobs import missed_queue

HIDDEN_FILE = "000001_01_01_108.png"


@pytest.fixture
def setup(review_dataset: tuple[Path, list[LesionRecord]], tmp_path: Path) -> tuple[Path, Path, list[float]]:
    """A private data copy with one hidden lesion, and a fixed model that finds it plus one false box."""
    data = tmp_path / "data"
    shutil.copytree(review_dataset[0], data)
    rec = next(r for r in review_dataset[1] if r.file_name == HIDDEN_FILE)
    w, h = rec.image_size
    s = scale_for(rec.spacing_mm[0], w, h)
    t = Transform(scale_x=round(w * s) / w, scale_y=round(h * s) / h, width=w, height=h)
    hidden = [90.0, 10.0, 110.0, 30.0]  # away from every annotated lesion
    rows = np.array(
        [[*t.to_input(np.array([hidden]))[0], 0.8], [*t.to_input(np.array([rec.bounding_box]))[0], 0.7]]
    )
    model = build_tiny_model(tmp_path / "m.onnx", rows=rows.astype(np.float32))
    doc = {"unannotated": [{"lesion_id": "h1", "file_name": HIDDEN_FILE, "box": hidden}]}
    (data / "synth_truth.json").write_text(json.dumps(doc))
    return data, model, hidden


def _screen(data: Path, model: Path, database_url: str) -> dict[str, object]:
    result = CliRunner().invoke(
        main,
        [
            "screen",
            str(data),
            "--model",
            str(model),
            "--database-url",
            database_url,
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output[result.output.index("{") :]))


def test_screen_stores_predictions_and_finds_the_hidden_lesion(
    setup: tuple[Path, Path, list[float]], database_url: str
) -> None:
    data, model, hidden = setup
    res = _screen(data, model, database_url)
    # 4 imported key slices: 108 and 050 are stored; 112 and 020 are not on disk.
    assert (res["key_slices"], res["predicted"], res["missing"], res["skipped"]) == (4, 2, 2, 0)
    assert res["hidden_lesions"] == {
        "total": 1,
        "top_n": 1,
        "queue_length": res["queue_predictions"],
        "ranks_iou_0_3": [1],
        "found_top_n_iou_0_3": 1,
        "recall_top_n_iou_0_3": 1.0,
        "found_top_n_iou_0_5": 1,
        "recall_top_n_iou_0_5": 1.0,
    }
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            queue = missed_queue(session=session, model_version="tiny-test-1")
    finally:
        engine.dispose()
    on_hidden = [q for q in queue if q.file_name == HIDDEN_FILE]
    # The box on the annotated lesion matches it, so only the hidden one is queued there.
    assert len(on_hidden) == 1 and np.allclose(on_hidden[0].box, hidden, atol=0.01)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_screen_is_resumable_without_writing_under_the_data_folder(
    setup: tuple[Path, Path, list[float]], database_url: str
) -> None:
    data, model, _ = setup
    before = _files(data)
    _screen(data, model, database_url)
    again = _screen(data, model, database_url)
    assert (again["predicted"], again["skipped"]) == (0, 2)
    assert _files(data) == before


def test_screen_skips_key_slices_where_the_model_found_nothing(
    setup: tuple[Path, Path, list[float]], database_url: str, tmp_path: Path
) -> None:
    data, _, _ = setup
    quiet = build_tiny_model(
        tmp_path / "quiet.onnx", rows=np.array([[10, 10, 20, 20, 0.01]], dtype=np.float32)
    )
    before = _files(data)
    first = _screen(data, quiet, database_url)
    again = _screen(data, quiet, database_url)
    assert first["predicted"] == 2 and first["queue_predictions"] == 0
    assert (again["predicted"], again["skipped"]) == (0, 2)
    # The resume comes from the database: one empty run per screened key slice, no marker files.
    assert _files(data) == before
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            runs = session.execute(
                select(PredictionRun.model_version, PredictionRun.prediction_count, PredictionRun.threshold)
            ).all()
    finally:
        engine.dispose()
    assert sorted(runs) == [("tiny-test-1", 0, 0.3), ("tiny-test-1", 0, 0.3)]


def test_screen_without_model_is_a_clear_error(
    setup: tuple[Path, Path, list[float]], database_url: str
) -> None:
    data, _, _ = setup
    result = CliRunner().invoke(
        main, ["screen", str(data), "--model", str(data / "none.onnx"), "--database-url", database_url]
    )
    assert result.exit_code != 0 and "no model file" in result.output
