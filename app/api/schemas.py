"""Response models of every JSON route (docs/api.md): the OpenAPI schema is the contract the tests check."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model
from typing_extensions import TypeAliasType

from app.api.bodies import ExportState, SplitName, SplitOrAll, StatusName
from app.deeplesion.schema import LESION_TYPES
from app.review.evaluations import EVALUATION
from app.review.jobs import JOB_STATUSES
from app.review.screening import SCREEN
from app.review.users import ROLES
from app.review.vocabulary import (
    ALL_FLAG_REASONS,
    CANDIDATE_STATUSES,
    LAYERS,
    ORIGINS,
    REVIEW_STATES,
    STATUSES,
)
from app.review.volume import VOLUME_SCREEN


def one_of(words: Iterable[object]) -> Any:
    """A Literal of the given words, so that the schema enumerates a vocabulary without a hand-typed copy."""
    return Literal[tuple(words)]


# The enumerated words, each from its one home (mypy sees plain types; the schema sees the enums).
if TYPE_CHECKING:
    Origin: TypeAlias = str
    ReviewState: TypeAlias = str
    Layer: TypeAlias = str
    FlagReason: TypeAlias = str
    Role: TypeAlias = str
    JobKind: TypeAlias = str
    CandidateStatus: TypeAlias = str
    JobStatus: TypeAlias = str
    LesionType: TypeAlias = int
else:
    Origin = one_of(ORIGINS)
    ReviewState = one_of(REVIEW_STATES)
    Layer = one_of(LAYERS)
    # The dataset's own flag (Possibly_noisy) included: an answer may carry it, a request may not.
    FlagReason = one_of(ALL_FLAG_REASONS)
    Role = one_of(ROLES)
    JobKind = one_of((EVALUATION.name, SCREEN.name, VOLUME_SCREEN.name))
    CandidateStatus = one_of(CANDIDATE_STATUSES)
    JobStatus = one_of(JOB_STATUSES)
    # Answers carry JSON integers, so a Literal fits here (a request's query string needs bodies.LesionType).
    LesionType = one_of(LESION_TYPES)
# Words a request takes too: the request bodies' literals.
Status = StatusName
Split = SplitName

# Timestamps stay the server's own ISO 8601 text (re-parsing would reformat them); the schema says so.
Iso = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Recist = Annotated[list[float], Field(min_length=8, max_length=8)]
Box = Annotated[list[float], Field(min_length=4, max_length=4)]
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]
IntPair = Annotated[list[int], Field(min_length=2, max_length=2)]
Triple = Annotated[list[float], Field(min_length=3, max_length=3)]


class Out(BaseModel):
    """A response body: every field it sends is declared (additionalProperties false in the schema)."""

    model_config = ConfigDict(extra="forbid")


class Stored(BaseModel):
    """A body the server stored as JSON earlier (maybe by an older version): known fields, others kept."""

    model_config = ConfigDict(extra="allow")


# -- Auth ----------------------------------------------------------------------------------------------
class User(Out):
    """A user as the API shows it."""

    id: int
    name: str
    role: Role


class SignedIn(Out):
    """The signed-in user and the CSRF token its writes carry."""

    user: User
    csrf_token: str


class SignedOut(Out):
    """Who was signed out."""

    signed_out: str


# -- Health --------------------------------------------------------------------------------------------
class DetectorHealth(Out):
    """State of the lesion detector."""

    loaded: bool
    provider: str | None
    model_version: str | None
    synthetic_model: bool
    error: str | None


class Health(Out):
    """What the server runs on."""

    status: str
    version: str
    database: str
    synthetic: bool
    data_dir: str
    detector: DetectorHealth


# -- Work list -----------------------------------------------------------------------------------------
class KeySliceSummary(Out):
    """One row of the work list."""

    file_name: str
    patient_index: int
    study_index: int
    series_id: int
    key_slice_index: int
    split: Split
    lesion_count: int
    lesion_types: list[LesionType]
    max_size_mm: float
    noisy: bool
    status: Status
    prediction_count: int
    unreviewed_predictions: int
    missed_score: float | None
    # Whether the key slice's own image is stored on disk (null where not looked up).
    image_on_disk: bool | None = None


# {total, unreviewed, in_progress, done}: one count per status word.
StatusCounts: type[BaseModel] = create_model(
    "StatusCounts",
    __base__=Out,
    __doc__="Key slices of the filtered set, in total and by the reviewer's status.",
    total=(int, ...),
    **{status: (int, ...) for status in STATUSES},  # type: ignore[call-overload]
)


class WorkList(Out):
    """One page of the work list."""

    items: list[KeySliceSummary]
    total: int
    page: int
    page_size: int
    counts: StatusCounts  # type: ignore[valid-type]


class Neighbours(Out):
    """The previous and next key slice of the filtered queue."""

    previous: str | None
    next: str | None


# -- Key slice, lesions, predictions ------------------------------------------------------------------
class Geometry(Out):
    """Where a lesion is, in the 0-based pixel frame of its slice."""

    recist: Recist | None
    box: Box
    diameters_px: Pair | None
    diameters_mm: Pair | None
    long_axis_mm: float
    lesion_type: LesionType
    slice_index: int


class Flag(Out):
    """A noisy flag: why, and who set it (null for the dataset's own Possibly_noisy)."""

    reason: FlagReason
    note: str
    by: str | None
    at: Iso | None


class Stamp(Out):
    """Who did something, and when."""

    by: str | None
    at: Iso | None


class LesionPrediction(Out):
    """The prediction an accepted lesion came from."""

    id: int | None
    model_version: str | None
    score: float | None


class Lesion(Out):
    """One lesion: its independent facts and what the rules derive from them."""

    id: int
    key_slice: str
    version: int
    origin: Origin
    current: Geometry
    original: Geometry | None
    measured: bool
    flag: Flag | None
    confirmed: Stamp | None
    created: Stamp | None
    prediction: LesionPrediction | None
    edited: bool
    review: ReviewState
    layer: Layer
    updated_by: str | None
    updated_at: Iso | None


class Prediction(Out):
    """A stored detector prediction on a key slice."""

    id: int
    box: Box
    # Proposed long axis then short axis end points, original pixels; accepting the prediction keeps them.
    recist: Recist | None = None
    score: float
    model_version: str
    status: str
    matches_annotation: bool
    lesion_id: int | None
    version: int
    created_at: Iso | None


class KeySlice(Out):
    """A key slice with its context slices, current lesions and predictions."""

    file_name: str
    patient_index: int
    study_index: int
    series_id: int
    key_slice_index: int
    split: Split
    gender: str | None
    age: int | None
    spacing_mm: Triple
    image_size: IntPair
    dicom_window: Pair
    slice_range: IntPair
    series_folder: str
    stored_slices: list[int]
    missing_slices: list[int]
    key_slice_stored: bool
    status: Status
    status_version: int
    version: int
    lesions: list[Lesion]
    predictions: list[Prediction]


class AuditEntry(Out):
    """One entry of the audit log; `before` / `after` are the states it replaced and wrote."""

    id: int
    at: Iso | None
    user: str | None
    action: str
    lesion_id: int | None
    prediction_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class ReviewResult(Out):
    """What every review write answers: the key slice as it is now, and what the write touched."""

    key_slice: KeySlice
    lesion_id: int | None
    prediction_id: int | None
    entry: AuditEntry | None


class FollowupLink(Out):
    """An edge of the follow-up lesion graph (status: LINK_STATUSES)."""

    id: int
    patient_index: int
    from_lesion_id: int
    to_lesion_id: int
    origin: str
    status: str
    cost: float | None
    version: int


class FollowupLesion(Out):
    """A lesion of the patient with its track, axes (mm) and where it lies on its slice."""

    lesion_id: int
    file_name: str
    study_index: int
    slice_index: int
    slice_name: str
    lesion_type: int
    long_mm: float
    short_mm: float
    centre_px: list[float]
    box: list[float]
    image_size: list[int]
    track_id: str


class FollowupPoint(Out):
    """A track in one study: its axes and % change from the track's first study."""

    study_index: int
    lesion_id: int
    long_mm: float
    short_mm: float
    long_change_pct: float | None
    short_change_pct: float | None


class FollowupTrack(Out):
    """One lesion over time."""

    track_id: str
    lesion_type: int
    points: list[FollowupPoint]


class FollowupResponseStudy(Out):
    """Sum of target diameters in one study and, after the baseline, its RECIST 1.1 category and rule."""

    study_index: int
    sum_mm: float
    category: str | None = None
    rule: str | None = None
    change_from_baseline_pct: float | None = None
    change_from_nadir_pct: float | None = None
    nadir_mm: float | None = None


class FollowupResponse(Out):
    """RECIST 1.1 response against a baseline study."""

    baseline_study: int
    targets: list[str]
    studies: list[FollowupResponseStudy]
    note: str | None = None


class FollowupPatient(Out):
    """Everything the follow-up view shows of one patient."""

    patient_index: int
    studies: list[int]
    lesions: list[FollowupLesion]
    links: list[FollowupLink]
    tracks: list[FollowupTrack]
    response: FollowupResponse


class FollowupMatchRun(Out):
    """What a matching run did."""

    patients: int
    lesions: int
    proposed: int
    kept: int
    appearance: int  # lesions also compared by their patch (slice on disk, appearance asked for)
    seconds: float


class FollowupGraphNode(Out):
    """A lesion of the graph with its track."""

    lesion_id: int
    file_name: str
    patient_index: int
    study_index: int
    track_id: str


class FollowupGraph(Out):
    """The lesion graph: nodes and same-lesion edges."""

    nodes: list[FollowupGraphNode]
    edges: list[FollowupLink]


class PredictRun(Out):
    """How a predict request was served."""

    model_version: str
    provider: str | None
    elapsed_ms: float
    cached: bool
    threshold: float
    # Context slices the detector wanted that are not stored: a nearer slice was repeated in their place.
    context_missing: list[int] = []


class PredictResult(Out):
    """The run and the key slice with every stored prediction."""

    run: PredictRun
    key_slice: KeySlice


class Predictions(Out):
    """Stored predictions of a key slice."""

    predictions: list[Prediction]


# -- Dataset overview ----------------------------------------------------------------------------------
class Point(Out):
    """A lesion's body-relative position (Normalized_lesion_location x and z)."""

    file_name: str
    x: float
    z: float
    lesion_type: LesionType


class SizeHistogram(Out):
    """Current lesions by long axis; `counts` has one fewer entry than `edges_mm`."""

    edges_mm: list[float]
    counts: list[int]


ReviewerProgress: type[BaseModel] = create_model(
    "ReviewerProgress",
    __base__=Out,
    __doc__="One reviewer's key slices by status.",
    reviewer=(str, ...),
    **{status: (int, ...) for status in STATUSES},  # type: ignore[call-overload]
)


class SplitProgress(Out):
    """Key slices of a split, and how many someone marked done."""

    split: Split
    total: int
    done: int


class Progress(Out):
    """Review progress."""

    by_reviewer: list[ReviewerProgress]  # type: ignore[valid-type]
    by_split: list[SplitProgress]


class Stats(Out):
    """The dataset overview figures."""

    points: list[Point]
    type_counts: dict[str, int]
    size_histogram: SizeHistogram
    progress: Progress


# -- Detector jobs, evaluation, screening --------------------------------------------------------------
class JobProgress(Out):
    """Key slices done of total (0 until known)."""

    done: int
    total: int


class DetectorJob(Out):
    """A background detector job of any kind."""

    id: int
    kind: JobKind
    noun: str
    status: JobStatus
    params: dict[str, Any]
    model_version: str | None
    requested_by: str
    created_at: Iso | None
    started_at: Iso | None
    finished_at: Iso | None
    progress: JobProgress
    error: str | None
    result: dict[str, Any] | None
    result_url: str | None


class Jobs(Out):
    """Detector jobs, newest first."""

    jobs: list[DetectorJob]


class FrocCurve(Stored):
    """The thinned FROC curve."""

    fp_per_image: list[float]
    sensitivity: list[float]


class FrocGroup(Stored):
    """Sensitivity of one group of lesions (a type, a size or a slice-interval bin)."""

    key: str
    label: str
    lesions: int
    sensitivity: list[float]


class Evaluation(Stored):
    """A stored FROC result (older rows, e.g. from the command line, may lack the later fields)."""

    fp_rates: list[float]
    sensitivity: list[float]
    curve: FrocCurve
    images: int
    lesions: int
    iou_threshold: float
    breakdowns: dict[str, list[FrocGroup]]
    split: SplitOrAll | None = None
    against: ExportState | None = None
    model_version: str | None = None
    provider: str | None = None
    synthetic_model: bool | None = None
    created_at: Iso | None = None
    run_by: str | None = None
    job_id: int | None


# -- Errors ----------------------------------------------------------------------------------------------
class Error(Out):
    """An error: a message for people and a code for programs."""

    detail: str
    code: str


class FileError(Error):
    """An error about one stored file (slice_not_found, corrupt_slice), named relative to the data folder."""

    file: str


class ValidationIssue(Out):
    """One problem with a request, as pydantic reports it (values made JSON-safe)."""

    type: str | None = None
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None
    url: str | None = None


class InvalidRequest(Error):
    """A request that failed validation (invalid_input), with every problem found."""

    errors: list[ValidationIssue]


class EditConflict(Error):
    """A write based on a stale version: the current state and who changed it."""

    current: dict[str, Any]
    changed_by: str | None
    changed_at: Iso | None
    key_slice: KeySlice | None


class DuplicateLesion(Error):
    """Accepting the prediction would mark a lesion a second time."""

    lesion_id: int


class JobRunning(Error):
    """Another detector job holds the one-job slot."""

    job: DetectorJob | None


# Unions named for the schema (else each route would get its own auto-titled copy).
InvalidInput = TypeAliasType("InvalidInput", InvalidRequest | FileError | Error)
NotFoundOrNoFile = TypeAliasType("NotFoundOrNoFile", FileError | Error)
AcceptConflict = TypeAliasType("AcceptConflict", EditConflict | DuplicateLesion)

# What each status means, with the body it carries; a route lists the ones it can answer.
ERROR_DESCRIPTIONS: dict[int, str] = {
    401: "Not signed in",
    403: "Wrong role, or a write without the session's CSRF token",
    404: "Unknown thing",
    409: "Conflict",
    413: "Request body larger than the route's limit",
    422: "Invalid input",
    429: "Too many failed sign-ins",
    503: "No detector model, or the detector failed",
}
DEFAULT_ERROR_BODIES: dict[int, Any] = {
    401: Error,
    403: Error,
    404: Error,
    409: EditConflict,
    413: Error,
    422: InvalidInput,
    429: Error,
    503: Error,
}


def error_responses(
    *statuses: int, bodies: Mapping[int, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status it can answer with its body (`bodies` overrides defaults)."""
    extra = dict(bodies or {})
    if not set(extra) <= set(statuses):
        raise ValueError(f"bodies for statuses the route does not list: {sorted(set(extra) - set(statuses))}")
    chosen = {**DEFAULT_ERROR_BODIES, **extra}
    return {s: {"model": chosen[s], "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


# -- Volume screening ------------------------------------------------------------------------------------
class CandidateSlice(Out):
    """A volume candidate's box on one of its slices."""

    slice_index: int
    box: Box
    score: float


class VolumeCandidate(Out):
    """Detector boxes on adjacent slices of a series joined into one lesion candidate (app.review.volume)."""

    id: int
    version: int
    file_name: str  # the key slice whose viewer opens it (its context holds slice_index)
    patient_index: int
    study_index: int
    series_index: int
    key_slice_index: int
    slice_index: int  # where its box is largest
    box: Box
    score: float
    slice_first: int
    slice_last: int
    slice_count: int
    slices: list[CandidateSlice]
    model_version: str
    matches_annotation: bool
    status: CandidateStatus
    lesion_id: int | None
    decided_by: str | None
    decided_at: Iso | None


class VolumeCandidates(Out):
    """A page of the candidates queue, best score first."""

    model_version: str | None
    status: CandidateStatus
    total: int
    items: list[VolumeCandidate]


class CandidateDecision(Out):
    """A dismissed candidate as it is now."""

    candidate: VolumeCandidate


class CandidateAdded(ReviewResult):
    """An added candidate: the review write's answer (the key slice with the new lesion) and the candidate."""

    candidate: VolumeCandidate
