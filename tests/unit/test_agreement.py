"""Agreement statistics and disagreement rules against hand-computed values and brute-force recomputation."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from app.deeplesion.geometry import HIT_IOU, box_from_recist, box_iou
from app.review.team.agreement import (
    LIMITS_Z,
    bland_altman,
    cohen_kappa,
    compare_reads,
    f1,
    kappa_standard_error,
    read_counts,
)
from app.review.team.rules import LONG_AXIS_TOLERANCE_MM, Mark, Read, disagreements, match_boxes

SPACING = 0.5


def _mark(x: float, y: float, length: float, lesion_type: int = 4, reason: str | None = None) -> Mark:
    recist = (x, y, x + length, y, x + length / 2, y - 3.0, x + length / 2, y + 3.0)
    return Mark(box=box_from_recist(recist), lesion_type=lesion_type, recist=recist, flag_reason=reason)


def _brute_kappa(pairs: list[tuple[int, int]]) -> float:
    """Kappa from a confusion matrix, written independently of the module under test."""
    labels = sorted({v for p in pairs for v in p})
    n = len(pairs)
    table = [[sum(1 for a, b in pairs if a == r and b == c) for c in labels] for r in labels]
    po = sum(table[i][i] for i in range(len(labels))) / n
    rows = [sum(row) / n for row in table]
    cols = [sum(table[r][c] for r in range(len(labels))) / n for c in range(len(labels))]
    pe = sum(r * c for r, c in zip(rows, cols, strict=True))
    return (po - pe) / (1 - pe)


def test_kappa_of_a_hand_computed_table() -> None:
    # 3 both noisy, 1 only A, 2 only B, 4 neither: po = 0.7, pe = 0.4*0.5 + 0.6*0.5 = 0.5, kappa = 0.4.
    pairs = [(True, True)] * 3 + [(True, False)] + [(False, True)] * 2 + [(False, False)] * 4
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert kappa_standard_error(pairs) == pytest.approx(math.sqrt(0.7 * 0.3 / 10) / 0.5)


def test_kappa_edge_cases() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([(False, False)] * 5) is None  # chance agreement is 1: undefined
    assert cohen_kappa([(True, False), (False, True)]) == pytest.approx(-1.0)
    assert cohen_kappa([(True, True), (False, False)]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(20))
def test_kappa_matches_a_brute_force_confusion_matrix(seed: int) -> None:
    rng = random.Random(seed)
    labels = rng.choice([[0, 1], [-1, 1, 2, 3]])
    pairs = [(rng.choice(labels), rng.choice(labels)) for _ in range(rng.randint(5, 60))]
    if len({v for p in pairs for v in p}) < 2:
        pytest.skip("one label only")
    assert cohen_kappa(pairs) == pytest.approx(_brute_kappa(pairs))


def test_f1_and_bland_altman_by_hand() -> None:
    assert f1(3, 4, 5) == pytest.approx(6 / 9)
    assert f1(0, 0, 0) is None
    ba = bland_altman([(11.0, 10.0), (12.0, 10.0), (13.0, 10.0)])
    assert (ba.n, ba.mean_diff, ba.sd_diff) == (3, pytest.approx(2.0), pytest.approx(1.0))
    assert (ba.lower, ba.upper) == (pytest.approx(2 - LIMITS_Z), pytest.approx(2 + LIMITS_Z))
    assert bland_altman([]).mean_diff is None
    assert bland_altman([(1.0, 0.5)]).sd_diff is None


@pytest.mark.parametrize("seed", range(15))
def test_matching_is_the_maximum_one_to_one_matching_on_separated_boxes(seed: int) -> None:
    # Boxes jittered around well separated centres: the greedy matching must equal the brute-force maximum.
    rng = random.Random(seed)
    centres = [(20.0 + 40 * i, 30.0 + 35 * (i % 2)) for i in range(5)]

    def boxes() -> list[tuple[float, float, float, float]]:
        chosen = rng.sample(centres, rng.randint(0, 5))
        return [
            (x - 8 + rng.uniform(-2, 2), y - 8 + rng.uniform(-2, 2), x + 8 + rng.uniform(-2, 2), y + 8)
            for x, y in chosen
        ]

    a, b = boxes(), boxes()
    pairs = match_boxes(a, b)
    best = 0
    for k in range(min(len(a), len(b)), 0, -1):
        for ia in itertools.permutations(range(len(a)), k):
            for jb in itertools.combinations(range(len(b)), k):
                if all(box_iou(a[i], b[j]) >= HIT_IOU for i, j in zip(ia, jb, strict=True)):
                    best = k
                    break
            if best:
                break
        if best:
            break
    assert len(pairs) == best
    assert all(box_iou(a[i], b[j]) >= HIT_IOU for i, j in pairs)
    assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})


def test_disagreement_rules_each_kind() -> None:
    base = _mark(10, 40, 20)
    a = Read(lesions={1: base, 2: base, 3: base, 4: base}, added=(_mark(60, 60, 10),))
    longer = LONG_AXIS_TOLERANCE_MM / SPACING + 1.0  # px over the tolerance
    b = Read(
        lesions={
            1: base,
            2: _mark(10, 40, 20, reason="not_a_lesion"),
            3: _mark(10, 40, 20 + longer),
            4: _mark(10, 40, 20, lesion_type=5),
        },
        added=(_mark(61, 60, 10), _mark(100, 100, 10)),
    )
    found = {(d.kind, d.lesion_id, d.a_added, d.b_added) for d in disagreements(a, b, SPACING)}
    assert found == {
        ("noisy", 2, None, None),
        ("long_axis", 3, None, None),
        ("type", 4, None, None),
        ("added", None, None, 1),
    }
    within = _mark(10, 40, 20 + LONG_AXIS_TOLERANCE_MM / SPACING - 0.5)
    assert disagreements(Read(lesions={1: base}), Read(lesions={1: within}), SPACING) == []


def test_compare_reads_and_counts() -> None:
    base = _mark(10, 40, 20)
    baseline = Read(lesions={1: base, 2: base})
    a = Read(lesions={1: base, 2: _mark(10, 40, 24)}, added=(_mark(60, 60, 10),))
    b = Read(
        lesions={1: _mark(10, 40, 20, reason="other"), 2: base}, added=(_mark(60, 61, 10), _mark(90, 20, 8))
    )
    tally = compare_reads(a, b, SPACING)
    assert tally.noisy == [(False, True), (False, False)]
    assert (tally.added_a, tally.added_b, tally.added_matched) == (1, 2, 1)
    assert tally.axes_mm[1] == (pytest.approx(24 * SPACING), pytest.approx(20 * SPACING))
    assert len(tally.types) == 3  # two existing lesions and the matched added one
    assert read_counts(a, baseline) == {"confirmed": 1, "flagged": 0, "edited": 1, "added": 1, "deleted": 0}
    assert read_counts(b, baseline) == {"confirmed": 1, "flagged": 1, "edited": 0, "added": 2, "deleted": 0}


def test_read_round_trips_through_json() -> None:
    read = Read(lesions={3: _mark(1, 20, 5, reason="duplicate")}, added=(_mark(9, 30, 7),))
    assert Read.from_dict(read.as_dict()) == read
