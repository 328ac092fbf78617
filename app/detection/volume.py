"""Volume screening's pure rules: join per-slice boxes of one sub-volume into 3D candidates, match them."""

# A candidate is the same lesion seen on adjacent stored slices of one series (a sub-volume): the detector
# runs on each slice's 3-slice window on its own, and joining its boxes along z turns ~60 boxes of one
# lesion into one queue item with the slice where the lesion is largest.

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.deeplesion.geometry import HIT_IOU, box_iou

Box = tuple[float, float, float, float]
# Two boxes on nearby slices are one lesion when they overlap this much (or each centre is in the other).
LINK_IOU = 0.3
# A lesion may be missed on one slice (noise, a faint pole) without splitting into two candidates.
MAX_GAP = 1
# A candidate's score is the mean of its best this-many slice scores; 1: the best slice (Candidate.score).
SCORE_SLICES = 1


@dataclass(frozen=True)
class SliceBox:
    """One detector box on one slice of a sub-volume."""

    slice_index: int
    box: Box
    score: float

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


@dataclass(frozen=True)
class Candidate:
    """Boxes on adjacent slices joined into one 3D lesion candidate, in slice order."""

    boxes: tuple[SliceBox, ...]

    @property
    def score(self) -> float:
        """The mean of the best SCORE_SLICES slice scores (1: the best slice's score).

        The best, not the mean of all: a real lesion's faint poles would drag a mean below a one-slice false
        box, and the best keeps the volume queue's scores on the key-slice screen's scale. The mean of the
        best 2 found one more left-out lesion on tuning data but as many or fewer on the report datasets
        (docs/performance.md, "sub-volume model"), so the best slice stays.
        """
        best = sorted((b.score for b in self.boxes), reverse=True)[:SCORE_SLICES]
        return sum(best) / len(best)

    @property
    def largest(self) -> SliceBox:
        """The slice where the candidate's box is largest (ties: the higher score, then the lower slice)."""
        return max(self.boxes, key=lambda b: (b.area, b.score, -b.slice_index))

    @property
    def first(self) -> int:
        """First slice index."""
        return self.boxes[0].slice_index

    @property
    def last(self) -> int:
        """Last slice index."""
        return self.boxes[-1].slice_index


def centre(box: Sequence[float]) -> tuple[float, float]:
    """Centre (x, y) of a box."""
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def contains(box: Sequence[float], point: tuple[float, float]) -> bool:
    """Whether a point lies inside a box (edges included)."""
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def same_lesion(a: Sequence[float], b: Sequence[float], link_iou: float = LINK_IOU) -> bool:
    """Whether boxes on nearby slices show one lesion: enough overlap, or each centre inside the other."""
    # The centre test joins a lesion's shrinking cuts near its poles, whose IoU with the widest cut is low.
    return box_iou(a, b) >= link_iou or (contains(a, centre(b)) and contains(b, centre(a)))


def link_slices(
    detections: Mapping[int, Iterable[tuple[Sequence[float], float]]],
    *,
    link_iou: float = LINK_IOU,
    max_gap: int = MAX_GAP,
) -> list[Candidate]:
    """Join boxes {slice index: [(box, score)]} on slices at most max_gap+1 apart into candidates.

    Greedy in slice order: each box, best score first, extends the open candidate whose last box it
    overlaps most; a candidate not extended within max_gap+1 slices is closed. Slice indices are the
    volume's own, so slices that are not stored are a gap like a slice without a box.
    """
    open_tracks: list[list[SliceBox]] = []
    closed: list[list[SliceBox]] = []
    for index in sorted(detections):
        still_open: list[list[SliceBox]] = []
        for track in open_tracks:
            (still_open if index - track[-1].slice_index <= max_gap + 1 else closed).append(track)
        open_tracks = still_open
        extended: set[int] = set()
        boxes = sorted(
            (SliceBox(index, _box(b), float(s)) for b, s in detections[index]),
            key=lambda sb: (-sb.score, sb.box),
        )
        for sb in boxes:
            best, best_iou = None, -1.0
            for t, track in enumerate(open_tracks):
                if t in extended or track[-1].slice_index == index:
                    continue
                last = track[-1].box
                if same_lesion(last, sb.box, link_iou):
                    iou = box_iou(last, sb.box)
                    if iou > best_iou:
                        best, best_iou = t, iou
            if best is None:
                open_tracks.append([sb])
                extended.add(len(open_tracks) - 1)
            else:
                open_tracks[best].append(sb)
                extended.add(best)
    tracks = closed + open_tracks
    out = [Candidate(tuple(t)) for t in tracks]
    return sorted(out, key=lambda c: (-c.score, c.first, c.largest.box))


def _box(values: Sequence[float]) -> Box:
    return (float(values[0]), float(values[1]), float(values[2]), float(values[3]))


@dataclass(frozen=True)
class AnnotatedLesion:
    """A lesion already marked (CSV or reviewer): its box on its slice and the slices it is taken to span."""

    slice_index: int
    box: Box
    first: int
    last: int


def lesion_extent(slice_index: int, long_axis_mm: float, slice_interval_mm: float | None) -> tuple[int, int]:
    """Slices a marked lesion is taken to span: its slice +- half its long axis along z, at least +-1.

    Why this rule: DL_info.csv marks a lesion on its key slice only. Its Slice_range (+-30 mm) is the
    context the dataset ships, not the lesion's depth, and would hide every other lesion in the same place
    of the series. A lesion is about as deep as it is wide (the generator's ellipsoids, most real nodules
    and nodes), so it spans about its long diameter around the slice where it was measured.
    """
    if not slice_interval_mm or slice_interval_mm <= 0 or not math.isfinite(slice_interval_mm):
        half = 1
    else:
        half = max(1, math.ceil(max(0.0, long_axis_mm) / 2.0 / slice_interval_mm))
    return slice_index - half, slice_index + half


def matches_lesion(sb: SliceBox, lesion: AnnotatedLesion, hit_iou: float = HIT_IOU) -> bool:
    """Whether a slice box is the marked lesion: on a slice it spans, a hit (IoU) or centred in its box."""
    # The marked box is the lesion's widest cut, so its smaller cuts on other slices lie inside it: their
    # IoU with it falls below a hit near the poles while their centres stay within it.
    if not lesion.first <= sb.slice_index <= lesion.last:
        return False
    return box_iou(sb.box, lesion.box) >= hit_iou or contains(lesion.box, centre(sb.box))


def matches_annotation(candidate: Candidate, lesions: Iterable[AnnotatedLesion]) -> bool:
    """Whether any slice of the candidate is a marked lesion (then it is not queued)."""
    marked = list(lesions)
    return any(matches_lesion(sb, lesion) for sb in candidate.boxes for lesion in marked)


def host_key_slice(slice_index: int, key_slices: Sequence[tuple[int, int, int]]) -> int | None:
    """Of (key index, first, last) context ranges, the nearest key slice whose range holds the slice."""
    holding = [k for k in key_slices if k[1] <= slice_index <= k[2]]
    if not holding:
        return None
    return min(holding, key=lambda k: (abs(k[0] - slice_index), k[0]))[0]
