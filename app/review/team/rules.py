"""A reader's read and the disagreement rules between two reads. Pure: no web, no DB."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.deeplesion.geometry import HIT_IOU, iou_matrix, lesion_diameters

# Two RECIST long axes of one lesion disagree when they differ by more than this. Inter-reader RECIST
# variability of a single lesion is reported at about 2-4 mm for lesions of 1-5 cm, so 3 mm flags a
# difference larger than two careful readers produce by chance.
LONG_AXIS_TOLERANCE_MM = 3.0

MODES: dict[str, str] = {"single": "single read", "double": "double read"}
READS_PER_MODE: dict[str, int] = {"single": 1, "double": 2}
# A read: not yet handed out, handed to a reader, finished.
READ_STATUSES: dict[str, str] = {"open": "not started", "claimed": "in progress", "done": "done"}
# A double-read key slice once both reads are done: the reads disagree, agree, or a consensus was applied.
ADJUDICATION_STATUSES: dict[str, str] = {"open": "disagreement", "agreed": "agreed", "resolved": "resolved"}
# Truths a team adds to original / corrected (app.review.team.truth): the consensus, and "reader:NAME".
CONSENSUS_TRUTH = "consensus"
READER_TRUTH_PREFIX = "reader:"
DISAGREEMENT_KINDS: dict[str, str] = {
    "noisy": "noisy flag vs not",
    "added": f"added lesion without a match at IoU >= {HIT_IOU}",
    "long_axis": f"RECIST long axis differs by more than {LONG_AXIS_TOLERANCE_MM:g} mm",
    "type": "lesion type differs",
}


@dataclass(frozen=True)
class Mark:
    """One lesion as a reader leaves it: geometry (0-based px), type, noisy flag, deleted."""

    box: tuple[float, ...]
    lesion_type: int
    recist: tuple[float, ...] | None = None
    flag_reason: str | None = None
    flag_note: str = ""
    deleted: bool = False

    @property
    def noisy(self) -> bool:
        """Flagged noisy by the reader."""
        return self.flag_reason is not None

    def long_axis_mm(self, spacing_x: float) -> float:
        """RECIST long axis in mm (else the box's longer unpadded side), as the work list measures size."""
        return lesion_diameters(self.recist, self.box)[0] * spacing_x

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "recist": list(self.recist) if self.recist is not None else None,
            "box": list(self.box),
            "lesion_type": self.lesion_type,
            "flag_reason": self.flag_reason,
            "flag_note": self.flag_note,
            "deleted": self.deleted,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Mark:
        """From JSON form."""
        recist = data.get("recist")
        return Mark(
            box=tuple(float(v) for v in data["box"]),
            lesion_type=int(data["lesion_type"]),
            recist=tuple(float(v) for v in recist) if recist is not None else None,
            flag_reason=data.get("flag_reason"),
            flag_note=data.get("flag_note") or "",
            deleted=bool(data.get("deleted", False)),
        )


@dataclass(frozen=True)
class Read:
    """A reader's whole read of a key slice: a mark per existing lesion (by id) and the lesions added."""

    lesions: dict[int, Mark] = field(default_factory=dict)
    added: tuple[Mark, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON form: {"lesions": [{"id", ...mark}], "added": [mark]}."""
        return {
            "lesions": [{"id": i, **m.as_dict()} for i, m in sorted(self.lesions.items())],
            "added": [m.as_dict() for m in self.added],
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Read:
        """From JSON form."""
        return Read(
            lesions={int(d["id"]): Mark.from_dict(d) for d in data.get("lesions", [])},
            added=tuple(Mark.from_dict(d) for d in data.get("added", [])),
        )


@dataclass(frozen=True)
class Disagreement:
    """One disagreement: its kind, the existing lesion it is about (or the added marks' indexes)."""

    kind: str
    lesion_id: int | None = None
    a_added: int | None = None
    b_added: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "lesion_id": self.lesion_id,
            "a_added": self.a_added,
            "b_added": self.b_added,
            "detail": self.detail,
        }


def match_boxes(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """One-to-one matches (i in a, j in b) at IoU >= HIT_IOU, greedily by highest IoU first."""
    if not a or not b:
        return []
    ious = iou_matrix(a, b)
    order = np.dstack(np.unravel_index(np.argsort(-ious, axis=None, kind="stable"), ious.shape))[0]
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for i, j in order:
        if ious[i, j] < HIT_IOU:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(int(i))
        used_b.add(int(j))
        pairs.append((int(i), int(j)))
    return sorted(pairs)


def live_added(read: Read) -> list[Mark]:
    """The added lesions the reader kept (not deleted)."""
    return [m for m in read.added if not m.deleted]


def _compare_marks(a: Mark, b: Mark, spacing_x: float, **where: int | None) -> list[Disagreement]:
    found: list[Disagreement] = []
    if a.noisy != b.noisy:
        detail = f"{a.flag_reason or 'not flagged'} vs {b.flag_reason or 'not flagged'}"
        found.append(Disagreement("noisy", detail=detail, **where))
    if a.lesion_type != b.lesion_type:
        found.append(Disagreement("type", detail=f"{a.lesion_type} vs {b.lesion_type}", **where))
    la, lb = a.long_axis_mm(spacing_x), b.long_axis_mm(spacing_x)
    if abs(la - lb) > LONG_AXIS_TOLERANCE_MM:
        found.append(Disagreement("long_axis", detail=f"{la:.1f} mm vs {lb:.1f} mm", **where))
    return found


def disagreements(a: Read, b: Read, spacing_x: float) -> list[Disagreement]:
    """Every disagreement between two reads of one key slice (DISAGREEMENT_KINDS), in a stable order."""
    found: list[Disagreement] = []
    for lesion_id in sorted(set(a.lesions) & set(b.lesions)):
        ma, mb = a.lesions[lesion_id], b.lesions[lesion_id]
        if ma.deleted != mb.deleted:
            found.append(Disagreement("noisy", lesion_id=lesion_id, detail="deleted vs kept"))
        elif not ma.deleted:
            found += _compare_marks(ma, mb, spacing_x, lesion_id=lesion_id)
    added_a, added_b = live_added(a), live_added(b)
    pairs = match_boxes([m.box for m in added_a], [m.box for m in added_b])
    for i, j in pairs:
        found += _compare_marks(added_a[i], added_b[j], spacing_x, a_added=i, b_added=j)
    matched_a, matched_b = {i for i, _ in pairs}, {j for _, j in pairs}
    found += [
        Disagreement("added", a_added=i, detail="only in read A")
        for i in range(len(added_a))
        if i not in matched_a
    ]
    found += [
        Disagreement("added", b_added=j, detail="only in read B")
        for j in range(len(added_b))
        if j not in matched_b
    ]
    return found
