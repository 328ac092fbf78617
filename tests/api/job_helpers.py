"""Helpers for the detector job tests (evaluation, screening): an app, polling, a gate, job rows."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.config import Settings
from app.db.models import DetectorJob, utcnow
from app.db.session import make_engine, make_session_factory
from app.main import create_app
from tests.api.conftest import Api


def job_app(data_dir: Path, database_url: str, detector: object | None) -> TestClient:
    """A client on create_app with this detector (None: no model)."""
    settings = Settings(data_dir=data_dir, database_url=database_url, model_path=None)
    return TestClient(create_app(settings, detector=detector))


def wait_finished(api: Api, url: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """Poll a job's status URL like the browser does until it is done or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = api.client.get(url)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout_s} s: {job}"
        time.sleep(0.05)


def start(api: Api, url: str, **body: Any) -> dict[str, Any]:
    """POST a job and check the 202."""
    r = api.write("POST", url, json=body)
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    job: dict[str, Any] = r.json()  # type: ignore[attr-defined]
    return job


class Gate:
    """Holds a running job after a given number of key slices until the test releases it."""

    def __init__(self, pause_at: int) -> None:
        self.pause_at = pause_at
        self.reached = threading.Event()
        self.release = threading.Event()

    def wrap(self, real: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        """`real` (a function taking on_progress=) with its progress held at `pause_at`."""

        def gated(*args: Any, on_progress: Any, **kwargs: Any) -> dict[str, Any]:
            def hook(done: int, total: int) -> None:
                on_progress(done, total)
                if done == self.pause_at:
                    self.reached.set()
                    assert self.release.wait(30), "the test never released the job"

            return real(*args, on_progress=hook, **kwargs)

        return gated


def insert_job(database_url: str, kind: str = "evaluation", **worker: Any) -> int:
    """A job row as a server process would have left it: running, holding the one-job slot."""
    now = utcnow()
    values: dict[str, Any] = {
        "worker_host": socket.gethostname(),
        "worker_pid": os.getpid(),
        "worker_token": "0" * 32,
        "heartbeat_at": now,
        **worker,
    }
    params = {"split": "test", "against": "original"} if kind == "evaluation" else {"split": "all"}
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            job = DetectorJob(
                kind=kind,
                status="running",
                params=params,
                model_version="m",
                requested_by="boss",
                created_at=now - timedelta(minutes=20),
                started_at=now - timedelta(minutes=20),
                progress_done=3,
                progress_total=10,
                active_lock=1,
                **values,
            )
            session.add(job)
            session.commit()
            return job.id
    finally:
        engine.dispose()


def job_rows(database_url: str) -> list[DetectorJob]:
    """Every detector_jobs row, oldest first."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(DetectorJob).order_by(DetectorJob.id)))
    finally:
        engine.dispose()


def finish_job(database_url: str, job_id: int) -> None:
    """Mark a job done and free the one-job slot, as its server would when it ends."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            session.execute(
                update(DetectorJob)
                .where(DetectorJob.id == job_id)
                .values(status="done", active_lock=None, finished_at=utcnow())
            )
            session.commit()
    finally:
        engine.dispose()
