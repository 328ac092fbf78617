"""Detector jobs in the background (FROC evaluation, screening): state in detector_jobs, one at a time."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import DetectorJob, utcnow
from app.detection.batch import SliceRunner
from app.review.errors import JobRunningError, NotFoundError, ReviewError
from app.review.serialize import iso

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
# Every status a job row takes, in the order a job passes through them (the API schema enumerates these).
JOB_STATUSES: tuple[str, ...] = (*ACTIVE, "done", "failed")
# What each kind is called in messages ("server restarted during screening").
NOUNS = {"evaluation": "evaluation", "screen": "screening", "volume_screen": "volume screening"}
# The running process writes progress (its sign of life) at least every few seconds while it predicts;
# a job silent for this long belongs to a process that died where we cannot check its pid (another host).
HEARTBEAT_TIMEOUT = timedelta(minutes=5)
# Each progress write is a commit that reviewers' writes queue behind on SQLite: at most one a second.
PROGRESS_INTERVAL_S = 1.0
RESTARTED = "server restarted during {noun}"
STOPPED = "server stopped during {noun}"
SILENT = "the server process running this {noun} stopped answering (no progress for 5 minutes)"
VANISHED = "the {noun} thread ended without storing a result"
MARKED_FAILED = "the job was marked failed while it ran"

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class JobContext:
    """What a job's work function gets: its parameters, the detector, the database and a progress hook."""

    job_id: int
    params: dict[str, Any]
    detector: Any
    requested_by: str
    session_factory: sessionmaker[Session]
    data_dir: Path | str
    # on_progress(done, total): records progress and the heartbeat; raises to stop the work.
    on_progress: ProgressFn
    progress: bool = False  # a progress bar on the terminal (jobs run from the CLI)
    # Where the detector runs (a cluster, from the CLI's --ray); None: in this process.
    runner: SliceRunner | None = None


@dataclass(frozen=True)
class JobKind:
    """One kind of detector job: its name, its work, and where a finished result goes."""

    name: str
    # Does the work and returns its result; a raised exception fails the job with its message.
    work: Callable[[JobContext], dict[str, Any]]
    # Stores the result in the transaction that marks the job done; None keeps it in the job row.
    store: Callable[[Session, int, dict[str, Any]], None] | None = None


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


def noun(kind: str) -> str:
    """How a job kind is named in messages."""
    return NOUNS.get(kind, f"{kind} job")


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


def _abandoned_reason(job: DetectorJob, me: Worker, now: datetime) -> str | None:
    """Why a queued/running job can never finish (its process is gone), or None while it may."""
    what = noun(job.kind)
    if job.worker_host == me.host:
        if job.worker_token == me.token:
            with _process_lock:
                return None if job.id in _live_jobs else VANISHED.format(noun=what)
        if job.worker_pid == me.pid or not _pid_alive(job.worker_pid):
            # Same pid with another token: this process replaced the one that ran it (a container restart).
            return RESTARTED.format(noun=what)
    if now - _aware(job.heartbeat_at) > HEARTBEAT_TIMEOUT:
        return SILENT.format(noun=what)
    return None


def _finish(session: Session, job_id: int, *, status: str, error: str | None = None, **values: Any) -> bool:
    """Move an active job to done/failed and free the one-job slot; False when it was no longer active."""
    now = utcnow()
    done = session.execute(
        update(DetectorJob)
        .where(DetectorJob.id == job_id, DetectorJob.status.in_(ACTIVE))
        .values(status=status, error=error, finished_at=now, heartbeat_at=now, active_lock=None, **values)
    )
    return bool(getattr(done, "rowcount", 0))


def fail_abandoned_jobs(*, session: Session) -> int:
    """Mark failed every queued/running job whose process is gone; returns how many."""
    me = this_worker()
    now = utcnow()
    failed = 0
    for job in session.scalars(select(DetectorJob).where(DetectorJob.status.in_(ACTIVE))).all():
        reason = _abandoned_reason(job, me, now)
        if reason is not None and _finish(session, job.id, status="failed", error=reason):
            log.warning("%s job %d marked failed: %s", job.kind, job.id, reason)
            failed += 1
    session.commit()
    return failed


def job_status(job: DetectorJob) -> dict[str, Any]:
    """The job in the shape of docs/api.md."""
    done = job.status == "done"
    return {
        "id": job.id,
        "kind": job.kind,
        # The kind in words, so that pages word their messages as the server does.
        "noun": noun(job.kind),
        "status": job.status,
        "params": dict(job.params or {}),
        "model_version": job.model_version,
        "requested_by": job.requested_by,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "error": job.error,
        "result": job.result if done else None,
        # An evaluation's FROC is too big for a status poll: it is fetched once, from here.
        "result_url": f"/api/evaluation/jobs/{job.id}/result" if done and job.kind == "evaluation" else None,
    }


def get_job(*, session: Session, job_id: int, kind: str | None = None) -> dict[str, Any]:
    """One job's status (failing it first when its process is gone); NotFoundError for an unknown id."""
    fail_abandoned_jobs(session=session)
    job = session.get(DetectorJob, job_id, populate_existing=True)
    if job is None or (kind is not None and job.kind != kind):
        code = f"{kind}_job_not_found" if kind else "job_not_found"
        raise NotFoundError(f"no {noun(kind) + ' ' if kind else ''}job {job_id}", code=code)
    return job_status(job)


def list_jobs(*, session: Session, limit: int = 20, kind: str | None = None) -> list[dict[str, Any]]:
    """The most recent jobs (of one kind, or all), newest first."""
    fail_abandoned_jobs(session=session)
    query = select(DetectorJob)
    if kind is not None:
        query = query.where(DetectorJob.kind == kind)
    jobs = session.scalars(
        query.order_by(DetectorJob.id.desc()).limit(limit).execution_options(populate_existing=True)
    ).all()
    return [job_status(j) for j in jobs]


def latest_done_job(*, session: Session, kind: str) -> dict[str, Any] | None:
    """The most recent job of a kind that finished with a result, or None."""
    job = session.scalars(
        select(DetectorJob)
        .where(DetectorJob.kind == kind, DetectorJob.status == "done")
        .order_by(DetectorJob.id.desc())
        .limit(1)
    ).first()
    return None if job is None else job_status(job)


class _Stopped(ReviewError):
    """Raised from the progress callback to end a run early."""

    code = "job_stopped"


class JobRunner:
    """Starts the detector jobs of one app in worker threads and stops the running one on shutdown."""

    def __init__(self, *, session_factory: sessionmaker[Session], data_dir: Path | str) -> None:
        self._factory = session_factory
        self._data_dir = data_dir
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def recover(self) -> int:
        """At startup: fail the jobs that a dead server process left queued or running."""
        with self._factory() as session:
            return fail_abandoned_jobs(session=session)

    def start(
        self, *, session: Session, kind: JobKind, params: dict[str, Any], detector: Any, requested_by: str
    ) -> dict[str, Any]:
        """Create a queued job and start its thread; JobRunningError while any detector job is active."""
        job, context = self._create(session, kind, params, detector, requested_by)
        try:
            thread = threading.Thread(
                target=self._run, args=(kind, context), name=f"{kind.name}-job-{job.id}", daemon=True
            )
            thread.start()
        except BaseException:
            with _process_lock:
                _live_jobs.discard(job.id)
            raise
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return job_status(job)

    def run_here(
        self,
        *,
        session: Session,
        kind: JobKind,
        params: dict[str, Any],
        detector: Any,
        requested_by: str,
        on_progress: ProgressFn | None = None,
        progress: bool = False,
        runner: SliceRunner | None = None,
    ) -> dict[str, Any]:
        """Run a job in this thread (the CLI): same row and one-job slot as the server's; errors propagate."""
        job, ctx = self._create(session, kind, params, detector, requested_by, progress=progress)
        ctx = replace(ctx, runner=runner)
        if on_progress is not None:
            hook = ctx.on_progress

            def both(done: int, total: int) -> None:
                hook(done, total)
                on_progress(done, total)

            ctx = replace(ctx, on_progress=both)
        try:
            self._execute(kind, ctx)
        except BaseException as exc:  # Ctrl-C too: the job must not hold the slot until it looks stale
            self._fail(job.id, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise
        finally:
            with _process_lock:
                _live_jobs.discard(job.id)
        with self._factory() as fresh:
            return get_job(session=fresh, job_id=job.id)

    def _create(
        self,
        session: Session,
        kind: JobKind,
        params: dict[str, Any],
        detector: Any,
        requested_by: str,
        *,
        progress: bool = False,
    ) -> tuple[DetectorJob, JobContext]:
        """The queued job row, holding the one-job slot, registered as live in this process."""
        fail_abandoned_jobs(session=session)
        me = this_worker()
        now = utcnow()
        job = DetectorJob(
            kind=kind.name,
            status="queued",
            params=dict(params),
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
            running = session.scalars(select(DetectorJob).where(DetectorJob.active_lock == 1)).first()
            what = f"a {noun(running.kind)} (job {running.id})" if running else "another detector job"
            raise JobRunningError(
                f"{what} is running; one detector job runs at a time",
                job=job_status(running) if running else None,
            ) from None
        # Registered before the commit, so a concurrent status read never sees it without its runner.
        with _process_lock:
            _live_jobs.add(job.id)
        try:
            session.commit()
        except BaseException:
            with _process_lock:
                _live_jobs.discard(job.id)
            raise
        context = JobContext(
            job_id=job.id,
            params=dict(params),
            detector=detector,
            requested_by=requested_by,
            session_factory=self._factory,
            data_dir=self._data_dir,
            on_progress=self._progress_hook(job.id, kind.name),
            progress=progress,
        )
        return job, context

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Ask the running job to stop after its current key slice and wait for it a little."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", thread.name, timeout_s)

    def _progress_hook(self, job_id: int, kind: str) -> ProgressFn:
        """The job's on_progress: writes progress and heartbeat (at most once a second), stops on request."""
        last_write = 0.0

        def on_progress(done: int, total: int) -> None:
            nonlocal last_write
            if self._stop.is_set():
                raise _Stopped(STOPPED.format(noun=noun(kind)))
            now = time.monotonic()
            if 0 < done < total and now - last_write < PROGRESS_INTERVAL_S:
                return
            last_write = now
            with self._factory() as session:
                written = session.execute(
                    update(DetectorJob)
                    .where(DetectorJob.id == job_id, DetectorJob.status == "running")
                    .values(progress_done=done, progress_total=total, heartbeat_at=utcnow())
                )
                session.commit()
            if not getattr(written, "rowcount", 0):
                raise _Stopped(MARKED_FAILED)

        return on_progress

    def _run(self, kind: JobKind, ctx: JobContext) -> None:
        try:
            self._execute(kind, ctx)
        except _Stopped as exc:
            self._fail(ctx.job_id, str(exc))
        except Exception as exc:  # any failure is the job's status, never the server's
            log.exception("%s job %d failed", kind.name, ctx.job_id)
            message = f"{type(exc).__name__}: {exc}".replace(str(self._data_dir), "<data>")
            self._fail(ctx.job_id, message)
        finally:
            with _process_lock:
                _live_jobs.discard(ctx.job_id)

    def _fail(self, job_id: int, message: str) -> None:
        with self._factory() as session:
            _finish(session, job_id, status="failed", error=message)
            session.commit()

    def _execute(self, kind: JobKind, ctx: JobContext) -> None:
        with self._factory() as session:
            started = session.execute(
                update(DetectorJob)
                .where(DetectorJob.id == ctx.job_id, DetectorJob.status == "queued")
                .values(status="running", started_at=utcnow(), heartbeat_at=utcnow())
            )
            session.commit()
        if not getattr(started, "rowcount", 0):
            return  # failed meanwhile by someone who thought its process was gone
        result = kind.work(ctx)
        with self._factory() as session:
            # Done and its result in one commit: a done job always has its result.
            if not _finish(session, ctx.job_id, status="done", result=None if kind.store else result):
                session.rollback()
                log.warning("%s job %d was failed while it ran; its result is dropped", kind.name, ctx.job_id)
                return
            if kind.store is not None:
                kind.store(session, ctx.job_id, result)
            session.commit()
