"""Request bodies shared by the review routers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, FiniteFloat

from app.deeplesion.schema import ALL_SPLITS, LESION_TYPES, SPLITS
from app.review.vocabulary import EXPORT_STATES, FLAG_REASONS, NOTE_MAX_CHARS, STATUSES

if TYPE_CHECKING:
    FlagReason = str
    StatusName = str
    SplitName = str
    SplitOrAll = str
    ExportState = str
else:
    # Literals built from the vocabulary: pydantic checks them and OpenAPI lists them as enums.
    FlagReason = Literal[tuple(FLAG_REASONS)]
    StatusName = Literal[tuple(STATUSES)]
    SplitName = Literal[tuple(SPLITS.values())]
    SplitOrAll = Literal[(*SPLITS.values(), ALL_SPLITS)]
    ExportState = Literal[tuple(EXPORT_STATES)]


def _lesion_type(value: int) -> int:
    """A DL_info Coarse_lesion_type (not a Literal: a query string's "5" would not coerce to one)."""
    if value not in LESION_TYPES:
        raise ValueError(f"lesion type must be one of {', '.join(map(str, LESION_TYPES))}")
    return value


LesionType = Annotated[
    int, AfterValidator(_lesion_type), Field(json_schema_extra={"enum": list(LESION_TYPES)})
]
Recist = Annotated[list[FiniteFloat], Field(min_length=8, max_length=8)]
Box = Annotated[list[FiniteFloat], Field(min_length=4, max_length=4)]
Version = Annotated[int, Field(ge=0, le=2**31 - 1)]


class VersionBody(BaseModel):
    """A write that only carries the version it edits."""

    version: Version


class FlagBody(BaseModel):
    """Flag a lesion as noisy."""

    version: Version
    reason: FlagReason
    note: Annotated[str, Field(max_length=NOTE_MAX_CHARS)] = ""


class GeometryBody(BaseModel):
    """New geometry and/or type of a lesion."""

    version: Version
    recist: Recist | None = None
    box: Box | None = None
    lesion_type: LesionType | None = None


class AddLesionBody(BaseModel):
    """A lesion the dataset missed."""

    recist: Recist | None = None
    box: Box | None = None
    lesion_type: LesionType
    slice_index: Annotated[int | None, Field(ge=1, le=100000)] = None


class StatusBody(BaseModel):
    """A reviewer's status of a key slice."""

    status: StatusName
    version: Version


class AcceptBody(BaseModel):
    """Accept a prediction as a lesion."""

    version: Version
    lesion_type: LesionType | None = None
    # Accept a prediction that marks a lesion already there (the viewer asks the reviewer first).
    allow_duplicate: bool = False


class LinkBody(BaseModel):
    """Link two lesions of one patient's different studies as the same lesion."""

    from_lesion_id: Annotated[int, Field(ge=1, le=2**31 - 1)]
    to_lesion_id: Annotated[int, Field(ge=1, le=2**31 - 1)]


class MatchBody(BaseModel):
    """Run follow-up matching for one patient, or for all when patient_index is null."""

    patient_index: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    # Also compare the lesions' appearance on their stored slices (one PNG read per lesion).
    appearance: bool = False
