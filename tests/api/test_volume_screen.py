"""Volume screening: the job and command over every stored slice, its candidates queue, add and dismiss."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from app.cli import main
from app.db.models import AuditEntry, Lesion, VolumeCandidate, VolumeRun
from app.db.session import make_engine, make_session_factory
from app.deeplesion.schema import LesionRecord
from app.deeplesion.store import SliceStore
from app.detection.batch import SliceResult, SliceTask, detect_locally
from app.detection.preprocess import Transform, scale_for
from app.detection.testing import TINY_MODEL_VERSION, build_tiny_model
from app.review import volume
from app.review.volume import run_volume_screen, screen_volumes
from tests.api.conftest import Api
from tests.api.job_helpers import job_app, start, wait_finished
from tests.api.volume_data import NEW_A_BIG, NEW_C, FakeDetector


@pytest.fixture
def data(review_dataset: tuple[Path, list[LesionRecord]]) -> Path:
    """The review dataset's folder (read only here)."""
    return review_dataset[0]


@pytest.fixture
def vapi(data: Path, database_url: str) -> Iterator[Api]:
    """An app with the fake detector, signed in as an admin."""
    with job_app(data, database_url, FakeDetector()) as client:
        yield Api(client, database_url).login("vadmin", "admin")


def _screen(api: Api) -> dict[str, Any]:
    job = start(api, "/api/volume/screen")
    final = wait_finished(api, f"/api/volume/screen/jobs/{job['id']}")
    assert final["status"] == "done", final
    return final


def _rows(database_url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as s:
            return [
                (c.series_id, c.slice_index, tuple(c.box), round(c.score, 4), c.matches_annotation, c.slices)
                for c in s.scalars(
                    select(VolumeCandidate).order_by(VolumeCandidate.series_id, VolumeCandidate.slice_index)
                )
            ]
    finally:
        engine.dispose()


def test_volume_screen_queues_candidates_that_match_no_lesion_with_their_largest_slice(vapi: Api) -> None:
    job = _screen(vapi)
    r = job["result"]
    # 000001_01_01 stores 106..110, 000002_01_01 stores 49..51; 000001_02_01 stores nothing.
    assert (r["series"], r["slices"], r["unreadable"], r["skipped_series"]) == (2, 8, 0, 0)
    assert (r["candidates"], r["queue_candidates"]) == (3, 2)
    page = vapi.client.get("/api/volume/candidates").json()
    assert page["total"] == 2 and page["model_version"] == "fake-volume-1"
    a, c = page["items"]
    assert (a["file_name"], a["slice_index"], a["box"], a["score"]) == (
        "000001_01_01_108.png",
        107,
        list(NEW_A_BIG),
        0.8,  # its best slice's score
    )
    assert (a["slice_first"], a["slice_last"], a["slice_count"]) == (106, 108, 3)
    assert [s["slice_index"] for s in a["slices"]] == [106, 107, 108]
    assert (c["file_name"], c["slice_index"], c["box"]) == ("000002_01_01_050.png", 50, list(NEW_C))
    assert vapi.client.get(f"/api/volume/candidates/{a['id']}").json() == a
    assert vapi.client.get("/api/volume/screen").json()["id"] == job["id"]


def test_a_second_screen_skips_every_screened_series_and_adds_nothing(data: Path, database_url: str) -> None:
    first = run_volume_screen(
        database_url=database_url, data_dir=data, detector=FakeDetector(), progress=False
    )
    before = _rows(database_url)
    again = FakeDetector()
    second = run_volume_screen(database_url=database_url, data_dir=data, detector=again, progress=False)
    assert first["series"] == 2 and (second["series"], second["skipped_series"]) == (0, 2)
    assert again.calls == [] and _rows(database_url) == before


def test_a_stopped_screen_resumes_and_ends_as_a_clean_run_does(
    data: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volume, "CHUNK_SLICES", 1)  # one series per chunk and commit
    engine = make_engine(database_url)
    factory = make_session_factory(engine)

    def stop_in_second_series(done: int, total: int) -> None:
        if done == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        screen_volumes(
            session_factory=factory, data_dir=data, detector=FakeDetector(), on_progress=stop_in_second_series
        )
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(VolumeRun)) == 1  # the first series, written whole
    res = screen_volumes(session_factory=factory, data_dir=data, detector=FakeDetector())
    engine.dispose()
    assert (res["series"], res["skipped_series"]) == (1, 1)
    assert [r[1:] for r in _rows(database_url)] == [r[1:] for r in _clean_run_rows(data, tmp_path)]


# Run in a child process that the test kills: the screen with one series per commit, and a detector that
# stalls on the second series' first slice after saying so in the marker file.
_KILLED_SCREEN = """
import sys, time
from pathlib import Path
from app.db.session import make_engine, make_session_factory
from app.review import volume
from tests.api.volume_data import FakeDetector

url, data, marker, stall_on = sys.argv[1:5]
volume.CHUNK_SLICES = 1


class Stalling(FakeDetector):
    def predict(self, file_name, store, **kwargs):
        if file_name.startswith(stall_on):
            Path(marker).write_text(file_name)
            time.sleep(600)
        return super().predict(file_name, store, **kwargs)


volume.screen_volumes(
    session_factory=make_session_factory(make_engine(url)), data_dir=Path(data), detector=Stalling()
)
"""


def test_a_screen_killed_with_sigkill_resumes_rerunning_at_most_the_batch_it_was_in(
    data: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    marker = tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SCREEN, database_url, str(data), str(marker), "000002_01_01"],
        cwd=root,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the screen ended before it reached the second series"
            assert time.monotonic() < deadline, "the screen never reached the second series"
            time.sleep(0.1)
        # No handler, no finally, no rollback runs: as in a crash or at the OOM killer.
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None and not marker.exists():
            child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    monkeypatch.setattr(volume, "CHUNK_SLICES", 1)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(VolumeRun)) == 1  # the first series' commit only
    detector = FakeDetector()
    res = screen_volumes(session_factory=factory, data_dir=data, detector=detector)
    engine.dispose()
    # The resume reruns the batch the kill interrupted (the second series' stored slices), nothing before it.
    assert (res["series"], res["skipped_series"]) == (1, 1)
    assert detector.calls and all(f.startswith("000002_01_01") for f in detector.calls)
    assert len(detector.calls) == res["slices"]
    assert [r[1:] for r in _rows(database_url)] == [r[1:] for r in _clean_run_rows(data, tmp_path)]


def _clean_run_rows(data: Path, tmp_path: Path) -> list[Any]:
    """The candidate rows of an uninterrupted screen of `data` into a fresh database."""
    from app.db.session import upgrade_database
    from app.review.importer import import_dataset

    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    upgrade_database(clean_url)
    clean = make_engine(clean_url)
    import_dataset(engine=clean, data_dir=data, progress=False)
    screen_volumes(session_factory=make_session_factory(clean), data_dir=data, detector=FakeDetector())
    clean.dispose()
    return list(_rows(clean_url))


def test_a_runner_answering_in_any_order_gives_the_local_runners_candidates(
    data: Path, database_url: str, tmp_path: Path
) -> None:
    # The SliceRunner contract allows any order (a cluster); the candidates must not depend on it.
    detector = FakeDetector()
    local = detect_locally(detector, SliceStore(data), 0.3)

    def shuffled(tasks: Sequence[SliceTask]) -> Iterator[SliceResult]:
        results = list(local(tasks))
        random.Random(7).shuffle(results)
        yield from results

    engine = make_engine(database_url)
    screen_volumes(
        session_factory=make_session_factory(engine), data_dir=data, detector=detector, runner=shuffled
    )
    engine.dispose()
    mine = _rows(database_url)
    other = tmp_path / "other.db"
    from app.db.session import upgrade_database
    from app.review.importer import import_dataset

    upgrade_database(f"sqlite:///{other}")
    e2 = make_engine(f"sqlite:///{other}")
    import_dataset(engine=e2, data_dir=data, progress=False)
    screen_volumes(session_factory=make_session_factory(e2), data_dir=data, detector=FakeDetector())
    e2.dispose()
    assert [r[1:] for r in mine] == [r[1:] for r in _rows(f"sqlite:///{other}")]


def test_adding_a_candidate_makes_a_lesion_on_its_slice_through_the_review_path(vapi: Api) -> None:
    _screen(vapi)
    reader = vapi.login("vreader")
    a, c = reader.client.get("/api/volume/candidates").json()["items"]
    r = reader.write(
        "POST", f"/api/volume/candidates/{a['id']}/add", json={"version": a["version"], "lesion_type": 3}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    lesion = next(x for x in body["key_slice"]["lesions"] if x["id"] == body["lesion_id"])
    assert lesion["current"]["slice_index"] == 107 and lesion["current"]["box"] == list(NEW_A_BIG)
    assert lesion["origin"] == "drawn"
    cand = body["candidate"]
    assert (cand["status"], cand["lesion_id"], cand["decided_by"]) == ("added", body["lesion_id"], "vreader")
    assert cand["decided_at"] is not None
    assert body["entry"]["action"] == "add"  # the audit trail has it, undoable like any add
    # Already added: a second add (another tab) is a conflict that says who won, and adds nothing.
    again = reader.write(
        "POST", f"/api/volume/candidates/{a['id']}/add", json={"version": a["version"], "lesion_type": 3}
    )
    assert again.status_code == 409 and again.json()["changed_by"] == "vreader"
    d = reader.write("POST", f"/api/volume/candidates/{c['id']}/dismiss", json={"version": c["version"]})
    assert d.status_code == 200, d.text
    assert (d.json()["candidate"]["status"], d.json()["candidate"]["decided_by"]) == ("dismissed", "vreader")
    assert reader.client.get("/api/volume/candidates").json()["total"] == 0
    assert [
        i["id"] for i in reader.client.get("/api/volume/candidates?status=dismissed").json()["items"]
    ] == [c["id"]]
    engine = make_engine(vapi.database_url)
    with make_session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Lesion).where(Lesion.slice_index == 107)) == 1
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "add")) == 1
    engine.dispose()


def test_undoing_an_added_candidates_lesion_reopens_the_candidate_and_redo_adds_it_again(vapi: Api) -> None:
    _screen(vapi)
    reader = vapi.login("vundo")
    a = reader.client.get("/api/volume/candidates").json()["items"][0]
    added = reader.write(
        "POST", f"/api/volume/candidates/{a['id']}/add", json={"version": a["version"], "lesion_type": 3}
    ).json()
    key = added["key_slice"]["file_name"]
    assert reader.write("POST", f"/api/key-slices/{key}/undo").status_code == 200
    back = reader.client.get(f"/api/volume/candidates/{a['id']}").json()
    assert (back["status"], back["lesion_id"], back["decided_by"], back["decided_at"]) == (
        "pending",
        None,
        None,
        None,
    )
    assert back["version"] > added["candidate"]["version"]
    assert a["id"] in [i["id"] for i in reader.client.get("/api/volume/candidates").json()["items"]]
    assert reader.write("POST", f"/api/key-slices/{key}/redo").status_code == 200
    again = reader.client.get(f"/api/volume/candidates/{a['id']}").json()
    assert (again["status"], again["lesion_id"], again["decided_by"]) == (
        "added",
        added["lesion_id"],
        "vundo",
    )
    assert a["id"] not in [i["id"] for i in reader.client.get("/api/volume/candidates").json()["items"]]


def test_deleting_an_added_candidates_lesion_reopens_the_candidate_and_undo_adds_it_again(vapi: Api) -> None:
    _screen(vapi)
    reader = vapi.login("vdelete")
    a = reader.client.get("/api/volume/candidates").json()["items"][0]
    added = reader.write(
        "POST", f"/api/volume/candidates/{a['id']}/add", json={"version": a["version"], "lesion_type": 3}
    ).json()
    key = added["key_slice"]["file_name"]
    lesion = next(les for les in added["key_slice"]["lesions"] if les["id"] == added["lesion_id"])
    r = reader.write("DELETE", f"/api/lesions/{lesion['id']}?version={lesion['version']}")
    assert r.status_code == 200, r.text
    back = reader.client.get(f"/api/volume/candidates/{a['id']}").json()
    # The lesion is gone, so the candidate is a question again, not "added" pointing at a deleted lesion.
    assert (back["status"], back["lesion_id"]) == ("pending", None)
    assert a["id"] in [i["id"] for i in reader.client.get("/api/volume/candidates").json()["items"]]
    assert reader.write("POST", f"/api/key-slices/{key}/undo").status_code == 200
    again = reader.client.get(f"/api/volume/candidates/{a['id']}").json()
    assert (again["status"], again["lesion_id"]) == ("added", added["lesion_id"])


def test_a_stale_version_adds_nothing_and_bad_input_is_a_4xx(vapi: Api) -> None:
    _screen(vapi)
    a = vapi.client.get("/api/volume/candidates").json()["items"][0]
    stale = vapi.write(
        "POST", f"/api/volume/candidates/{a['id']}/add", json={"version": a["version"] + 5, "lesion_type": 3}
    )
    assert stale.status_code == 409
    engine = make_engine(vapi.database_url)
    with make_session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(Lesion).where(Lesion.slice_index == 107)) == 0
    engine.dispose()
    assert vapi.write("POST", "/api/volume/candidates/999999/dismiss", json={"version": 1}).status_code == 404
    assert (
        vapi.write(
            "POST", f"/api/volume/candidates/{a['id']}/add", json={"version": 1, "lesion_type": 42}
        ).status_code
        == 422
    )
    assert vapi.write("POST", f"/api/volume/candidates/{a['id']}/add", json={"version": 1}).status_code == 422
    assert vapi.client.get("/api/volume/candidates?status=nope").status_code == 422
    assert vapi.client.get("/api/volume/candidates/0").status_code == 422


def test_a_lesion_drawn_by_hand_over_a_pending_candidate_takes_it_out_of_the_queue(vapi: Api) -> None:
    _screen(vapi)
    before = vapi.client.get("/api/volume/candidates").json()
    r = vapi.write(
        "POST",
        "/api/key-slices/000002_01_01_050.png/lesions",
        json={"box": list(NEW_C), "lesion_type": 3, "slice_index": 51},
    )
    assert r.status_code in (200, 201), r.text
    after = vapi.client.get("/api/volume/candidates").json()
    assert [i["slice_index"] for i in after["items"]] == [107]
    # The total and the pages (one query with LIMIT/OFFSET) leave it out too.
    assert after["total"] == before["total"] - 1 == 1
    assert [i["id"] for i in vapi.client.get("/api/volume/candidates?limit=1").json()["items"]] == [
        after["items"][0]["id"]
    ]
    assert vapi.client.get("/api/volume/candidates?limit=1&offset=1").json()["items"] == []


def test_a_reviewer_may_not_start_a_volume_screen_and_one_job_runs_at_a_time(vapi: Api, data: Path) -> None:
    from tests.api.job_helpers import insert_job

    # A key-slice screen running in another server process (alive: fresh heartbeat) holds the one slot.
    insert_job(vapi.database_url, "screen", worker_host="another-host")
    busy = vapi.write("POST", "/api/volume/screen", json={})
    assert busy.status_code == 409 and busy.json()["code"] == "detector_job_running"
    vapi.login("vread2")
    assert vapi.write("POST", "/api/volume/screen", json={}).status_code == 403
    assert vapi.client.get("/api/volume/candidates").json()["total"] == 0


def test_screen_volumes_command_runs_the_model_on_every_stored_slice(
    data: Path, database_url: str, tmp_path: Path
) -> None:
    # One box, in network-input pixels, that maps to NEW_C on these 128-pixel slices (test_screen's recipe).
    w = h = 128
    sc = scale_for(0.7, w, h)
    t = Transform(scale_x=round(w * sc) / w, scale_y=round(h * sc) / h, width=w, height=h)
    rows = np.array([[*t.to_input(np.array([NEW_C]))[0], 0.8]], dtype=np.float32)
    model = build_tiny_model(tmp_path / "m.onnx", rows=rows)
    out = CliRunner().invoke(
        main,
        [
            "screen-volumes",
            str(data),
            "--model",
            str(model),
            "--database-url",
            database_url,
            "--json",
            "--no-progress",
        ],
    )
    assert out.exit_code == 0, out.output
    import json

    res = json.loads(out.output[out.output.index("{") :])
    assert (res["model_version"], res["series"], res["slices"], res["unreadable"]) == (
        TINY_MODEL_VERSION,
        2,
        8,
        0,
    )
    # The tiny model answers the same box on every slice: one candidate over each series' stored slices.
    assert res["candidates"] == 2
    engine = make_engine(database_url)
    with make_session_factory(engine)() as s:
        spans = sorted((c.slice_first, c.slice_last) for c in s.scalars(select(VolumeCandidate)))
    engine.dispose()
    assert spans == [(49, 51), (106, 110)]
