"""Request bodies and response models of the team review routes (app/api/team.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field

from app.api.bodies import Box, LesionType, Recist, SplitName, Version
from app.api.schemas import Iso, Out, ReviewResult
from app.review.team.report import CSV_TABLES
from app.review.team.rules import ADJUDICATION_STATUSES, DISAGREEMENT_KINDS, MODES, READ_STATUSES
from app.review.vocabulary import ALL_FLAG_REASONS, NOTE_MAX_CHARS

if TYPE_CHECKING:
    Mode = str
    ReadStatus = str
    AdjudicationStatus = str
    DisagreementKind = str
    AnyFlagReason = str
    CsvTable = str
else:
    Mode = Literal[tuple(MODES)]
    ReadStatus = Literal[tuple(READ_STATUSES)]
    AdjudicationStatus = Literal[tuple(ADJUDICATION_STATUSES)]
    DisagreementKind = Literal[tuple(DISAGREEMENT_KINDS)]
    AnyFlagReason = Literal[tuple(ALL_FLAG_REASONS)]
    CsvTable = Literal[CSV_TABLES]

Name = Annotated[str, Field(min_length=1, max_length=64)]


# -- bodies ------------------------------------------------------------------------------------------
class AssignmentFilter(BaseModel):
    """The work-list filters an assignment selects its key slices with."""

    split: SplitName | None = None
    lesion_type: Annotated[list[LesionType], Field(max_length=9)] = []
    noisy: bool | None = None
    patient: Annotated[int | None, Field(ge=0, le=10**9)] = None
    min_size_mm: Annotated[float | None, Field(ge=0, le=1e6)] = None
    max_size_mm: Annotated[float | None, Field(ge=0, le=1e6)] = None
    has_predictions: bool | None = None
    possible_missed: bool | None = None


class AssignmentBody(BaseModel):
    """A new assignment."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    mode: Mode
    readers: Annotated[list[Name], Field(min_length=1, max_length=100)]
    filter: AssignmentFilter = AssignmentFilter()


class MarkBody(BaseModel):
    """A lesion as the reader leaves it (RECIST and/or box in the 0-based frame)."""

    recist: Recist | None = None
    box: Box | None = None
    lesion_type: LesionType
    flag_reason: AnyFlagReason | None = None
    flag_note: Annotated[str, Field(max_length=NOTE_MAX_CHARS)] = ""
    deleted: bool = False


class LesionMarkBody(MarkBody):
    """The reader's mark of an existing lesion."""

    id: Annotated[int, Field(ge=1, le=2**31 - 1)]


class MarksBody(BaseModel):
    """A whole read: one mark per lesion of the key slice, and the lesions the reader added."""

    lesions: Annotated[list[LesionMarkBody], Field(max_length=200)] = []
    added: Annotated[list[MarkBody], Field(max_length=50)] = []


class ReadBody(BaseModel):
    """Save a read."""

    version: Version
    marks: MarksBody


class ReassignBody(BaseModel):
    """Give an unfinished read to another reader, or back to the open pool (to = null)."""

    to: Name | None = None


class ResolveBody(BaseModel):
    """A consensus: read A or B as it is, or an edited read."""

    version: Version
    pick: Literal["a", "b"] | None = None
    consensus: MarksBody | None = None


class ApplyAgreedBody(BaseModel):
    """Which agreed double reads to make the consensus: those of one assignment, or all; at most `limit`."""

    assignment: int | None = Field(default=None, ge=1, le=2**31 - 1)
    limit: int = Field(default=50, ge=1, le=200)


# -- answers -----------------------------------------------------------------------------------------
class ReadCounts(Out):
    """Reads of an assignment by status."""

    total: int
    open: int
    claimed: int
    done: int


class ReaderProgress(Out):
    """One reader's reads of an assignment."""

    reader: str
    claimed: int
    done: int


class AdjudicationCounts(Out):
    """Double-read key slices by adjudication status."""

    open: int
    agreed: int
    resolved: int


class AssignmentProgress(Out):
    """Progress of an assignment."""

    reads: ReadCounts
    readers: list[ReaderProgress]
    adjudications: AdjudicationCounts


class Assignment(Out):
    """An assignment and its progress."""

    id: int
    name: str
    mode: Mode
    filter: dict[str, Any]
    readers: list[str]
    created_at: Iso | None
    progress: AssignmentProgress


class Assignments(Out):
    """Assignments, newest first."""

    assignments: list[Assignment]


class Mark(Out):
    """A stored mark."""

    recist: list[float] | None
    box: list[float]
    lesion_type: int
    flag_reason: str | None
    flag_note: str
    deleted: bool


class LesionMark(Mark):
    """A stored mark of an existing lesion (a baseline's carries the lesion's origin)."""

    id: int
    origin: str | None = None


class Marks(Out):
    """A stored read."""

    lesions: list[LesionMark]
    added: list[Mark]


class TeamRead(Out):
    """One read of a key slice."""

    id: int
    assignment_id: int
    file_name: str
    slot: int
    reader: str | None
    status: ReadStatus
    version: int
    baseline: Marks | None = None
    marks: Marks | None = None
    claimed_at: Iso | None
    finished_at: Iso | None
    seconds: float | None
    can_undo: bool
    can_redo: bool


class NextRead(Out):
    """The read to do next, or null when nothing is left for this reader."""

    read: TeamRead | None


class MyQueue(Out):
    """The reader's unfinished reads, then their latest done ones (without marks)."""

    reads: list[TeamRead]


class TeamReadResult(ReviewResult):
    """A read write's answer: the review result of its key slice (lesions unchanged) and the read."""

    read: TeamRead


class Disagreement(Out):
    """One disagreement between the two reads."""

    kind: DisagreementKind
    lesion_id: int | None
    a_added: int | None
    b_added: int | None
    detail: str


class Adjudication(Out):
    """A double-read key slice once both reads are done."""

    id: int
    assignment_id: int
    file_name: str
    status: AdjudicationStatus
    version: int
    disagreements: list[Disagreement]
    readers: list[str | None]
    resolved_by: str | None
    resolved_at: Iso | None
    consensus: Marks | None
    reads: list[TeamRead]


class AdjudicationQueue(Out):
    """Adjudications, open disagreements first."""

    adjudications: list[Adjudication]


class AdjudicationResult(ReviewResult):
    """A resolve or undo answer: the key slice with the consensus applied (or taken back) and the case."""

    adjudication: Adjudication


class SkippedAdjudication(Out):
    """An agreed case that could not be applied, and why."""

    id: int
    detail: str


class ApplyAgreedResult(Out):
    """Apply all agreed: each applied case's own resolve answer, the skipped ones, and how many are left."""

    results: list[AdjudicationResult]
    skipped: list[SkippedAdjudication]
    left: int


class PairAgreement(Out):
    """Agreement of one reader pair."""

    reader_a: str
    reader_b: str
    key_slices: int
    lesions_compared: int
    kappa_noisy: float | None
    kappa_noisy_se: float | None
    added_a: int
    added_b: int
    added_matched: int
    f1_added: float | None
    type_agreement: float | None
    kappa_type: float | None
    long_axis_pairs: int
    long_axis_mean_diff_mm: float | None
    long_axis_sd_mm: float | None
    long_axis_lower_mm: float | None
    long_axis_upper_mm: float | None
    bland_altman_points: list[list[float]]


class ReaderReport(Out):
    """One reader's done reads: time and what they did."""

    reader: str
    key_slices: int
    confirmed: int
    flagged: int
    edited: int
    added: int
    deleted: int
    mean_seconds: float | None
    median_seconds: float | None


class Report(Out):
    """The agreement report."""

    assignment_id: int | None
    pairs: list[PairAgreement]
    readers: list[ReaderReport]
