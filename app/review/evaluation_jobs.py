"""FROC evaluations as background jobs: state in evaluation_jobs, one at a time, run in a worker thread."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import EvaluationJob, utcnow
from app.detection.pipeline import evaluate_dataset, truth_from_records
from app.review.errors import JobRunningError, NotFoundError
from app.review.evaluations import save_evaluation
from app.review.serialize import iso

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
# The running process writes progress (its sign of life) at least every few seconds while it predicts;
# a job silent for this long belongs to a process that died where we cannot check its pid (another host).
HEARTBEAT_TIMEOUT = timedelta(minutes=5)
# Each progress write is a commit that reviewers' writes queue behind on SQLite: at most one a second.
PROGRESS_INTERVAL_S = 1.0
RESTARTED = "server restarted during evaluation"
STOPPED = "server stopped during evaluation"
SILENT = "the server process running this evaluation stopped answering (no progress for 5 minutes)"
VANISHED = "the evaluation thread ended without storing a result"


@dataclass(frozen=True)
class Worker:
    """Which server process runs a job: host, pid, and a token new in every process."""

    host: str
    pid: int
    token: str


_process_lock = threading.Lock()
_process_token: tuple[int, str] | None = None
# Jobs this process's threads are running now: a job of this process that is not here has no thread.
_live_jobs: set[int] = set()


def this_worker() -> Worker:
    """This server process; a forked worker gets its own token even though it inherited the module."""
    global _process_token
    pid = os.getpid()
    with _process_lock:
        if _process_token is None or _process_token[0] != pid:
            _process_token = (pid, uuid.uuid4().hex)
        return Worker(socket.gethostname(), pid, _process_token[1])


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap check elsewhere: the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by another user
    return True


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes that were stored as UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _abandoned_reason(job: EvaluationJob, me: Worker, now: datetime) -> str | None:
    """Why a queued/running job can never finish (its process is gone), or None while it may."""
    if job.worker_host == me.host:
        if job.worker_token == me.token:
            with _process_lock:
                return None if job.id in _live_jobs else VANISHED
        if job.worker_pid == me.pid or not _pid_alive(job.worker_pid):
            # Same pid with another token: this process replaced the one that ran it (a container restart).
            return RESTARTED
    if now - _aware(job.heartbeat_at) > HEARTBEAT_TIMEOUT:
        return SILENT
    return None


def _finish(session: Session, job_id: int, *, status: str, error: str | None = None, **values: Any) -> bool:
    """Move an active job to done/failed and free the one-job slot; False when it was no longer active."""
    now = utcnow()
    done = session.execute(
        update(EvaluationJob)
        .where(EvaluationJob.id == job_id, EvaluationJob.status.in_(ACTIVE))
        .values(status=status, error=error, finished_at=now, heartbeat_at=now, active_lock=None, **values)
    )
    return bool(getattr(done, "rowcount", 0))


def fail_abandoned_jobs(*, session: Session) -> int:
    """Mark failed every queued/running job whose process is gone; returns how many."""
    me = this_worker()
    now = utcnow()
    failed = 0
    for job in session.scalars(select(EvaluationJob).where(EvaluationJob.status.in_(ACTIVE))).all():
        reason = _abandoned_reason(job, me, now)
        if reason is not None and _finish(session, job.id, status="failed", error=reason):
            log.warning("evaluation job %d marked failed: %s", job.id, reason)
            failed += 1
    session.commit()
    return failed


def job_status(job: EvaluationJob) -> dict[str, Any]:
    """The job in the shape of docs/api.md."""
    return {
        "id": job.id,
        "status": job.status,
        "split": job.split,
        "against": job.against,
        "model_version": job.model_version,
        "requested_by": job.requested_by,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "error": job.error,
        "result_url": f"/api/evaluation/jobs/{job.id}/result" if job.status == "done" else None,
    }


def get_job(*, session: Session, job_id: int) -> dict[str, Any]:
    """One job's status (failing it first when its process is gone); NotFoundError for an unknown id."""
    fail_abandoned_jobs(session=session)
    job = session.get(EvaluationJob, job_id, populate_existing=True)
    if job is None:
        raise NotFoundError(f"no evaluation job {job_id}", code="evaluation_job_not_found")
    return job_status(job)


def list_jobs(*, session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The most recent jobs, newest first."""
    fail_abandoned_jobs(session=session)
    jobs = session.scalars(
        select(EvaluationJob)
        .order_by(EvaluationJob.id.desc())
        .limit(limit)
        .execution_options(populate_existing=True)
    ).all()
    return [job_status(j) for j in jobs]


class _Stopped(Exception):
    """Raised from the progress callback to end a run early."""


class EvaluationRunner:
    """Starts evaluation jobs of one app in worker threads and stops the running one on shutdown."""

    def __init__(self, *, session_factory: sessionmaker[Session], data_dir: Path) -> None:
        self._factory = session_factory
        self._data_dir = data_dir
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def recover(self) -> int:
        """At startup: fail the jobs that a dead server process left queued or running."""
        with self._factory() as session:
            return fail_abandoned_jobs(session=session)

    def start(
        self, *, session: Session, detector: Any, split: str, against: str, requested_by: str
    ) -> dict[str, Any]:
        """Create a queued job and start its thread; JobRunningError while another one is active."""
        fail_abandoned_jobs(session=session)
        me = this_worker()
        now = utcnow()
        job = EvaluationJob(
            status="queued",
            split=split,
            against=against,
            model_version=str(detector.model_version),
            requested_by=requested_by,
            created_at=now,
            progress_done=0,
            progress_total=0,
            active_lock=1,
            worker_host=me.host,
            worker_pid=me.pid,
            worker_token=me.token,
            heartbeat_at=now,
        )
        session.add(job)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            running = session.scalars(select(EvaluationJob).where(EvaluationJob.active_lock == 1)).first()
            raise JobRunningError(
                "an evaluation is already running", job=job_status(running) if running else None
            ) from None
        # Registered before the commit, so a concurrent status read never sees it without its thread.
        with _process_lock:
            _live_jobs.add(job.id)
        try:
            session.commit()
            thread = threading.Thread(
                target=self._run,
                args=(job.id, detector, split, against, requested_by),
                name=f"evaluation-job-{job.id}",
                daemon=True,
            )
            thread.start()
        except BaseException:
            with _process_lock:
                _live_jobs.discard(job.id)
            raise
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return job_status(job)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Ask the running evaluation to stop after its current key slice and wait for it a little."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", thread.name, timeout_s)

    def _run(self, job_id: int, detector: Any, split: str, against: str, requested_by: str) -> None:
        try:
            self._evaluate(job_id, detector, split, against, requested_by)
        except _Stopped as exc:
            self._fail(job_id, str(exc))
        except Exception as exc:  # any failure is the job's status, never the server's
            log.exception("evaluation job %d failed", job_id)
            message = f"{type(exc).__name__}: {exc}".replace(str(self._data_dir), "<data>")
            self._fail(job_id, message)
        finally:
            with _process_lock:
                _live_jobs.discard(job_id)

    def _fail(self, job_id: int, message: str) -> None:
        with self._factory() as session:
            _finish(session, job_id, status="failed", error=message)
            session.commit()

    def _evaluate(self, job_id: int, detector: Any, split: str, against: str, requested_by: str) -> None:
        with self._factory() as session:
            started = session.execute(
                update(EvaluationJob)
                .where(EvaluationJob.id == job_id, EvaluationJob.status == "queued")
                .values(status="running", started_at=utcnow(), heartbeat_at=utcnow())
            )
            session.commit()
        if not getattr(started, "rowcount", 0):
            return  # failed meanwhile by someone who thought its process was gone
        truths = None
        if against == "corrected":
            from app.review.exports import corrected_records

            with self._factory() as session:
                truths = truth_from_records(
                    corrected_records(session=session), None if split == "all" else split
                )
        last_write = 0.0

        def on_progress(done: int, total: int) -> None:
            nonlocal last_write
            if self._stop.is_set():
                raise _Stopped(STOPPED)
            now = time.monotonic()
            if 0 < done < total and now - last_write < PROGRESS_INTERVAL_S:
                return
            last_write = now
            with self._factory() as session:
                written = session.execute(
                    update(EvaluationJob)
                    .where(EvaluationJob.id == job_id, EvaluationJob.status == "running")
                    .values(progress_done=done, progress_total=total, heartbeat_at=utcnow())
                )
                session.commit()
            if not getattr(written, "rowcount", 0):
                raise _Stopped("the job was marked failed while it ran")

        result = evaluate_dataset(
            self._data_dir, detector, split=split, truths=truths, against=against, on_progress=on_progress
        )
        result["run_by"] = requested_by
        with self._factory() as session:
            # Done and its result in one commit: a done job always has a stored result.
            if not _finish(session, job_id, status="done"):
                session.rollback()
                log.warning("evaluation job %d was failed while it ran; its result is not stored", job_id)
                return
            save_evaluation(session=session, result=result, job_id=job_id)
