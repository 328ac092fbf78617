"""Evaluation jobs (POST /api/evaluation, /api/evaluation/jobs), stored results, the `evaluate` command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.cli import main
from app.db.models import DetectorJob, EvaluationRun, utcnow
from app.db.session import make_engine, make_session_factory
from app.deeplesion.schema import LesionRecord
from app.detection.preprocess import Transform, scale_for
from app.detection.runtime import Detector
from app.detection.testing import TINY_MODEL_VERSION, build_tiny_model
from app.review import evaluations, jobs
from app.review.evaluations import latest_evaluation, save_evaluation
from tests.api.conftest import Api
from tests.api.job_helpers import Gate, insert_job, job_app, job_rows, start, wait_finished

HIT_FILE = "000001_01_01_108.png"
# The message docs/api.md promises for a job whose server process is gone.
RESTARTED = "server restarted during evaluation"


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
    box = t.to_input(np.array([rec.box_px]))[0]
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
    return job_app(data_dir, database_url, detector)


@pytest.fixture
def admin(
    data_dir: Path, database_url: str, review_dataset: tuple[Path, list[LesionRecord]], tmp_path: Path
) -> Iterator[Api]:
    with _app(data_dir, database_url, _hitting_detector(review_dataset[1], tmp_path)) as c:
        yield Api(c, database_url).login("boss", "admin")


def _wait_finished(api: Api, job_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll the job's status like the browser does until it is done or failed."""
    return wait_finished(api, f"/api/evaluation/jobs/{job_id}", timeout_s)


def _start(api: Api, **body: str) -> dict[str, Any]:
    return start(api, "/api/evaluation", **body)


@pytest.fixture
def gate(admin: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    # Depends on `admin` so that it is released before the app shuts down (which waits for the job).
    g = Gate(pause_at=1)
    monkeypatch.setattr(evaluations, "evaluate_dataset", g.wrap(evaluations.evaluate_dataset))
    # Every progress step is written, so the paused job shows exactly where it is.
    monkeypatch.setattr(jobs, "PROGRESS_INTERVAL_S", 0.0)
    yield g
    g.release.set()


def _insert_job(database_url: str, **worker: Any) -> int:
    return insert_job(database_url, "evaluation", **worker)


def _test_key_slices(records: list[LesionRecord]) -> set[str]:
    return {r.file_name for r in records if r.train_val_test == 3}


def test_get_evaluation_without_login_is_401(data_dir: Path, database_url: str) -> None:
    with _app(data_dir, database_url, None) as c:
        assert c.get("/api/evaluation").status_code == 401
        assert c.get("/api/evaluation/jobs").status_code == 401
        assert c.get("/api/evaluation/jobs/1").status_code == 401


def test_get_evaluation_before_any_run_is_404(admin: Api) -> None:
    r = admin.client.get("/api/evaluation")
    assert r.status_code == 404 and r.json()["code"] == "no_evaluation"


def test_post_evaluation_as_reviewer_is_403(data_dir: Path, database_url: str, tmp_path: Path) -> None:
    with _app(data_dir, database_url, Detector.load(build_tiny_model(tmp_path / "t.onnx"))) as c:
        api = Api(c, database_url).login("rita", "reviewer")
        assert api.write("POST", "/api/evaluation", json={}).status_code == 403  # type: ignore[attr-defined]
        assert api.client.get("/api/evaluation/jobs").json() == {"jobs": []}


def test_post_evaluation_without_model_is_503(data_dir: Path, database_url: str) -> None:
    with _app(data_dir, database_url, None) as c:
        api = Api(c, database_url).login("boss", "admin")
        r = api.write("POST", "/api/evaluation", json={})
        assert r.status_code == 503 and r.json()["code"] == "no_model"  # type: ignore[attr-defined]
        assert api.client.get("/api/evaluation/jobs").json() == {"jobs": []}


def test_post_evaluation_answers_202_with_a_queued_job_and_its_location(admin: Api) -> None:
    r = admin.write("POST", "/api/evaluation", json={"split": "test"})
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    job = r.json()  # type: ignore[attr-defined]
    assert r.headers["location"] == f"/api/evaluation/jobs/{job['id']}"  # type: ignore[attr-defined]
    assert r.headers["cache-control"] == "no-store"  # type: ignore[attr-defined]
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 0}
    assert job["kind"] == "evaluation" and job["params"] == {"split": "test", "against": "original"}
    assert job["requested_by"] == "boss"
    assert job["model_version"] == TINY_MODEL_VERSION and job["created_at"]
    assert job["started_at"] is job["finished_at"] is job["error"] is job["result_url"] is None
    assert job["result"] is None
    polled = admin.client.get(r.headers["location"])  # type: ignore[attr-defined]
    assert polled.status_code == 200 and polled.json()["id"] == job["id"]
    _wait_finished(admin, job["id"])


def test_a_job_polled_to_done_stores_its_result_and_get_evaluation_returns_it(
    admin: Api, review_dataset: tuple[Path, list[LesionRecord]], database_url: str
) -> None:
    records = review_dataset[1]
    test_files = _test_key_slices(records)
    clean = [r for r in records if r.train_val_test == 3 and not r.possibly_noisy and r.file_name == HIT_FILE]
    job = _wait_finished(admin, _start(admin, split="test")["id"])
    assert job["status"] == "done", job
    assert job["progress"] == {"done": len(test_files), "total": len(test_files)}
    assert job["error"] is None and job["started_at"] and job["finished_at"]
    assert job["result_url"] == f"/api/evaluation/jobs/{job['id']}/result"
    body = admin.client.get(job["result_url"]).json()
    # 000001_01_01_112.png is not stored: evaluated on the one stored test key slice only.
    assert body["images"] == 1 and body["missing_key_slices"] == len(test_files) - 1
    assert body["lesions"] == len(clean) and body["noisy_excluded"] == 1
    assert body["sensitivity"] == [1.0] * 6  # the fixed box equals the lesion's box
    assert body["model_version"] == TINY_MODEL_VERSION and body["against"] == "original"
    assert body["run_by"] == "boss" and body["job_id"] == job["id"]
    latest = admin.client.get("/api/evaluation")
    assert latest.status_code == 200 and latest.json() == body
    [run] = _runs(database_url)
    assert run.job_id == job["id"] and run.result["created_at"] == body["created_at"]


def test_post_evaluation_against_corrected_state(admin: Api) -> None:
    job = _wait_finished(admin, _start(admin, split="test", against="corrected")["id"])
    assert job["status"] == "done" and job["params"]["against"] == "corrected", job
    assert admin.client.get(job["result_url"]).json()["against"] == "corrected"


@pytest.mark.parametrize("body", [{"split": "bogus"}, {"against": "maybe"}, {"extra": 1}])
def test_post_evaluation_with_bad_body_is_422(admin: Api, body: dict[str, str]) -> None:
    assert admin.write("POST", "/api/evaluation", json=body).status_code == 422  # type: ignore[attr-defined]
    assert admin.client.get("/api/evaluation/jobs").json() == {"jobs": []}


def test_a_running_job_reports_progress_and_a_second_post_is_409(
    admin: Api, gate: Gate, review_dataset: tuple[Path, list[LesionRecord]]
) -> None:
    total = len(_test_key_slices(review_dataset[1]))
    first = _start(admin, split="test")
    assert gate.reached.wait(30)
    running = admin.client.get(f"/api/evaluation/jobs/{first['id']}").json()
    assert running["status"] == "running" and running["started_at"] and running["finished_at"] is None
    assert running["progress"] == {"done": 1, "total": total} and running["result_url"] is None
    r = admin.write("POST", "/api/evaluation", json={"split": "val"})
    assert r.status_code == 409, r.text  # type: ignore[attr-defined]
    assert r.json()["code"] == "detector_job_running"  # type: ignore[attr-defined]
    assert r.json()["job"]["id"] == first["id"]  # type: ignore[attr-defined]
    assert admin.client.get(f"/api/evaluation/jobs/{first['id']}/result").json()["code"] == "no_evaluation"
    assert admin.client.get("/api/evaluation").status_code == 404
    gate.release.set()
    assert _wait_finished(admin, first["id"])["status"] == "done"
    # The one-job slot is free again.
    gate.pause_at = -1
    # (val: its only key slice is not on disk, so that job would fail with "no lesions to evaluate".)
    assert _wait_finished(admin, _start(admin, split="all")["id"])["status"] == "done"


def test_job_state_is_read_from_the_database_by_another_server_process(
    admin: Api, gate: Gate, data_dir: Path, database_url: str
) -> None:
    job = _start(admin, split="test")
    assert gate.reached.wait(30)
    with _app(data_dir, database_url, None) as other:
        api = Api(other, database_url).login("ops", "admin")
        seen = api.client.get(f"/api/evaluation/jobs/{job['id']}").json()
        assert seen["status"] == "running" and seen["progress"]["done"] == 1
        gate.release.set()
        assert _wait_finished(api, job["id"])["status"] == "done"
        assert api.client.get("/api/evaluation").json()["job_id"] == job["id"]


def test_a_failing_evaluation_is_a_failed_job_with_its_message_and_the_server_keeps_serving(
    admin: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("the detector ran out of memory")

    monkeypatch.setattr(evaluations, "evaluate_dataset", broken)
    job = _wait_finished(admin, _start(admin, split="test")["id"])
    assert job["status"] == "failed" and job["finished_at"] and job["result_url"] is None
    assert job["error"] == "RuntimeError: the detector ran out of memory"
    assert admin.client.get("/api/evaluation").json()["code"] == "no_evaluation"
    assert admin.client.get("/api/health").status_code == 200
    monkeypatch.undo()
    again = _wait_finished(admin, _start(admin, split="test")["id"])
    assert again["status"] == "done", again
    assert admin.client.get("/api/evaluation").json()["job_id"] == again["id"]


def test_unknown_job_is_404_with_a_code(admin: Api) -> None:
    for url in ("/api/evaluation/jobs/4242", "/api/evaluation/jobs/4242/result"):
        r = admin.client.get(url)
        assert r.status_code == 404 and r.json()["code"] == "evaluation_job_not_found", r.text


def test_jobs_are_listed_newest_first_and_limited(admin: Api) -> None:
    ids = [_wait_finished(admin, _start(admin, split=s)["id"])["id"] for s in ("test", "val", "test")]
    listed = admin.client.get("/api/evaluation/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    assert [j["params"]["split"] for j in listed] == ["test", "val", "test"]
    assert [j["id"] for j in admin.client.get("/api/evaluation/jobs?limit=2").json()["jobs"]] == ids[:0:-1]
    assert admin.client.get("/api/evaluation/jobs?limit=0").status_code == 422


def test_a_job_left_running_by_the_previous_server_process_is_failed_at_startup(
    data_dir: Path, database_url: str, review_dataset: tuple[Path, list[LesionRecord]], tmp_path: Path
) -> None:
    # Same host and pid (a restarted container reuses it) but another process token.
    stale = _insert_job(database_url)
    with _app(data_dir, database_url, _hitting_detector(review_dataset[1], tmp_path)) as c:
        # Failed by the startup itself, before anyone reads it.
        [row] = job_rows(database_url)
        assert (row.status, row.error, row.active_lock) == ("failed", RESTARTED, None)
        api = Api(c, database_url).login("boss", "admin")
        job = api.client.get(f"/api/evaluation/jobs/{stale}").json()
        assert job["status"] == "failed" and job["error"] == RESTARTED
        assert job["finished_at"] and job["progress"] == {"done": 3, "total": 10}
        # It no longer blocks new evaluations.
        assert _wait_finished(api, _start(api)["id"])["status"] == "done"


def test_a_job_of_a_dead_process_on_this_host_is_failed_when_read(admin: Api, database_url: str) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    stale = _insert_job(database_url, worker_pid=int(gone.stdout))
    job = admin.client.get(f"/api/evaluation/jobs/{stale}").json()
    assert job["status"] == "failed" and job["error"] == RESTARTED


def test_a_job_of_another_host_fails_only_once_its_heartbeat_is_stale(admin: Api, database_url: str) -> None:
    alive = _insert_job(database_url, worker_host="other-host", worker_pid=1)
    assert admin.client.get(f"/api/evaluation/jobs/{alive}").json()["status"] == "running"
    r = admin.write("POST", "/api/evaluation", json={})
    assert r.status_code == 409 and r.json()["job"]["id"] == alive  # type: ignore[attr-defined]
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            job = session.get(DetectorJob, alive)
            assert job is not None
            job.heartbeat_at = utcnow() - jobs.HEARTBEAT_TIMEOUT - timedelta(seconds=5)
            session.commit()
    finally:
        engine.dispose()
    listed = admin.client.get("/api/evaluation/jobs").json()["jobs"]
    assert listed[0]["id"] == alive and listed[0]["status"] == "failed"
    assert listed[0]["error"] == (
        "the server process running this evaluation stopped answering (no progress for 5 minutes)"
    )
    assert _wait_finished(admin, _start(admin)["id"])["status"] == "done"


def test_stopping_the_server_fails_the_running_job(
    data_dir: Path,
    database_url: str,
    review_dataset: tuple[Path, list[LesionRecord]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = threading.Event()
    real = evaluations.evaluate_dataset
    with _app(data_dir, database_url, _hitting_detector(review_dataset[1], tmp_path)) as c:
        runner = c.app.state.job_runner  # type: ignore[attr-defined]

        def held(*args: Any, on_progress: Any, **kwargs: Any) -> dict[str, Any]:
            def hook(done: int, total: int) -> None:
                started.set()
                # Until the shutdown asks the job to stop; the progress call right after sees the request.
                assert runner._stop.wait(30)
                on_progress(done, total)

            return real(*args, on_progress=hook, **kwargs)

        monkeypatch.setattr(evaluations, "evaluate_dataset", held)
        api = Api(c, database_url).login("boss", "admin")
        job = _start(api)
        assert started.wait(30)
    [row] = job_rows(database_url)
    assert row.id == job["id"] and row.status == "failed" and row.error == "server stopped during evaluation"
    assert row.active_lock is None and row.finished_at is not None


def test_get_evaluation_returns_the_latest_row_of_the_database(admin: Api, database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            base = {"model_version": "m", "created_at": "2026-11-22T06:00:00+00:00", "against": "original"}
            first = save_evaluation(session=session, result={**base, "split": "val", "images": 1})
            second = save_evaluation(session=session, result={**base, "split": "test", "images": 2})
            assert second > first
            assert latest_evaluation(session=session, split="val") == {
                **base,
                "split": "val",
                "images": 1,
                "job_id": None,
            }
            assert latest_evaluation(session=session, against="corrected") is None
    finally:
        engine.dispose()
    r = admin.client.get("/api/evaluation")
    assert r.status_code == 200 and r.json()["images"] == 2 and r.json()["split"] == "test"


def test_evaluation_leaves_the_data_folder_untouched(admin: Api, data_dir: Path) -> None:
    before = _snapshot(data_dir)
    job = _wait_finished(admin, _start(admin, split="test", against="corrected")["id"])
    assert job["status"] == "done", job
    assert _snapshot(data_dir) == before


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


def test_evaluate_cli_pools_datasets_into_one_froc_and_does_not_store_it(
    data_dir: Path, database_url: str, review_dataset: tuple[Path, list[LesionRecord]], tmp_path: Path
) -> None:
    model = _hitting_detector(review_dataset[1], tmp_path).path
    twin = tmp_path / "twin"
    shutil.copytree(data_dir, twin)
    base = ["evaluate", str(data_dir), "--model", str(model), "--split", "all", "--json", "--no-progress"]
    base += ["--database-url", database_url]
    single = json.loads(CliRunner().invoke(main, base).stdout)
    result = CliRunner().invoke(main, [*base, "--pool-with", str(twin)])
    assert result.exit_code == 0, result.output
    pooled = json.loads(result.stdout)
    # The twin holds the same key slices: twice the images and lesions, the same hits per lesion.
    assert pooled["images"] == 2 * single["images"] and pooled["lesions"] == 2 * single["lesions"]
    assert pooled["sensitivity"] == single["sensitivity"] and max(single["sensitivity"]) > 0
    assert pooled["pooled_with"] == [str(twin)] and pooled["stored_as"] is None
    assert "not stored" in result.stderr
    assert len(_runs(database_url)) == 1


def test_post_evaluation_of_a_split_without_lesions_is_422_and_starts_nothing(
    admin: Api, database_url: str
) -> None:
    from sqlalchemy import update

    from app.db.models import KeySlice
    from app.review.serialize import SPLIT_IDS

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            session.execute(update(KeySlice).where(KeySlice.split == SPLIT_IDS["val"]).values(lesion_count=0))
    finally:
        engine.dispose()
    r = admin.write("POST", "/api/evaluation", json={"split": "val"})  # type: ignore[attr-defined]
    assert r.status_code == 422 and r.json()["code"] == "empty_split", r.text
    assert "no lesions" in r.json()["detail"]
    assert admin.client.get("/api/evaluation/jobs").json() == {"jobs": []}
    assert _runs(database_url) == []
    started = admin.write("POST", "/api/evaluation", json={"split": "test"})  # type: ignore[attr-defined]
    assert started.status_code == 202, started.text
    assert _wait_finished(admin, started.json()["id"])["status"] == "done"


def test_an_evaluation_with_every_lesion_left_out_fails_and_stores_no_result(
    admin: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = evaluations.evaluate_dataset

    def nothing_left(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = real(*args, **kwargs)
        return {**result, "lesions": 0}

    monkeypatch.setattr(evaluations, "evaluate_dataset", nothing_left)
    job = _start(admin, split="test")
    done = _wait_finished(admin, job["id"])
    assert done["status"] == "failed" and "no lesions" in done["error"]
    assert _runs(database_url) == []
    assert admin.client.get("/api/evaluation").status_code == 404
