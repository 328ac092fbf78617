"""Follow-up: link the same lesion across a patient's studies into tracks; the RECIST 1.1 response rule."""

# Pure code (numpy and scipy only). Method (docs/api.md "Follow-up"):
#  1. For each pair of a patient's studies, a first assignment on what is invariant to how the patient lay
#     in the scanner: the normalised body location (DL_info column 9), size and type. Its confident pairs
#     give the median shift between the two scans' frames (mm, from pixel spacing and slice interval).
#  2. The studies are taken in order. Each study's lesions are assigned (Hungarian, scipy's
#     linear_sum_assignment) to the open tracks last seen in one of the previous MAX_GAP studies, nearest
#     study first, with a cost that adds the registered scan-frame distance, the normalised location, the
#     size ratio and, when images give one, the appearance descriptor; pairs above GATE are refused.
#  3. A lesion left unassigned starts a new track. Links join consecutive members of a track.

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

# Cost scales: normalised location (x, y, z), scan-frame mm, log size ratio, descriptor distance.
NORM_SCALE = (0.03, 0.03, 0.04)
MM_SCALE = 12.0
SIZE_SCALE = 0.6
DESCRIPTOR_SCALE = 0.5
# A pair whose cost exceeds GATE is never a link; FIRST_PASS_GATE selects pairs trusted for registration.
GATE = 9.0
FIRST_PASS_GATE = 4.0
MAX_GAP = 3
_REFUSED = 1e6
# Sums are mm with a few decimals: a rule's boundary (exactly -30%, exactly +20%) must count as reached.
_EPS = 1e-9


@dataclass(frozen=True)
class LesionObs:
    """What matching reads of one lesion (one DL_info row or reviewer lesion)."""

    key: int  # the caller's id (lesion id, row number)
    patient: int
    study: int
    norm: tuple[float | None, float | None, float | None]
    scan_mm: tuple[float, float, float]  # col * spacing_x, row * spacing_y, (slice - 1) * interval
    long_mm: float
    lesion_type: int  # -1 = unknown
    descriptor: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Link:
    """An edge of the lesion graph: a (earlier study) and b (later study) are the same lesion."""

    a: int
    b: int
    cost: float
    shift_mm: tuple[float, float, float]  # b's scan frame minus a's, as estimated for the study pair


@dataclass
class MatchResult:
    """Links and the track (0-based, per call) of every lesion key."""

    links: list[Link] = field(default_factory=list)
    track_of: dict[int, int] = field(default_factory=dict)


def scan_position(
    box: Sequence[float], spacing: Sequence[float], slice_index: int
) -> tuple[float, float, float]:
    """Centre of a 0-based pixel box and its slice, in the scan's own mm frame."""
    return (
        (box[0] + box[2]) / 2.0 * spacing[0],
        (box[1] + box[3]) / 2.0 * spacing[1],
        (slice_index - 1) * spacing[2],
    )


def _arrays(obs: Sequence[LesionObs]) -> tuple[npt.NDArray[np.float64], ...]:
    norm = np.array([[np.nan if v is None else v for v in o.norm] for o in obs], dtype=float).reshape(-1, 3)
    scan = np.array([o.scan_mm for o in obs], dtype=float).reshape(-1, 3)
    size = np.log(np.maximum(np.array([o.long_mm for o in obs], dtype=float), 1.0))
    ltype = np.array([o.lesion_type for o in obs], dtype=float)
    return norm, scan, size, ltype


def _descriptor_cost(a: Sequence[LesionObs], b: Sequence[LesionObs]) -> npt.NDArray[np.float64]:
    """Squared, scaled descriptor distance; 0 where either lesion has none."""
    out = np.zeros((len(a), len(b)))
    if not any(o.descriptor for o in a) or not any(o.descriptor for o in b):
        return out
    for i, oa in enumerate(a):
        for j, ob in enumerate(b):
            if oa.descriptor and ob.descriptor and len(oa.descriptor) == len(ob.descriptor):
                d = np.asarray(oa.descriptor) - np.asarray(ob.descriptor)
                out[i, j] = float(d @ d) / DESCRIPTOR_SCALE**2
    return out


def pair_cost(
    a: Sequence[LesionObs], b: Sequence[LesionObs], shift: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64]:
    """Cost matrix between lesions a (earlier) and b (later); shift=None leaves the scan frame out."""
    na, sa, za, ta = _arrays(a)
    nb, sb, zb, tb = _arrays(b)
    dn = (na[:, None, :] - nb[None, :, :]) / np.array(NORM_SCALE)
    cost = np.nansum(dn * dn, axis=2)
    cost += ((za[:, None] - zb[None, :]) / SIZE_SCALE) ** 2
    if shift is not None:
        dm = (sa[:, None, :] + shift - sb[None, :, :]) / MM_SCALE
        cost += np.sum(dm * dm, axis=2)
        cost /= 2.0  # two location terms: keep the gate's meaning
    cost += _descriptor_cost(a, b)
    known = (ta[:, None] > 0) & (tb[None, :] > 0)
    cost[known & (ta[:, None] != tb[None, :])] = _REFUSED
    return cost


def study_shift(a: Sequence[LesionObs], b: Sequence[LesionObs]) -> npt.NDArray[np.float64]:
    """Median scan-frame shift b - a over the pairs a location-only assignment trusts (zeros when none)."""
    cost = pair_cost(a, b, None)
    rows, cols = linear_sum_assignment(cost)
    # A lesion without a body location (drawn by a reviewer) would be trusted on its size alone.
    located = np.array(
        [None not in a[i].norm and None not in b[j].norm for i, j in zip(rows, cols, strict=True)]
    )
    good = (cost[rows, cols] <= FIRST_PASS_GATE) & located.astype(bool).reshape(-1)
    if not good.any():
        return np.zeros(3)
    sa = np.array([a[i].scan_mm for i in rows[good]])
    sb = np.array([b[j].scan_mm for j in cols[good]])
    return np.asarray(np.median(sb - sa, axis=0), dtype=float)


def match_patient(obs: Sequence[LesionObs]) -> MatchResult:
    """Tracks and links of one patient's lesions (all obs must share the patient)."""
    result = MatchResult()
    by_study: dict[int, list[LesionObs]] = {}
    for o in obs:
        by_study.setdefault(o.study, []).append(o)
    studies = sorted(by_study)
    last: dict[int, LesionObs] = {}  # track -> its latest lesion
    last_study: dict[int, int] = {}
    shifts: dict[tuple[int, int], npt.NDArray[np.float64]] = {}
    for pos, s in enumerate(studies):
        todo = list(by_study[s])
        for prev in reversed(studies[max(0, pos - MAX_GAP) : pos]):
            open_tracks = [t for t, st in last_study.items() if st == prev]
            if not todo or not open_tracks:
                continue
            if (prev, s) not in shifts:
                shifts[(prev, s)] = study_shift(by_study[prev], by_study[s])
            shift = shifts[(prev, s)]
            earlier = [last[t] for t in open_tracks]
            cost = pair_cost(earlier, todo, shift)
            rows, cols = linear_sum_assignment(cost)
            taken: set[int] = set()
            for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
                if cost[i, j] > GATE:
                    continue
                track = open_tracks[i]
                result.links.append(Link(earlier[i].key, todo[j].key, round(float(cost[i, j]), 4), _r(shift)))
                result.track_of[todo[j].key] = track
                last[track], last_study[track] = todo[j], s
                taken.add(j)
            todo = [o for j, o in enumerate(todo) if j not in taken]
        for o in todo:
            track = len(last)
            result.track_of[o.key] = track
            last[track], last_study[track] = o, s
    return result


def _r(v: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    return (round(float(v[0]), 3), round(float(v[1]), 3), round(float(v[2]), 3))


def match_all(obs: Sequence[LesionObs]) -> MatchResult:
    """match_patient for every patient; track numbers are unique over the whole result."""
    by_patient: dict[int, list[LesionObs]] = {}
    for o in obs:
        by_patient.setdefault(o.patient, []).append(o)
    out = MatchResult()
    offset = 0
    for p in sorted(by_patient):
        res = match_patient(by_patient[p])
        out.links.extend(res.links)
        for k, t in res.track_of.items():
            out.track_of[k] = t + offset
        offset += 1 + max(res.track_of.values(), default=-1)
    return out


def tracks_from_links(keys: Sequence[int], links: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Connected components (union-find) of the lesion graph; a track is numbered by its smallest key."""
    parent = {k: k for k in keys}

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in links:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return {k: find(k) for k in keys}


def patch_descriptor(
    hu: npt.NDArray[np.floating], bins: Sequence[float] = (-200, -50, 0, 30, 60, 100, 200)
) -> tuple[float, ...]:
    """Appearance of a lesion patch: share of pixels per HU band of the centre and of the ring around it."""
    h, w = hu.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - (h - 1) / 2) / max(h / 2, 1), (xx - (w - 1) / 2) / max(w / 2, 1))
    edges = [-math.inf, *bins, math.inf]
    out: list[float] = []
    for part in (r <= 0.5, (r > 0.5) & (r <= 1.0)):
        vals = hu[part]
        hist, _ = np.histogram(vals, bins=edges)
        out.extend((hist / max(1, vals.size)).round(4).tolist())
    return tuple(out)


# RECIST 1.1 (Eisenhauer et al. 2009): at most 5 target lesions, 2 per organ, measurable from 10 mm.
MAX_TARGETS = 5
MAX_TARGETS_PER_ORGAN = 2
MEASURABLE_MM = 10.0
PR_DECREASE = 0.30
PD_INCREASE = 0.20
PD_ABSOLUTE_MM = 5.0


@dataclass(frozen=True)
class Response:
    """A RECIST 1.1 category and the rule that produced it."""

    category: str  # CR | PR | SD | PD
    rule: str
    change_from_baseline: float | None
    change_from_nadir: float | None


def choose_targets(lesions: Sequence[tuple[int, int, float]]) -> list[int]:
    """Target tracks from baseline (track, organ/type, long mm): largest measurable, <= 5, <= 2 per organ."""
    chosen: list[int] = []
    per_organ: dict[int, int] = {}
    for track, organ, long_mm in sorted(lesions, key=lambda t: (-t[2], t[0])):
        if long_mm < MEASURABLE_MM or len(chosen) >= MAX_TARGETS:
            continue
        if per_organ.get(organ, 0) >= MAX_TARGETS_PER_ORGAN:
            continue
        per_organ[organ] = per_organ.get(organ, 0) + 1
        chosen.append(track)
    return chosen


def recist_response(baseline: float, nadir: float, current: float, *, new_lesion: bool = False) -> Response:
    """The RECIST 1.1 category of a sum of target diameters (mm); nadir = smallest sum before this study."""
    if baseline <= 0:
        raise ValueError("the baseline sum must be positive (no measurable target lesion)")
    base_change = (current - baseline) / baseline
    nadir_change = (current - nadir) / nadir if nadir > 0 else None
    grown = current - nadir
    if new_lesion:
        return Response("PD", "a new lesion appeared", base_change, nadir_change)
    if current == 0:
        return Response("CR", "every target lesion disappeared", base_change, nadir_change)
    if grown >= PD_ABSOLUTE_MM - _EPS and (nadir == 0 or grown / nadir >= PD_INCREASE - _EPS):
        return Response(
            "PD",
            f"sum grew {grown:.1f} mm ({_pct(nadir_change)}) from the nadir {nadir:.1f} mm: "
            f">= {PD_INCREASE:.0%} and >= {PD_ABSOLUTE_MM:g} mm",
            base_change,
            nadir_change,
        )
    if base_change <= -PR_DECREASE + _EPS:
        return Response(
            "PR",
            f"sum fell {_pct(base_change)} from the baseline {baseline:.1f} mm: "
            f"at least {PR_DECREASE:.0%} down",
            base_change,
            nadir_change,
        )
    return Response(
        "SD",
        f"{_pct(base_change)} from baseline, {_pct(nadir_change)} from nadir: "
        f"neither PR (-{PR_DECREASE:.0%}) nor PD (+{PD_INCREASE:.0%} and {PD_ABSOLUTE_MM:g} mm)",
        base_change,
        nadir_change,
    )


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v * 100:+.1f}%"
