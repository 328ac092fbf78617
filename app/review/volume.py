"""Volume screening: the detector on every stored slice of each sub-volume, 3D candidates, their review."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import KeySlice, Lesion, Series, User, VolumeCandidate, VolumeRun, utcnow
from app.deeplesion.schema import slice_file_name
from app.detection.batch import SliceResult, SliceRunner, SliceTask, detect_locally
from app.detection.pipeline import ProgressFn
from app.detection.volume import (
    AnnotatedLesion,
    Candidate,
    SliceBox,
    host_key_slice,
    lesion_extent,
    link_slices,
    matches_annotation,
)
from app.detection.volume_truth import QueueEntry, load_left_out, queue_curve
from app.review import corrections
from app.review.errors import EditConflictError, InvalidInputError, NotFoundError
from app.review.jobs import JobContext, JobKind
from app.review.screening import NothingToScreenError, run_detector_job
from app.review.serialize import iso
from app.review.users import UserInfo
from app.review.vocabulary import CANDIDATE_ADDED, CANDIDATE_PENDING, CANDIDATE_STATUSES, ORIGIN_CSV

log = logging.getLogger(__name__)

# The runner gets the slices of whole series, at least this many at a time: few enough that a stop loses
# little, many enough that a cluster runner keeps its actors busy.
CHUNK_SLICES = 256


@dataclass(frozen=True)
class SeriesWork:
    """One sub-volume to screen: its stored slices, its key slices' context ranges, its spacing."""

    series_id: int
    folder: str
    patient: int
    study: int
    series: int
    stored: tuple[int, ...]
    keys: tuple[tuple[int, int, int, int], ...]  # (key index, first, last, key slice id)
    spacing_mm: tuple[float, float, float]

    def tasks(self) -> list[SliceTask]:
        """One detector task per stored slice."""
        return [
            SliceTask(slice_file_name(self.patient, self.study, self.series, k), self.spacing_mm)
            for k in self.stored
        ]


def _series_work(session: Session, model_version: str, limit: int | None) -> tuple[list[SeriesWork], int]:
    """Series with stored slices not yet screened by this model version, and how many were skipped."""
    done = set(session.scalars(select(VolumeRun.series_id).where(VolumeRun.model_version == model_version)))
    rows = session.execute(
        select(Series.id, Series.folder, Series.stored_slices).order_by(Series.folder)
    ).all()
    keys: dict[int, list[KeySlice]] = {}
    for ks in session.scalars(select(KeySlice).order_by(KeySlice.key_slice_index)):
        keys.setdefault(ks.series_id, []).append(ks)
    todo: list[SeriesWork] = []
    skipped = 0
    for sid, folder, stored in rows:
        mine = keys.get(sid)
        if not stored or not mine:
            continue
        if sid in done:
            skipped += 1
            continue
        first = mine[0]
        todo.append(
            SeriesWork(
                series_id=sid,
                folder=folder,
                patient=first.patient_index,
                study=first.study_index,
                series=first.series_index,
                stored=tuple(sorted(int(s) for s in stored)),
                keys=tuple((k.key_slice_index, k.slice_first, k.slice_last, k.id) for k in mine),
                spacing_mm=(first.spacing_x, first.spacing_y, first.spacing_z),
            )
        )
    return (todo if limit is None else todo[:limit]), skipped


def marked_lesions(session: Session, series_ids: Iterable[int]) -> dict[int, list[AnnotatedLesion]]:
    """The current lesions of some series (CSV and reviewers'), each over the slices it is taken to span."""
    ids = list(series_ids)
    out: dict[int, list[AnnotatedLesion]] = {sid: [] for sid in ids}
    if not ids:
        return out
    rows = session.execute(
        select(KeySlice.series_id, Lesion.slice_index, Lesion.box, Lesion.size_mm, KeySlice.spacing_z)
        .join(KeySlice, KeySlice.id == Lesion.key_slice_id)
        .where(KeySlice.series_id.in_(ids), Lesion.is_current)
    ).all()
    for sid, index, box, size_mm, dz in rows:
        first, last = lesion_extent(int(index), float(size_mm or 0.0), dz)
        b = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        out[sid].append(AnnotatedLesion(int(index), b, first, last))
    return out


def _rows(
    work: SeriesWork, cands: Sequence[Candidate], marked: Sequence[AnnotatedLesion], model_version: str
) -> list[VolumeCandidate]:
    """Database rows of one series' candidates (those outside every key slice's context are dropped)."""
    key_ids = {k[0]: k[3] for k in work.keys}
    ranges = [(k[0], k[1], k[2]) for k in work.keys]
    rows = []
    for c in cands:
        big = c.largest
        host = host_key_slice(big.slice_index, ranges)
        if host is None:
            # Not reachable from any key slice's viewer, so it could not be added; DeepLesion stores only
            # context slices, so this does not happen with its data.
            log.info(
                "%s: candidate on slice %d is outside every key slice's context", work.folder, big.slice_index
            )
            continue
        rows.append(
            VolumeCandidate(
                series_id=work.series_id,
                key_slice_id=key_ids[host],
                model_version=model_version,
                score=round(c.score, 6),
                slice_index=big.slice_index,
                box=[round(v, 3) for v in big.box],
                slice_first=c.first,
                slice_last=c.last,
                slices=[[b.slice_index, *(round(v, 3) for v in b.box), round(b.score, 6)] for b in c.boxes],
                matches_annotation=matches_annotation(c, marked),
                status=CANDIDATE_PENDING,
                created_at=utcnow(),
            )
        )
    return rows


def screen_volumes(
    *,
    session_factory: sessionmaker[Session],
    data_dir: Path | str,
    detector: Any,
    runner: SliceRunner | None = None,
    threshold: float = 0.3,
    limit: int | None = None,
    progress: bool = False,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the detector on every stored slice of each series not yet screened, store 3D candidates.

    `runner` runs the slices (default: this process); each chunk of whole series is written in one commit
    with its volume_runs rows, so a stopped screen resumes at the first series not written.
    """
    from tqdm import tqdm

    from app.deeplesion.store import SliceStore

    model_version = str(detector.model_version)
    if runner is None:
        runner = detect_locally(detector, SliceStore(data_dir), threshold)
    with session_factory() as session:
        todo, skipped = _series_work(session, model_version, limit)
        if not todo and not skipped:
            raise NothingToScreenError("no imported series has a stored slice")
    total = sum(len(w.stored) for w in todo)
    if on_progress is not None:
        on_progress(0, total)
    done = unreadable = written = 0
    bar = tqdm(total=total, desc="screen volumes", unit="slice", disable=not progress)
    try:
        for chunk in _chunks(todo):
            by_name: dict[str, SliceResult] = {}
            for res in runner([t for w in chunk for t in w.tasks()]):
                by_name[res.task.file_name] = res
                done += 1
                bar.update(1)
                if on_progress is not None:
                    on_progress(done, total)
            with session_factory() as session:
                marked = marked_lesions(session, [w.series_id for w in chunk])
                for w in chunk:
                    dets: dict[int, list[tuple[Sequence[float], float]]] = {}
                    bad = 0
                    for k, task in zip(w.stored, w.tasks(), strict=True):
                        got = by_name.get(task.file_name)
                        if got is None or got.error is not None:
                            bad += 1
                            continue
                        if got.detections:
                            dets[k] = [(d.box, d.score) for d in got.detections if d.score >= threshold]
                    rows = _rows(w, link_slices(dets), marked[w.series_id], model_version)
                    session.add_all(rows)
                    session.add(
                        VolumeRun(
                            series_id=w.series_id,
                            model_version=model_version,
                            threshold=threshold,
                            slices=len(w.stored),
                            unreadable=bad,
                            candidate_count=len(rows),
                            created_at=utcnow(),
                        )
                    )
                    unreadable += bad
                    written += len(rows)
                session.commit()
    finally:
        bar.close()
    with session_factory() as session:
        queue = session.scalar(
            select(func.count())
            .select_from(VolumeCandidate)
            .where(*_queue_filter(model_version), VolumeCandidate.status == CANDIDATE_PENDING)
        )
    result: dict[str, Any] = {
        "model_version": model_version,
        "provider": getattr(detector, "provider", None),
        "threshold": threshold,
        "series": len(todo),
        "skipped_series": skipped,
        "slices": total,
        "unreadable": unreadable,
        "candidates": written,
        "queue_candidates": int(queue or 0),
    }
    left_out = load_left_out(data_dir)
    if left_out is not None:
        with session_factory() as session:
            result["left_out_lesions"] = left_out_check(session, model_version, left_out)
    return result


def _chunks(todo: Sequence[SeriesWork]) -> Iterable[list[SeriesWork]]:
    """Whole series, grouped until a group holds CHUNK_SLICES slices."""
    chunk: list[SeriesWork] = []
    size = 0
    for w in todo:
        chunk.append(w)
        size += len(w.stored)
        if size >= CHUNK_SLICES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _queue_filter(model_version: str) -> tuple[Any, ...]:
    return (VolumeCandidate.model_version == model_version, VolumeCandidate.matches_annotation.is_(False))


def left_out_check(session: Session, model_version: str, left_out: Sequence[Any]) -> dict[str, Any]:
    """Synthetic data: how many left-out lesions the stored queue finds, and its precision."""
    folders: dict[int, str] = {sid: f for sid, f in session.execute(select(Series.id, Series.folder))}
    entries = [
        QueueEntry(
            folders[c.series_id],
            _candidate(c).boxes,
            c.score,
        )
        for c in session.scalars(select(VolumeCandidate).where(*_queue_filter(model_version)))
    ]
    screened = {
        folders[sid]
        for sid in session.scalars(
            select(VolumeRun.series_id).where(VolumeRun.model_version == model_version)
        )
    }
    mine = [lesion for lesion in left_out if lesion.folder in screened]
    curve = queue_curve(entries, mine)
    last = curve.points[-1] if curve.points else {"queue_length": 0, "precision": None, "found": 0}
    return {
        "total": len(mine),
        "found": last["found"],
        "queue_length": last["queue_length"],
        "precision": last["precision"],
    }


# ---------------------------------------------------------------- the queue and its review


def current_model_version(session: Session) -> str | None:
    """The model version of the latest volume run, or None before any."""
    return session.scalar(select(VolumeRun.model_version).order_by(VolumeRun.id.desc()).limit(1))


def candidate_dict(
    session: Session, c: VolumeCandidate, names: dict[int, str] | None = None
) -> dict[str, Any]:
    """A candidate as the API answers it."""
    ks = session.get_one(KeySlice, c.key_slice_id)
    if names is None:
        names = _names(session, [c.decided_by_id])
    return {
        "id": c.id,
        "version": c.version,
        "file_name": ks.file_name,
        "patient_index": ks.patient_index,
        "study_index": ks.study_index,
        "series_index": ks.series_index,
        "key_slice_index": ks.key_slice_index,
        "slice_index": c.slice_index,
        "box": [float(v) for v in c.box],
        "score": c.score,
        "slice_first": c.slice_first,
        "slice_last": c.slice_last,
        "slice_count": len(c.slices),
        "slices": [
            {"slice_index": int(s[0]), "box": [float(v) for v in s[1:5]], "score": float(s[5])}
            for s in c.slices
        ],
        "model_version": c.model_version,
        "matches_annotation": c.matches_annotation,
        "status": c.status,
        "lesion_id": c.lesion_id if c.status == CANDIDATE_ADDED else None,
        "decided_by": names.get(c.decided_by_id) if c.decided_by_id is not None else None,
        "decided_at": iso(c.decided_at),
    }


def _names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {uid: name for uid, name in session.execute(select(User.id, User.name).where(User.id.in_(wanted)))}


def candidate_queue(
    *,
    session: Session,
    status: str = CANDIDATE_PENDING,
    model_version: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Candidates matching no marked lesion (also none a reviewer marked since, when pending), best first."""
    if status not in CANDIDATE_STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(CANDIDATE_STATUSES)}, got {status!r}")
    version = model_version or current_model_version(session)
    if version is None:
        return {"model_version": None, "status": status, "total": 0, "items": []}
    where = [*_queue_filter(version), VolumeCandidate.status == status]
    if status == CANDIDATE_PENDING:
        hidden = _marked_since_screen(session, version)
        if hidden:
            where.append(VolumeCandidate.id.not_in(hidden))
    total = session.scalar(select(func.count()).select_from(VolumeCandidate).where(*where)) or 0
    page = list(
        session.scalars(
            select(VolumeCandidate)
            .where(*where)
            .order_by(VolumeCandidate.score.desc(), VolumeCandidate.id)
            .offset(offset)
            .limit(limit)
        )
    )
    names = _names(session, [c.decided_by_id for c in page])
    return {
        "model_version": version,
        "status": status,
        "total": total,
        "items": [candidate_dict(session, c, names) for c in page],
    }


def _marked_since_screen(session: Session, model_version: str) -> set[int]:
    """Pending candidates that a lesion a reviewer drew or moved since the screen now matches."""
    # The screen stored whether each candidate matched the lesions of its day; only series where a reviewer
    # has added or changed a lesion can have changed since, so only their candidates are checked again, and
    # the queue itself stays one indexed query whatever the dataset's size.
    touched = (
        select(KeySlice.series_id)
        .join(Lesion, Lesion.key_slice_id == KeySlice.id)
        .where(Lesion.is_current, or_(Lesion.origin != ORIGIN_CSV, Lesion.updated_by_id.is_not(None)))
        .distinct()
    )
    rows = list(
        session.scalars(
            select(VolumeCandidate).where(
                *_queue_filter(model_version),
                VolumeCandidate.status == CANDIDATE_PENDING,
                VolumeCandidate.series_id.in_(touched),
            )
        )
    )
    marked = marked_lesions(session, {c.series_id for c in rows})
    return {c.id for c in rows if matches_annotation(_candidate(c), marked[c.series_id])}


def _candidate(c: VolumeCandidate) -> Candidate:
    return Candidate(
        tuple(
            SliceBox(int(s[0]), (float(s[1]), float(s[2]), float(s[3]), float(s[4])), float(s[5]))
            for s in c.slices
        )
    )


def get_candidate(*, session: Session, candidate_id: int) -> dict[str, Any]:
    """One candidate, or NotFoundError."""
    return candidate_dict(session, _get(session, candidate_id))


def _get(session: Session, candidate_id: int) -> VolumeCandidate:
    c = session.get(VolumeCandidate, candidate_id)
    if c is None:
        raise NotFoundError(f"no volume candidate {candidate_id}", code="candidate_not_found")
    return c


def _decide(
    session: Session, c: VolumeCandidate, version: int, user: UserInfo, status: str, lesion_id: int | None
) -> None:
    """Move a pending candidate at `version` to `status` (a compare-and-set: one reviewer wins a race)."""
    now = utcnow()
    moved = session.execute(
        update(VolumeCandidate)
        .where(
            VolumeCandidate.id == c.id,
            VolumeCandidate.version == version,
            VolumeCandidate.status == CANDIDATE_PENDING,
        )
        .values(
            status=status, lesion_id=lesion_id, decided_by_id=user.id, decided_at=now, version=version + 1
        )
        .execution_options(synchronize_session=False)
    )
    if not getattr(moved, "rowcount", 0):
        session.rollback()
        fresh = _get(session, c.id)
        session.refresh(fresh)
        current = candidate_dict(session, fresh)
        who = current["decided_by"]
        raise EditConflictError(
            f"volume candidate {c.id} was {CANDIDATE_STATUSES[fresh.status]} by {who or 'someone else'} first"
            if fresh.status != CANDIDATE_PENDING
            else f"volume candidate {c.id} changed meanwhile (now version {fresh.version})",
            current=current,
            changed_by=who,
            changed_at=fresh.decided_at,
        )


def add_candidate(
    *, session: Session, user: UserInfo, candidate_id: int, version: int, lesion_type: int
) -> dict[str, Any]:
    """Add the candidate as a lesion on its slice (its largest box) through the review corrections."""
    c = _get(session, candidate_id)
    if c.status != CANDIDATE_PENDING:
        # Raises the conflict with the current state.
        _decide(session, c, version, user, CANDIDATE_ADDED, None)
    ks = session.get_one(KeySlice, c.key_slice_id)
    # A box at the image border may reach a fraction of a pixel past it; the lesion's box must not.
    w, h = ks.image_width - 1, ks.image_height - 1
    x1, y1, x2, y2 = (float(v) for v in c.box)
    box = [max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)]

    def decided(lesion: Lesion) -> None:
        _decide(session, c, version, user, CANDIDATE_ADDED, lesion.id)

    result = corrections.add_lesion(
        session=session,
        user=user,
        file_name=ks.file_name,
        lesion_type=lesion_type,
        box=box,
        slice_index=c.slice_index,
        on_added=decided,
    )
    session.expire_all()
    return {**result, "candidate": get_candidate(session=session, candidate_id=candidate_id)}


def follow_added_lesion(session: Session, lesion: Lesion, user: UserInfo) -> None:
    """Open the candidate added as this lesion again while the lesion is deleted (delete, undone add)."""
    # The candidate keeps lesion_id while open again, so that the redo finds it; answers show it only
    # while the candidate is added (candidate_dict).
    for c in session.scalars(select(VolumeCandidate).where(VolumeCandidate.lesion_id == lesion.id)):
        if lesion.deleted and c.status == CANDIDATE_ADDED:
            c.status, c.decided_by_id, c.decided_at = CANDIDATE_PENDING, None, None
        elif not lesion.deleted and c.status == CANDIDATE_PENDING:
            c.status, c.decided_by_id, c.decided_at = CANDIDATE_ADDED, user.id, utcnow()
        else:
            continue
        c.version += 1


def dismiss_candidate(*, session: Session, user: UserInfo, candidate_id: int, version: int) -> dict[str, Any]:
    """Dismiss the candidate (not a lesion), recording who and when."""
    c = _get(session, candidate_id)
    _decide(session, c, version, user, "dismissed", None)
    session.commit()
    session.expire_all()
    return {"candidate": get_candidate(session=session, candidate_id=candidate_id)}


# ---------------------------------------------------------------- the job and the command


def run_volume_screen(
    *,
    database_url: str,
    data_dir: Path | str,
    detector: Any,
    runner: SliceRunner | None = None,
    threshold: float = 0.3,
    limit: int | None = None,
    progress: bool = True,
    requested_by: str = "cli",
) -> dict[str, Any]:
    """The `screen-volumes` command: a volume screen job in this process (same one-job slot as the app)."""
    return run_detector_job(
        database_url=database_url,
        data_dir=data_dir,
        kind=VOLUME_SCREEN,
        params={"threshold": threshold, "limit": limit},
        detector=detector,
        requested_by=requested_by,
        progress=progress,
        runner=runner,
    )


def _volume_screen(ctx: JobContext) -> dict[str, Any]:
    """The volume screen job's work: in this process, or on the cluster the CLI's --ray names."""
    limit = ctx.params.get("limit")
    return screen_volumes(
        session_factory=ctx.session_factory,
        data_dir=ctx.data_dir,
        detector=ctx.detector,
        runner=ctx.runner,
        threshold=float(ctx.params["threshold"]),
        limit=None if limit is None else int(limit),
        on_progress=ctx.on_progress,
        progress=ctx.progress,
    )


VOLUME_SCREEN = JobKind(name="volume_screen", work=_volume_screen)
