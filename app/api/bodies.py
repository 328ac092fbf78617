"""Request bodies shared by the review routers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, FiniteFloat

from app.review.vocabulary import NOTE_MAX_CHARS

Recist = Annotated[list[FiniteFloat], Field(min_length=8, max_length=8)]
Box = Annotated[list[FiniteFloat], Field(min_length=4, max_length=4)]
Version = Annotated[int, Field(ge=0, le=2**31 - 1)]
LesionType = Annotated[int, Field(ge=-1, le=8)]


class VersionBody(BaseModel):
    """A write that only carries the version it edits."""

    version: Version


class FlagBody(BaseModel):
    """Flag a lesion as noisy."""

    version: Version
    reason: Literal["not_a_lesion", "wrong_measurement", "duplicate", "other"]
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

    status: Literal["unreviewed", "in_progress", "done"]
    version: Version


class AcceptBody(BaseModel):
    """Accept a prediction as a lesion."""

    version: Version
    lesion_type: LesionType | None = None
    # Accept a prediction that marks a lesion already there (the viewer asks the reviewer first).
    allow_duplicate: bool = False
