"""SQLAlchemy 2 typed models: imported originals, corrections beside them, users, predictions, audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations get stable constraint names."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Patient(Base):
    """A patient, keyed by DL_info's Patient_index."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    gender: Mapped[str] = mapped_column(String(8))


class Study(Base):
    """A study of a patient (Study_index), with the patient's age at that study."""

    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("patient_id", "study_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    study_index: Mapped[int] = mapped_column(Integer)
    age: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Series(Base):
    """A CT series (Images_png folder) and which of its slices are stored on disk."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_index: Mapped[int] = mapped_column(Integer)
    folder: Mapped[str] = mapped_column(String(32), unique=True)
    stored_slices: Mapped[list[Any]] = mapped_column(JSON, default=list)


class KeySlice(Base):
    """A key slice (DL_info File_name) with its shared metadata and a denormalised work-list summary."""

    __tablename__ = "key_slices"
    # (sort key, file_name) indexes let every work-list sort walk an index in order and stop after a page.
    __table_args__ = (
        Index("ix_key_slices_sort_patient", "patient_index", "file_name"),
        Index("ix_key_slices_sort_size", "max_size_mm", "file_name"),
        Index("ix_key_slices_sort_lesion_count", "lesion_count", "file_name"),
        Index("ix_key_slices_sort_missed", "missed_score", "file_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    file_name: Mapped[str] = mapped_column(String(32), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    patient_index: Mapped[int] = mapped_column(Integer)
    study_index: Mapped[int] = mapped_column(Integer)
    series_index: Mapped[int] = mapped_column(Integer)
    key_slice_index: Mapped[int] = mapped_column(Integer)
    split: Mapped[int] = mapped_column(Integer, index=True)
    spacing_x: Mapped[float] = mapped_column(Float)
    spacing_y: Mapped[float] = mapped_column(Float)
    spacing_z: Mapped[float] = mapped_column(Float)
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    dicom_min: Mapped[float] = mapped_column(Float)
    dicom_max: Mapped[float] = mapped_column(Float)
    slice_first: Mapped[int] = mapped_column(Integer)
    slice_last: Mapped[int] = mapped_column(Integer)
    gender: Mapped[str] = mapped_column(String(8))
    age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Summary of the current (merged) lesions, kept up to date by app.review so the work list
    # filters with plain indexed columns instead of aggregating 32k lesions per request.
    lesion_count: Mapped[int] = mapped_column(Integer, default=0)
    max_size_mm: Mapped[float] = mapped_column(Float, default=0.0)
    # Bit (type + 1) set for each current lesion type (-1..8).
    lesion_type_mask: Mapped[int] = mapped_column(Integer, default=0)
    noisy: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    prediction_count: Mapped[int] = mapped_column(Integer, default=0)
    unreviewed_predictions: Mapped[int] = mapped_column(Integer, default=0)
    missed_score: Mapped[float | None] = mapped_column(Float, nullable=True)


class OriginalLesion(Base):
    """One DL_info.csv row exactly as imported (file values, 1-based coordinates); never modified."""

    __tablename__ = "original_lesions"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"), index=True)
    row_number: Mapped[int] = mapped_column(Integer, unique=True)
    # None for a box-only row (NaN in the file, e.g. a corrected export with an accepted prediction).
    measurement_coordinates: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    bounding_box: Mapped[list[Any]] = mapped_column(JSON)
    lesion_diameters_px: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    normalized_location: Mapped[list[Any]] = mapped_column(JSON)
    coarse_lesion_type: Mapped[int] = mapped_column(Integer)
    possibly_noisy: Mapped[int] = mapped_column(Integer)
    slice_range: Mapped[list[Any]] = mapped_column(JSON)
    spacing_mm: Mapped[list[Any]] = mapped_column(JSON)
    image_size: Mapped[list[Any]] = mapped_column(JSON)
    dicom_window: Mapped[list[Any]] = mapped_column(JSON)
    patient_gender: Mapped[str] = mapped_column(String(8))
    patient_age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    train_val_test: Mapped[int] = mapped_column(Integer)
    # Cell texts as read (packed by app.review.importer.pack_raw): the original export is byte for byte.
    raw: Mapped[str | None] = mapped_column(JSON, nullable=True)


class Lesion(Base):
    """A lesion's current state: one home for its independent facts (see docs/api.md, Lesion).

    Geometry is in the app's 0-based pixel frame. The rules that derive a review summary or an overlay
    layer from these facts live in app.review.lesion_state; the SQL forms of "current" and "noisy" here.
    """

    __tablename__ = "lesions"
    __table_args__ = (Index("ix_lesions_key_slice_deleted", "key_slice_id", "deleted"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    original_id: Mapped[int | None] = mapped_column(
        ForeignKey("original_lesions.id"), unique=True, nullable=True
    )
    origin: Mapped[str] = mapped_column(String(16))  # app.review.vocabulary.ORIGINS
    # None: known only by its box (no RECIST measured).
    recist: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    box: Mapped[list[Any]] = mapped_column(JSON)
    slice_index: Mapped[int] = mapped_column(Integer)
    lesion_type: Mapped[int] = mapped_column(Integer, index=True)
    # Long axis in mm (RECIST, else the box's longer unpadded side): the work list's size.
    size_mm: Mapped[float] = mapped_column(Float, default=0.0)
    # The noisy flag: set by flag (or Possibly_noisy on import), cleared only by unflag or undo.
    flag_reason: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)
    flag_note: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    flagged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, default=None)
    flagged_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
    confirmed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, default=None)
    confirmed_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, default=None)
    created_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True, default=None)
    score: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    prediction_id: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The ORM adds "AND version = :old" to every UPDATE, so two racing writers cannot both win.
    __mapper_args__ = {"version_id_col": version}
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)

    @hybrid_property
    def is_current(self) -> bool:
        """Not deleted: shown, counted and exported."""
        return not self.deleted

    @is_current.inplace.expression
    @classmethod
    def _is_current_sql(cls) -> ColumnElement[bool]:
        return cls.deleted.is_(False)

    @hybrid_property
    def is_noisy(self) -> bool:
        """Flagged noisy, by a reviewer or by the dataset (Possibly_noisy)."""
        return self.flag_reason is not None

    @is_noisy.inplace.expression
    @classmethod
    def _is_noisy_sql(cls) -> ColumnElement[bool]:
        return cls.flag_reason.is_not(None)


class LesionLink(Base):
    """An edge of the follow-up lesion graph: two lesions of one patient's studies are the same lesion."""

    __tablename__ = "lesion_links"
    __table_args__ = (UniqueConstraint("from_lesion_id", "to_lesion_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_index: Mapped[int] = mapped_column(Integer, index=True)
    from_lesion_id: Mapped[int] = mapped_column(ForeignKey("lesions.id"), index=True)  # the earlier study
    to_lesion_id: Mapped[int] = mapped_column(ForeignKey("lesions.id"), index=True)
    origin: Mapped[str] = mapped_column(String(16))  # app.review.vocabulary.LINK_ORIGINS
    status: Mapped[str] = mapped_column(String(16))  # app.review.vocabulary.LINK_STATUSES
    cost: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, default=None)
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)


class User(Base):
    """A reviewer, adjudicator or admin; the automatic local admin has no password hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    role: Mapped[str] = mapped_column(String(16))  # app.review.users.ROLES
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuthSession(Base):
    """A server-side login session; the cookie holds a random token whose SHA-256 is stored here."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class LoginAttempt(Base):
    """Sign-in attempts counted per key (name and client, client, name) in a window (app.review.throttle)."""

    __tablename__ = "login_attempts"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class KeySliceReview(Base):
    """The review status of one key slice for one reviewer."""

    __tablename__ = "key_slice_reviews"
    __table_args__ = (
        UniqueConstraint("key_slice_id", "user_id"),
        Index("ix_key_slice_reviews_user_status", "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default="unreviewed")
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    """A detector box on a key slice, kept apart from the lesions until accepted."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_key_slice_model", "key_slice_id", "model_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    model_version: Mapped[str] = mapped_column(String(128))
    box: Mapped[list[Any]] = mapped_column(JSON)
    score: Mapped[float] = mapped_column(Float)
    # Proposed RECIST end points (app.detection.recist); None for runs stored before proposals existed.
    recist: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | accepted | rejected
    matches_annotation: Mapped[bool] = mapped_column(Boolean, default=False)
    lesion_id: Mapped[int | None] = mapped_column(ForeignKey("lesions.id"), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PredictionRun(Base):
    """One detector run of a model version on a key slice, also an empty one: the cache and resume key."""

    __tablename__ = "prediction_runs"
    __table_args__ = (UniqueConstraint("key_slice_id", "model_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    model_version: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Score threshold the detections were stored down to; None for runs recorded before this table.
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    prediction_count: Mapped[int] = mapped_column(Integer, default=0)


class AuditEntry(Base):
    """Append-only record of one change: who, when, what, the state before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_key_slice", "key_slice_id", "id"),
        Index("ix_audit_log_lesion", "lesion_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    user_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    key_slice_id: Mapped[int | None] = mapped_column(ForeignKey("key_slices.id"), nullable=True)
    lesion_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prediction_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class UndoItem(Base):
    """Undo/redo stack of a user on a key slice; kept apart so the audit log stays append-only."""

    __tablename__ = "undo_items"
    __table_args__ = (Index("ix_undo_items_user_key_slice", "user_id", "key_slice_id", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audit_log.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    # done: can be undone; undone: can be redone; dead: a newer change cleared the redo stack.
    state: Mapped[str] = mapped_column(String(8), default="done")
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvaluationRun(Base):
    """A stored FROC evaluation result (GET/POST /api/evaluation)."""

    __tablename__ = "evaluation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_version: Mapped[str] = mapped_column(String(128))
    # "train" | "val" | "test" | "all" and "original" | "corrected": GET filters the latest run by them.
    split: Mapped[str] = mapped_column(String(8))
    against: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The background job that produced it; None for runs of the `evaluate` command.
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("detector_jobs.id"), unique=True, nullable=True, default=None
    )


class DetectorJob(Base):
    """A detector run in the background (FROC evaluation or batch screening): status, progress, result."""

    __tablename__ = "detector_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # evaluation | screen
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | done | failed
    # What the job was asked to do, e.g. {"split": "test", "against": "original"} for an evaluation.
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A screen's summary; None for an evaluation (its FROC is an evaluation_runs row) and until done.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    model_version: Mapped[str] = mapped_column(String(128))
    requested_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # 1 while queued or running, NULL afterwards: the unique constraint lets only one detector job (of any
    # kind) be active across every server process (NULLs never collide on SQLite or PostgreSQL).
    active_lock: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    # The process that runs it and its last sign of life, so a job whose process died is failed.
    worker_host: Mapped[str] = mapped_column(String(255))
    worker_pid: Mapped[int] = mapped_column(Integer)
    worker_token: Mapped[str] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class TeamAssignment(Base):
    """Work handed to readers: a filtered set of key slices, single or double read (app.review.team)."""

    __tablename__ = "team_assignments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(8))  # app.review.team.rules.MODES
    filter: Mapped[dict[str, Any]] = mapped_column(JSON)
    reader_ids: Mapped[list[Any]] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TeamRead(Base):
    """One read of a key slice in an assignment: a slot (0, or 0 and 1 for double), its reader and marks.

    The marks are the reader's own (app.review.team.rules.Read), kept apart from the lesions, which change
    only when an adjudicator applies a consensus; undo/redo hold the audit ids of the read's own saves.
    """

    __tablename__ = "team_reads"
    __table_args__ = (
        UniqueConstraint("assignment_id", "key_slice_id", "slot"),
        UniqueConstraint("assignment_id", "key_slice_id", "reader_id", name="uq_team_reads_one_per_reader"),
        Index("ix_team_reads_next", "assignment_id", "status", "key_slice_id"),
        Index("ix_team_reads_reader", "reader_id", "status"),
        # Progress per assignment and reader: a count over this index, never over the rows.
        Index("ix_team_reads_progress", "assignment_id", "reader_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("team_assignments.id"))
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    slot: Mapped[int] = mapped_column(Integer)
    reader_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, default=None)
    status: Mapped[str] = mapped_column(String(8), default="open")  # app.review.team.rules.READ_STATUSES
    baseline: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    marks: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    undo: Mapped[list[Any]] = mapped_column(JSON, default=list)
    redo: Mapped[list[Any]] = mapped_column(JSON, default=list)
    claimed_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}


class TeamAdjudication(Base):
    """A double-read key slice whose reads are both done: disagreements, and the consensus once applied."""

    __tablename__ = "team_adjudications"
    __table_args__ = (
        UniqueConstraint("assignment_id", "key_slice_id"),
        Index("ix_team_adjudications_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("team_assignments.id"))
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    status: Mapped[str] = mapped_column(String(8))  # app.review.team.rules.ADJUDICATION_STATUSES
    disagreements: Mapped[list[Any]] = mapped_column(JSON, default=list)
    consensus: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    # Audit ids of the lesion corrections that applied the consensus (undone together).
    applied: Mapped[list[Any]] = mapped_column(JSON, default=list)
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}


class VolumeRun(Base):
    """One volume screen of a series by a model version, also one that found nothing: the resume key."""

    __tablename__ = "volume_runs"
    __table_args__ = (UniqueConstraint("series_id", "model_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    model_version: Mapped[str] = mapped_column(String(128))
    threshold: Mapped[float] = mapped_column(Float)
    slices: Mapped[int] = mapped_column(Integer)  # stored slices the detector ran on
    unreadable: Mapped[int] = mapped_column(Integer, default=0)
    candidate_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class VolumeCandidate(Base):
    """Detector boxes on adjacent slices of a series joined into one lesion candidate (app.detection.volume).

    Kept apart from the lesions, like predictions: adding one creates a lesion through the review
    corrections (on `key_slice_id`, the key slice whose context holds `slice_index`), dismissing records
    who and when.
    """

    __tablename__ = "volume_candidates"
    __table_args__ = (
        Index("ix_volume_candidates_queue", "model_version", "status", "score"),
        Index("ix_volume_candidates_series", "series_id", "model_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    key_slice_id: Mapped[int] = mapped_column(ForeignKey("key_slices.id"))
    model_version: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    # The slice where its box is largest, and that box (0-based pixels): where the viewer opens it.
    slice_index: Mapped[int] = mapped_column(Integer)
    box: Mapped[list[Any]] = mapped_column(JSON)
    slice_first: Mapped[int] = mapped_column(Integer)
    slice_last: Mapped[int] = mapped_column(Integer)
    # Every slice's box: [[slice_index, x1, y1, x2, y2, score], ...] in slice order.
    slices: Mapped[list[Any]] = mapped_column(JSON)
    matches_annotation: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # app.review.vocabulary
    lesion_id: Mapped[int | None] = mapped_column(ForeignKey("lesions.id"), nullable=True, default=None)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True, default=None)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": version}
