"""Screening: the `screen` command and background screen jobs (POST /api/screen), resumable, one at a time."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main
from app.db.models import PredictionRun
from app.db.session import make_engine, make_session_factory
from app.deeplesion.schema import LesionRecord
from app.deeplesion.store import SliceStore
from app.detection.preprocess import Transform, scale_for
from app.detection.runtime import Detector
from app.detection.testing import TINY_MODEL_VERSION, build_tiny_model
from app.review import evaluations, jobs, screening
from app.review.screening import missed_queue, run_screen
from tests.api.conftest import Api
from tests.api.job_helpers import Gate, finish_job, insert_job, job_app, job_rows, start, wait_finished

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
        [[*t.to_input(np.array([hidden]))[0], 0.8], [*t.to_input(np.array([rec.box_px]))[0], 0.7]]
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


def test_the_screen_command_is_a_job_the_app_shows_and_waits_for_a_running_one(
    setup: tuple[Path, Path, list[float]], database_url: str
) -> None:
    data, model, _ = setup
    # A live process other than this one (the CLI runs in-process here) holds the slot.
    held = insert_job(database_url, "evaluation", worker_pid=os.getppid())
    blocked = CliRunner().invoke(
        main, ["screen", str(data), "--model", str(model), "--database-url", database_url, "--no-progress"]
    )
    assert blocked.exit_code != 0
    assert f"evaluation (job {held}) is running; one detector job runs at a time" in blocked.output
    assert [r.kind for r in job_rows(database_url)] == ["evaluation"]  # nothing predicted, no row added

    finish_job(database_url, held)
    res = _screen(data, model, database_url)
    rows = {r.id: r for r in job_rows(database_url)}
    cli_job = rows[int(res["job_id"])]
    assert (cli_job.kind, cli_job.status, cli_job.active_lock) == ("screen", "done", None)
    assert cli_job.requested_by.endswith("(CLI)") and cli_job.result["predicted"] == res["predicted"] == 2
    assert (cli_job.progress_done, cli_job.progress_total) == (4, 4)


def test_a_lesion_drawn_over_a_queued_box_takes_it_out_of_the_queue(
    setup: tuple[Path, Path, list[float]], database_url: str, admin: Api
) -> None:
    data, model, hidden = setup
    _screen(data, model, database_url)

    def queued() -> list[tuple[str, tuple[float, ...]]]:
        engine = make_engine(database_url)
        try:
            with make_session_factory(engine)() as session:
                queue = missed_queue(session=session, model_version=TINY_MODEL_VERSION)
                return [(q.file_name, q.box) for q in queue]
        finally:
            engine.dispose()

    assert any(f == HIDDEN_FILE and np.allclose(b, hidden, atol=0.01) for f, b in queued())
    r = admin.write("POST", f"/api/key-slices/{HIDDEN_FILE}/lesions", json={"box": hidden, "lesion_type": 5})
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    assert not any(f == HIDDEN_FILE and np.allclose(b, hidden, atol=0.01) for f, b in queued())


def test_screen_without_model_is_a_clear_error(
    setup: tuple[Path, Path, list[float]], database_url: str
) -> None:
    data, _, _ = setup
    result = CliRunner().invoke(
        main, ["screen", str(data), "--model", str(data / "none.onnx"), "--database-url", database_url]
    )
    assert result.exit_code != 0 and "no model file" in result.output


# ---- screening as a background job (POST /api/screen, /api/screen/jobs, /api/jobs) ----


def _keys(records: list[LesionRecord], split: int | None = None) -> list[str]:
    """Key slice names of the dataset (of one Train_Val_Test code), sorted as a screen visits them."""
    return sorted({r.file_name for r in records if split is None or r.train_val_test == split})


@pytest.fixture
def admin(setup: tuple[Path, Path, list[float]], database_url: str) -> Iterator[Api]:
    data, model, _ = setup
    with job_app(data, database_url, Detector.load(model)) as c:
        yield Api(c, database_url).login("boss", "admin")


def _start_screen(api: Api, **body: Any) -> dict[str, Any]:
    return start(api, "/api/screen", **body)


def _finished(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    return wait_finished(api, f"/api/screen/jobs/{job['id']}")


@pytest.fixture
def screen_gate(admin: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    # Depends on `admin` so that it is released before the app shuts down (which waits for the job).
    g = Gate(pause_at=1)
    monkeypatch.setattr(screening, "screen_key_slices", g.wrap(screening.screen_key_slices))
    monkeypatch.setattr(jobs, "PROGRESS_INTERVAL_S", 0.0)
    yield g
    g.release.set()


def _queue_files(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return {q.file_name for q in missed_queue(session=session, model_version=TINY_MODEL_VERSION)}
    finally:
        engine.dispose()


def test_post_screen_answers_202_with_a_queued_job_and_its_location(admin: Api) -> None:
    r = admin.write("POST", "/api/screen", json={})
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    job = r.json()  # type: ignore[attr-defined]
    assert r.headers["location"] == f"/api/screen/jobs/{job['id']}"  # type: ignore[attr-defined]
    assert r.headers["cache-control"] == "no-store"  # type: ignore[attr-defined]
    assert (job["kind"], job["status"], job["requested_by"]) == ("screen", "queued", "boss")
    assert job["params"] == {"split": "all", "threshold": 0.3, "limit": None}
    assert job["model_version"] == TINY_MODEL_VERSION and job["progress"] == {"done": 0, "total": 0}
    assert job["result"] is job["result_url"] is job["error"] is None
    polled = admin.client.get(r.headers["location"])  # type: ignore[attr-defined]
    assert polled.status_code == 200 and polled.json()["id"] == job["id"]
    _finished(admin, job)


def test_a_screen_polled_to_done_fills_the_queue_that_the_work_list_filters_on(
    admin: Api, setup: tuple[Path, Path, list[float]], review_dataset: tuple[Path, list[LesionRecord]]
) -> None:
    data = setup[0]
    keys = _keys(review_dataset[1])
    stored = [k for k in keys if SliceStore(data).exists(k)]
    assert 0 < len(stored) < len(keys)  # the dataset has key slices on disk and missing ones
    assert admin.client.get("/api/screen").json()["code"] == "no_screen"
    job = _finished(admin, _start_screen(admin))
    assert job["status"] == "done" and job["error"] is None, job
    assert job["progress"] == {"done": len(keys), "total": len(keys)}
    res = job["result"]
    assert (res["key_slices"], res["predicted"], res["skipped"]) == (len(keys), len(stored), 0)
    assert res["missing"] == len(keys) - len(stored)
    assert res["model_version"] == TINY_MODEL_VERSION and res["threshold"] == 0.3
    queued = _queue_files(admin.database_url)
    assert queued and res["queue_key_slices"] == len(queued)
    # The work list's possible-missed filter lists exactly the queued key slices.
    listed = admin.client.get("/api/key-slices?possible_missed=true&page_size=500").json()
    assert {i["file_name"] for i in listed["items"]} == queued
    assert all(i["missed_score"] is not None for i in listed["items"])
    rest = admin.client.get("/api/key-slices?possible_missed=false&page_size=500").json()
    assert {i["file_name"] for i in rest["items"]} == set(keys) - queued
    # synth_truth.json holds one unannotated lesion, and the model's best box is exactly on it.
    assert res["hidden_lesions"]["total"] == 1 and res["hidden_lesions"]["ranks_iou_0_3"] == [1]
    latest = admin.client.get("/api/screen")
    assert latest.status_code == 200 and latest.json() == job


def test_a_second_screen_skips_the_key_slices_this_model_version_already_ran_on(
    admin: Api, database_url: str
) -> None:
    first = _finished(admin, _start_screen(admin))["result"]
    again = _finished(admin, _start_screen(admin))
    assert again["status"] == "done", again
    res = again["result"]
    assert (res["predicted"], res["skipped"], res["missing"]) == (0, first["predicted"], first["missing"])
    assert res["queue_key_slices"] == first["queue_key_slices"] == len(_queue_files(database_url))
    assert admin.client.get("/api/screen").json()["id"] == again["id"]


def test_screen_of_one_split_with_a_limit(
    admin: Api, review_dataset: tuple[Path, list[LesionRecord]]
) -> None:
    test_keys = _keys(review_dataset[1], split=3)
    assert len(test_keys) > 1
    job = _finished(admin, _start_screen(admin, split="test", threshold=0.75, limit=1))
    assert job["status"] == "done" and job["params"] == {"split": "test", "threshold": 0.75, "limit": 1}
    assert job["result"]["key_slices"] == 1 and job["result"]["threshold"] == 0.75
    # Only the first test key slice ran: the others are still unscreened.
    ran = [k for k in test_keys if admin.client.get(f"/api/key-slices/{k}").json()["predictions"]]
    assert ran == test_keys[:1]
    preds = admin.client.get(f"/api/key-slices/{test_keys[0]}").json()["predictions"]
    assert preds and min(p["score"] for p in preds) >= 0.75


def test_a_running_screen_reports_progress_and_any_second_detector_job_is_409(
    admin: Api, screen_gate: Gate, review_dataset: tuple[Path, list[LesionRecord]]
) -> None:
    total = len(_keys(review_dataset[1]))
    first = _start_screen(admin)
    assert screen_gate.reached.wait(30)
    running = admin.client.get(f"/api/screen/jobs/{first['id']}").json()
    assert running["status"] == "running" and running["progress"] == {"done": 1, "total": total}
    assert running["result"] is None and running["finished_at"] is None
    for url in ("/api/screen", "/api/evaluation"):
        r = admin.write("POST", url, json={})
        assert r.status_code == 409, r.text  # type: ignore[attr-defined]
        body = r.json()  # type: ignore[attr-defined]
        assert body["code"] == "detector_job_running" and body["job"]["id"] == first["id"]
        assert body["job"]["kind"] == "screen" and "screening" in body["detail"]
    assert admin.client.get("/api/screen").json()["code"] == "no_screen"
    screen_gate.release.set()
    assert _finished(admin, first)["status"] == "done"
    # The one-job slot is free again, for either kind.
    screen_gate.pause_at = -1
    assert _finished(admin, _start_screen(admin))["status"] == "done"
    evaluation = start(admin, "/api/evaluation", split="test")
    assert wait_finished(admin, f"/api/evaluation/jobs/{evaluation['id']}")["status"] == "done"


def test_a_running_evaluation_makes_a_screen_409(admin: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(pause_at=1)
    monkeypatch.setattr(evaluations, "evaluate_dataset", gate.wrap(evaluations.evaluate_dataset))
    try:
        evaluation = start(admin, "/api/evaluation", split="all")
        assert gate.reached.wait(30)
        r = admin.write("POST", "/api/screen", json={"split": "test"})
        assert r.status_code == 409, r.text  # type: ignore[attr-defined]
        body = r.json()  # type: ignore[attr-defined]
        assert body["code"] == "detector_job_running" and body["job"]["id"] == evaluation["id"]
        assert body["job"]["kind"] == "evaluation"
        # Any signed-in page can follow it whatever its kind.
        assert admin.client.get(f"/api/jobs/{evaluation['id']}").json()["status"] == "running"
    finally:
        gate.release.set()
    assert wait_finished(admin, f"/api/evaluation/jobs/{evaluation['id']}")["status"] == "done"
    assert admin.client.get("/api/screen/jobs").json() == {"jobs": []}
    assert _finished(admin, _start_screen(admin))["status"] == "done"


class _Failing:
    """A detector that raises an unexpected error on one key slice and delegates everything else."""

    def __init__(self, real: Detector, bad: str) -> None:
        self.real, self.bad = real, bad

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def predict(self, file_name: str, store: Any, **kwargs: Any) -> Any:
        if file_name == self.bad:
            raise RuntimeError(f"the detector ran out of memory on {file_name}")
        return self.real.predict(file_name, store, **kwargs)


def test_a_failing_screen_is_a_failed_job_with_its_message_and_the_server_keeps_serving(
    setup: tuple[Path, Path, list[float]],
    database_url: str,
    review_dataset: tuple[Path, list[LesionRecord]],
) -> None:
    data, model, _ = setup
    stored = [k for k in _keys(review_dataset[1]) if SliceStore(data).exists(k)]
    bad = stored[-1]
    with job_app(data, database_url, _Failing(Detector.load(model), bad)) as c:
        api = Api(c, database_url).login("boss", "admin")
        job = _finished(api, _start_screen(api))
        assert job["status"] == "failed" and job["result"] is None and job["finished_at"]
        assert job["error"] == f"RuntimeError: the detector ran out of memory on {bad}"
        assert api.client.get("/api/screen").json()["code"] == "no_screen"
        assert api.client.get("/api/health").status_code == 200
        assert api.client.get("/api/key-slices").status_code == 200
        # The same failure again: the slot was freed, and the error is the job's, not the server's.
        again = _finished(api, _start_screen(api))
        assert again["status"] == "failed" and again["error"] == job["error"]
    # What ran before the failure is stored: a screen with a working detector resumes after it.
    with job_app(data, database_url, Detector.load(model)) as c:
        api = Api(c, database_url).login("boss", "admin", create=False)
        res = _finished(api, _start_screen(api))["result"]
        assert (res["predicted"], res["skipped"]) == (1, len(stored) - 1)


def test_a_corrupt_png_is_counted_as_missing_and_the_screen_finishes(
    admin: Api, setup: tuple[Path, Path, list[float]], review_dataset: tuple[Path, list[LesionRecord]]
) -> None:
    data = setup[0]
    keys = _keys(review_dataset[1])
    store = SliceStore(data)
    stored = [k for k in keys if store.exists(k)]
    store.path_for(stored[0]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    job = _finished(admin, _start_screen(admin))
    assert job["status"] == "done", job
    res = job["result"]
    assert (res["predicted"], res["missing"]) == (len(stored) - 1, len(keys) - len(stored) + 1)


def test_post_screen_as_reviewer_is_403_but_reviewers_may_read(
    setup: tuple[Path, Path, list[float]], database_url: str
) -> None:
    data, model, _ = setup
    with job_app(data, database_url, Detector.load(model)) as c:
        api = Api(c, database_url).login("rita", "reviewer")
        r = api.write("POST", "/api/screen", json={})
        assert r.status_code == 403  # type: ignore[attr-defined]
        assert api.client.get("/api/screen/jobs").json() == {"jobs": []}
        assert api.client.get("/api/screen").status_code == 404
        boss = Api(c, database_url).login("boss", "admin")
        job = _finished(boss, _start_screen(boss))
        # The reviewer (own cookie, signed in again) sees the result.
        api.login("rita", "reviewer", create=False)
        assert api.client.get(f"/api/screen/jobs/{job['id']}").json()["result"] == job["result"]
        assert api.client.get("/api/screen").json()["id"] == job["id"]


def test_screen_without_login_is_401(setup: tuple[Path, Path, list[float]], database_url: str) -> None:
    with job_app(setup[0], database_url, None) as c:
        for url in ("/api/screen", "/api/screen/jobs", "/api/screen/jobs/1", "/api/jobs", "/api/jobs/1"):
            assert c.get(url).status_code == 401, url
        assert c.post("/api/screen", json={}).status_code in (401, 403)


def test_post_screen_without_model_is_503(setup: tuple[Path, Path, list[float]], database_url: str) -> None:
    with job_app(setup[0], database_url, None) as c:
        api = Api(c, database_url).login("boss", "admin")
        r = api.write("POST", "/api/screen", json={})
        assert r.status_code == 503 and r.json()["code"] == "no_model"  # type: ignore[attr-defined]
        assert api.client.get("/api/screen/jobs").json() == {"jobs": []}


@pytest.mark.parametrize(
    "body",
    [
        {"split": "bogus"},
        {"threshold": 1.5},
        {"threshold": -0.1},
        {"threshold": "high"},
        {"limit": 0},
        {"limit": 2.5},
        {"against": "original"},
    ],
)
def test_post_screen_with_bad_body_is_422(admin: Api, body: dict[str, Any]) -> None:
    r = admin.write("POST", "/api/screen", json=body)
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"  # type: ignore[attr-defined]
    assert admin.client.get("/api/screen/jobs").json() == {"jobs": []}


def test_job_routes_of_each_kind_and_the_shared_ones(admin: Api) -> None:
    screen_job = _finished(admin, _start_screen(admin, limit=1))
    evaluation = start(admin, "/api/evaluation", split="test")
    wait_finished(admin, f"/api/evaluation/jobs/{evaluation['id']}")
    # Each kind's routes know only their own jobs.
    r = admin.client.get(f"/api/screen/jobs/{evaluation['id']}")
    assert r.status_code == 404 and r.json()["code"] == "screen_job_not_found"
    r = admin.client.get(f"/api/evaluation/jobs/{screen_job['id']}")
    assert r.status_code == 404 and r.json()["code"] == "evaluation_job_not_found"
    assert [j["id"] for j in admin.client.get("/api/screen/jobs").json()["jobs"]] == [screen_job["id"]]
    # The shared routes know both, newest first.
    both = admin.client.get("/api/jobs").json()["jobs"]
    assert [(j["id"], j["kind"]) for j in both] == [
        (evaluation["id"], "evaluation"),
        (screen_job["id"], "screen"),
    ]
    # Pages word a job as the server's messages do ("server restarted during screening"): one home.
    from app.review.jobs import noun

    assert [j["noun"] for j in both] == [noun("evaluation"), noun("screen")] == ["evaluation", "screening"]
    assert [j["id"] for j in admin.client.get("/api/jobs?kind=screen").json()["jobs"]] == [screen_job["id"]]
    assert admin.client.get(f"/api/jobs/{screen_job['id']}").json() == screen_job
    r = admin.client.get("/api/jobs/4242")
    assert r.status_code == 404 and r.json()["code"] == "job_not_found"
    assert admin.client.get("/api/jobs?kind=train").status_code == 422


def test_stopping_the_server_fails_the_running_screen_and_the_next_one_resumes(
    setup: tuple[Path, Path, list[float]],
    database_url: str,
    review_dataset: tuple[Path, list[LesionRecord]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, model, _ = setup
    keys = _keys(review_dataset[1])
    started = threading.Event()
    real = screening.screen_key_slices
    with job_app(data, database_url, Detector.load(model)) as c:
        runner = c.app.state.job_runner  # type: ignore[attr-defined]

        def held(*args: Any, on_progress: Any, **kwargs: Any) -> dict[str, Any]:
            def hook(done: int, total: int) -> None:
                if done == 1:
                    started.set()
                    # Until the shutdown asks the job to stop; the progress call right after sees it.
                    assert runner._stop.wait(30)
                on_progress(done, total)

            return real(*args, on_progress=hook, **kwargs)

        monkeypatch.setattr(screening, "screen_key_slices", held)
        api = Api(c, database_url).login("boss", "admin")
        job = _start_screen(api)
        assert started.wait(30)
    [row] = job_rows(database_url)
    assert row.id == job["id"] and row.status == "failed" and row.error == "server stopped during screening"
    assert row.active_lock is None and row.result is None
    monkeypatch.undo()
    # The key slice finished before the stop is stored: the next screen skips it.
    with job_app(data, database_url, Detector.load(model)) as c:
        api = Api(c, database_url).login("boss", "admin", create=False)
        res = _finished(api, _start_screen(api))["result"]
    first_done = 1 if SliceStore(data).exists(keys[0]) else 0
    assert res["skipped"] == first_done and res["key_slices"] == len(keys)


def test_a_screen_left_running_by_the_previous_server_process_is_failed_at_startup(
    setup: tuple[Path, Path, list[float]], database_url: str
) -> None:
    data, model, _ = setup
    stale = insert_job(database_url, "screen")
    with job_app(data, database_url, Detector.load(model)) as c:
        [row] = job_rows(database_url)
        assert (row.status, row.error) == ("failed", "server restarted during screening")
        api = Api(c, database_url).login("boss", "admin")
        assert api.client.get(f"/api/screen/jobs/{stale}").json()["status"] == "failed"
        assert _finished(api, _start_screen(api))["status"] == "done"


def test_run_screen_reports_progress_and_a_raising_callback_stops_it_cleanly(
    setup: tuple[Path, Path, list[float]], database_url: str, review_dataset: tuple[Path, list[LesionRecord]]
) -> None:
    data, model, _ = setup
    keys = _keys(review_dataset[1])
    detector = Detector.load(model)
    calls: list[tuple[int, int]] = []

    class Stop(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        run_screen(
            database_url=database_url,
            data_dir=data,
            detector=detector,
            progress=False,
            on_progress=stop_after_two,
        )
    assert calls == [(0, len(keys)), (1, len(keys)), (2, len(keys))]
    # The stopped run is a failed job that no longer holds the one-job slot.
    [stopped] = job_rows(database_url)
    assert (stopped.status, stopped.error, stopped.active_lock) == ("failed", "Stop", None)
    calls.clear()
    res = run_screen(
        database_url=database_url,
        data_dir=data,
        detector=detector,
        progress=False,
        on_progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(i, len(keys)) for i in range(len(keys) + 1)]
    stored_first_two = sum(SliceStore(data).exists(k) for k in keys[:2])
    assert res["skipped"] == stored_first_two and res["predicted"] + res["skipped"] + res["missing"] == len(
        keys
    )


def test_a_calibrated_model_ranks_the_queue_by_probability_and_reports_it_at_its_threshold(
    setup: tuple[Path, Path, list[float]], database_url: str, tmp_path: Path
) -> None:
    from app.detection.contract import contract_metadata, screening_metadata
    from app.detection.screening import Calibration
    from app.detection.screening import rank_queue as screening_rank

    data, model, hidden = setup
    # A calibration under which a raw 0.8 is a probability of 0.9 and 0.7 one of 0.2; the threshold 0.5.
    cal = Calibration((0.7, 0.8), (0.2, 0.9))
    det = Detector.load(model)
    meta = {
        **contract_metadata(model_version="calibrated-1", synthetic=True, training_data="x"),
        **screening_metadata(cal, 0.5),
    }
    rows = det.infer(np.zeros((1, 3, 512, 512), np.float32))
    calibrated = build_tiny_model(tmp_path / "c.onnx", rows=rows[0], metadata=meta)
    res = _screen(data, calibrated, database_url)
    assert res["queue_threshold_probability"] == 0.5
    # Only the 0.8 boxes pass 0.5: one per predicted key slice (the 0.7 box is the annotated lesion on 108).
    assert res["queue_at_threshold"] == 2
    at = res["hidden_lesions_at_threshold"]
    assert isinstance(at, dict) and (at["left_out_found"], at["left_out_total"], at["recall"]) == (1, 1, 1.0)
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            queue = missed_queue(session=session, model_version="calibrated-1", calibration=cal)
    finally:
        engine.dispose()
    ranked = screening_rank(queue)
    assert [q.probability for q in ranked] == sorted((q.probability for q in queue), reverse=True)
    assert ranked[0].probability == pytest.approx(0.9)
