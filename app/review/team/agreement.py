"""Agreement statistics between readers: Cohen's kappa, F1 of added lesions, Bland-Altman, type agreement.

Pure: no web, no DB. A pair of reads of one key slice is compared once (compare_reads); the statistics
sum those comparisons over any set of key slices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from app.review.team.rules import Read, live_added, match_boxes

# Bland-Altman limits of agreement: mean difference +- this many standard deviations (95 %).
LIMITS_Z = 1.96


@dataclass
class PairTally:
    """What two reads of the same key slices have in common, summed over key slices."""

    noisy: list[tuple[bool, bool]] = field(default_factory=list)
    types: list[tuple[int, int]] = field(default_factory=list)
    # Long axes in mm of the same lesion in both reads (existing lesions, and matched added ones).
    axes_mm: list[tuple[float, float]] = field(default_factory=list)
    added_a: int = 0
    added_b: int = 0
    added_matched: int = 0
    key_slices: int = 0

    def add(self, other: PairTally) -> None:
        """Sum another tally into this one."""
        self.noisy += other.noisy
        self.types += other.types
        self.axes_mm += other.axes_mm
        self.added_a += other.added_a
        self.added_b += other.added_b
        self.added_matched += other.added_matched
        self.key_slices += other.key_slices


def compare_reads(a: Read, b: Read, spacing_x: float) -> PairTally:
    """The paired facts of two reads of one key slice."""
    tally = PairTally(key_slices=1)
    for lesion_id in sorted(set(a.lesions) & set(b.lesions)):
        ma, mb = a.lesions[lesion_id], b.lesions[lesion_id]
        tally.noisy.append((ma.noisy or ma.deleted, mb.noisy or mb.deleted))
        if not (ma.deleted or mb.deleted):
            tally.types.append((ma.lesion_type, mb.lesion_type))
            tally.axes_mm.append((ma.long_axis_mm(spacing_x), mb.long_axis_mm(spacing_x)))
    added_a, added_b = live_added(a), live_added(b)
    pairs = match_boxes([m.box for m in added_a], [m.box for m in added_b])
    tally.added_a, tally.added_b, tally.added_matched = len(added_a), len(added_b), len(pairs)
    for i, j in pairs:
        tally.types.append((added_a[i].lesion_type, added_b[j].lesion_type))
        tally.axes_mm.append((added_a[i].long_axis_mm(spacing_x), added_b[j].long_axis_mm(spacing_x)))
    return tally


def cohen_kappa(pairs: Sequence[tuple[object, object]]) -> float | None:
    """Cohen's kappa of two raters' labels; None when undefined (no pairs, or chance agreement is 1)."""
    n = len(pairs)
    if n == 0:
        return None
    labels = {x for pair in pairs for x in pair}
    observed = sum(1 for x, y in pairs if x == y) / n
    expected = sum(
        (sum(1 for x, _ in pairs if x == k) / n) * (sum(1 for _, y in pairs if y == k) / n) for k in labels
    )
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def kappa_standard_error(pairs: Sequence[tuple[object, object]]) -> float | None:
    """The large-sample standard error of kappa, sqrt(po (1 - po) / n) / (1 - pe)."""
    n = len(pairs)
    kappa = cohen_kappa(pairs)
    if kappa is None:
        return None
    labels = {x for pair in pairs for x in pair}
    observed = sum(1 for x, y in pairs if x == y) / n
    expected = sum(
        (sum(1 for x, _ in pairs if x == k) / n) * (sum(1 for _, y in pairs if y == k) / n) for k in labels
    )
    return math.sqrt(observed * (1.0 - observed) / n) / (1.0 - expected)


def f1(matched: int, count_a: int, count_b: int) -> float | None:
    """F1 of two readers' added lesions matched one to one: 2 matched / (added by A + added by B)."""
    total = count_a + count_b
    return None if total == 0 else 2.0 * matched / total


@dataclass(frozen=True)
class BlandAltman:
    """Mean difference (A - B) and 95 % limits of agreement, in mm."""

    n: int
    mean_diff: float | None
    sd_diff: float | None
    lower: float | None
    upper: float | None


def bland_altman(pairs: Iterable[tuple[float, float]]) -> BlandAltman:
    """Bland-Altman of paired measurements: mean of A - B and mean +- LIMITS_Z sample SDs."""
    diffs = [a - b for a, b in pairs]
    n = len(diffs)
    if n == 0:
        return BlandAltman(0, None, None, None, None)
    mean = sum(diffs) / n
    if n == 1:
        return BlandAltman(1, mean, None, None, None)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return BlandAltman(n, mean, sd, mean - LIMITS_Z * sd, mean + LIMITS_Z * sd)


def agreement_fraction(pairs: Sequence[tuple[object, object]]) -> float | None:
    """The share of pairs with equal labels."""
    return None if not pairs else sum(1 for x, y in pairs if x == y) / len(pairs)


def summarize(tally: PairTally) -> dict[str, object]:
    """The report figures of one reader pair."""
    ba = bland_altman(tally.axes_mm)
    return {
        "key_slices": tally.key_slices,
        "lesions_compared": len(tally.noisy),
        "kappa_noisy": cohen_kappa(tally.noisy),
        "kappa_noisy_se": kappa_standard_error(tally.noisy),
        "added_a": tally.added_a,
        "added_b": tally.added_b,
        "added_matched": tally.added_matched,
        "f1_added": f1(tally.added_matched, tally.added_a, tally.added_b),
        "type_agreement": agreement_fraction(tally.types),
        "kappa_type": cohen_kappa(tally.types),
        "long_axis_pairs": ba.n,
        "long_axis_mean_diff_mm": ba.mean_diff,
        "long_axis_sd_mm": ba.sd_diff,
        "long_axis_lower_mm": ba.lower,
        "long_axis_upper_mm": ba.upper,
    }


def read_counts(read: Read, baseline: Read) -> dict[str, int]:
    """What a reader did: existing lesions confirmed, flagged, edited, deleted; lesions added."""
    counts = dict.fromkeys(("confirmed", "flagged", "edited", "added", "deleted"), 0)
    for lesion_id, mark in read.lesions.items():
        before = baseline.lesions.get(lesion_id)
        if mark.deleted:
            counts["deleted"] += 1
        elif mark.noisy:
            counts["flagged"] += 1
        elif before is not None and (
            mark.recist != before.recist or mark.box != before.box or mark.lesion_type != before.lesion_type
        ):
            counts["edited"] += 1
        else:
            counts["confirmed"] += 1
    counts["added"] = len(live_added(read))
    return counts
