"""The rules over a lesion's independent facts: edited, review summary, overlay layer. Pure: no web, no DB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.review.vocabulary import ORIGIN_CSV


class LesionFacts(Protocol):
    """What the rules read of a lesion (the ORM row satisfies it, and so does a test's reference model)."""

    @property
    def origin(self) -> str: ...
    @property
    def recist(self) -> Sequence[float] | None: ...
    @property
    def box(self) -> Sequence[float]: ...
    @property
    def slice_index(self) -> int: ...
    @property
    def lesion_type(self) -> int: ...
    @property
    def flag_reason(self) -> str | None: ...
    @property
    def confirmed_by_id(self) -> int | None: ...
    @property
    def deleted(self) -> bool: ...


@dataclass(frozen=True)
class OriginalFacts:
    """An imported lesion's geometry in the app's 0-based frame, and its slice and type."""

    recist: tuple[float, ...] | None
    box: tuple[float, ...]
    slice_index: int
    lesion_type: int


def _same(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return [float(v) for v in a] == [float(v) for v in b]


def is_edited(lesion: LesionFacts, original: OriginalFacts | None) -> bool:
    """A csv lesion whose geometry, slice or type differ from the imported row; never a reviewer-added one."""
    if lesion.origin != ORIGIN_CSV or original is None:
        return False
    return not (
        _same(lesion.recist, original.recist)
        and _same(lesion.box, original.box)
        and lesion.slice_index == original.slice_index
        and lesion.lesion_type == original.lesion_type
    )


def geometry_edited(lesion: LesionFacts, original: OriginalFacts | None) -> bool:
    """Like is_edited but about the marks alone (a type change keeps the original's measurements)."""
    if lesion.origin != ORIGIN_CSV or original is None:
        return False
    return not (_same(lesion.recist, original.recist) and _same(lesion.box, original.box))


def review_state(lesion: LesionFacts, original: OriginalFacts | None) -> str:
    """The review summary (a key of vocabulary.REVIEW_STATES): deleted > flagged > edited > confirmed."""
    if lesion.deleted:
        return "deleted"
    if lesion.flag_reason is not None:
        return "flagged"
    if is_edited(lesion, original):
        return "edited"
    if lesion.confirmed_by_id is not None:
        return "confirmed"
    return "unreviewed"


def layer(lesion: LesionFacts, original: OriginalFacts | None) -> str:
    """The overlay layer (a key of vocabulary.LAYERS): untouched csv, corrected csv, or added."""
    if lesion.origin != ORIGIN_CSV:
        return "added"
    return "corrected" if is_edited(lesion, original) else "original"
