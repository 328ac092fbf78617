"""DeepLesion FROC on hand-made cases whose answers are worked out in the comments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from app.detection.froc import (
    GtLesion,
    ImageCase,
    evaluate_cases,
    froc_curve,
    interval_bin,
    iou_matrix,
    size_bin,
)


def _case(key: str, lesions: list[GtLesion], dets: Sequence[tuple[Sequence[float], float]]) -> ImageCase:
    boxes = np.array([d[0] for d in dets], dtype=float).reshape(-1, 4)
    scores = np.array([d[1] for d in dets], dtype=float)
    return ImageCase(key=key, lesions=lesions, boxes=boxes, scores=scores)


def test_iou_uses_inclusive_pixels() -> None:
    # [0,0,9,9] and [5,0,14,9]: 10x10 each, overlap 5x10 = 50, union 150.
    assert iou_matrix(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]))[0, 0] == pytest.approx(1 / 3)


def test_iou_of_exactly_half_counts_as_a_hit() -> None:
    # [0,0,19,9] covers 200 px and contains [0,0,9,9] (100 px): IoU 0.5.
    case = _case("a", [GtLesion((0, 0, 9, 9))], [([0, 0, 19, 9], 0.9)])
    assert froc_curve([case]).sens_at([0.5]) == [1.0]


def _two_images() -> list[ImageCase]:
    l1 = GtLesion((0, 0, 9, 9), lesion_type=4, size_mm=5.0, slice_interval_mm=1.0)
    l2 = GtLesion((50, 50, 59, 59), lesion_type=5, size_mm=20.0, slice_interval_mm=1.0)
    l3 = GtLesion((0, 0, 19, 19), lesion_type=4, size_mm=40.0, slice_interval_mm=5.0)
    noisy = GtLesion((40, 40, 49, 49), noisy=True, lesion_type=7, size_mm=8.0, slice_interval_mm=5.0)
    a = _case(
        "a",
        [l1, l2],
        [
            ([0, 0, 9, 9], 0.9),  # hit l1
            ([100, 100, 109, 109], 0.8),  # FP
            ([50, 50, 59, 59], 0.7),  # hit l2
            ([0, 0, 9, 9], 0.6),  # duplicate of l1: neither a new hit nor an FP
        ],
    )
    b = _case(
        "b",
        [l3, noisy],
        [
            ([40, 40, 49, 49], 0.95),  # matches only the noisy lesion: a false positive, as for the authors
            ([200, 200, 209, 209], 0.5),  # FP
            ([0, 0, 19, 19], 0.4),  # hit l3
        ],
    )
    return [a, b]


def test_froc_counts_hits_once_and_a_detection_on_a_noisy_lesion_as_a_false_positive() -> None:
    # Ranked: noisy (FP, 0.5/img), hit 1/3, FP (1.0/img), hit 2/3, duplicate (neither), FP (1.5/img), hit 3/3.
    curve = froc_curve(_two_images())
    assert curve.lesions == 3 and curve.images == 2
    assert curve.fp_per_image.tolist() == [0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 1.5]
    # MULAN's reading: the last point at each FP count, the last sensitivity past the end.
    assert curve.sens_at([0.5, 1, 2, 4, 8, 16]) == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])


def test_a_slice_left_without_a_clean_lesion_is_dropped_with_its_detections() -> None:
    only_noisy = _case("c", [GtLesion((0, 0, 9, 9), noisy=True)], [([100, 100, 109, 109], 0.99)])
    cases = [*_two_images(), only_noisy]
    curve = froc_curve(cases)
    assert (
        curve.images == 2 and curve.fp_per_image.tolist() == froc_curve(_two_images()).fp_per_image.tolist()
    )
    result = evaluate_cases(cases)
    assert result["images"] == 2 and result["images_without_lesion_dropped"] == 1


def test_a_detection_on_a_noisy_lesion_would_otherwise_be_a_false_positive() -> None:
    cases = _two_images()
    # Marking the noisy lesion clean makes it a fourth lesion, hit first: 4 lesions, 1 hit at 0 FP.
    cases[1].lesions[1] = GtLesion((40, 40, 49, 49), noisy=False)
    curve = froc_curve(cases)
    assert curve.lesions == 4
    assert curve.sens_at([0.5]) == pytest.approx([3 / 4])


def test_no_detections_means_zero_sensitivity() -> None:
    case = _case("a", [GtLesion((0, 0, 9, 9))], [])
    assert froc_curve([case]).sens_at([0.5, 16]) == [0.0, 0.0]


def test_only_false_positives_beyond_the_budget_give_zero() -> None:
    # 3 FPs on 1 image rank above the hit: it arrives at 3 FP/image.
    dets = [([100 + 20 * i, 0, 109 + 20 * i, 9], 0.9 - 0.1 * i) for i in range(3)] + [([0, 0, 9, 9], 0.1)]
    case = _case("a", [GtLesion((0, 0, 9, 9))], dets)
    assert froc_curve([case]).sens_at([0.5, 1, 2, 4]) == [0.0, 0.0, 0.0, 1.0]


def test_size_and_interval_bins_follow_the_papers_edges() -> None:
    assert [size_bin(v) for v in (9.99, 10.0, 30.0, 30.01)] == ["<10mm", "10-30mm", "10-30mm", ">30mm"]
    assert [interval_bin(v) for v in (1.0, 2.0, 2.5, 5.0)] == ["<=2mm", "<=2mm", ">2mm", ">2mm"]


def test_breakdowns_use_each_groups_lesions_and_all_false_positives() -> None:
    result = evaluate_cases(_two_images(), lesion_type_names={4: "liver", 5: "lung"})
    assert result["lesions"] == 3 and result["noisy_excluded"] == 1 and result["images"] == 2
    bd = result["breakdowns"]
    assert isinstance(bd, dict)
    by_size = {g["key"]: g for g in bd["size"]}
    # l1 (<10) is hit at 0.5 FP/img, l2 (10-30) at 1.0 and l3 (>30) at 1.5.
    assert by_size["<10mm"]["sensitivity"][0] == 1.0
    assert by_size["10-30mm"]["sensitivity"][:2] == [0.0, 1.0]
    assert by_size[">30mm"]["sensitivity"][:3] == [0.0, 0.0, 1.0]
    by_type = {g["key"]: g for g in bd["lesion_type"]}
    # liver = l1 and l3: at 0.5 FP/img only l1 is hit.
    assert by_type["4"]["label"] == "liver" and by_type["4"]["lesions"] == 2
    assert by_type["4"]["sensitivity"][0] == pytest.approx(0.5)
    assert "7" not in by_type  # the noisy lesion's type has no countable lesion
    by_dz = {g["key"]: g for g in bd["slice_interval"]}
    assert by_dz["<=2mm"]["lesions"] == 2 and by_dz[">2mm"]["sensitivity"][:3] == [0.0, 0.0, 1.0]


def test_evaluate_truths_reports_progress_for_every_key_slice_including_missing_ones() -> None:
    from app.detection.pipeline import KeySliceTruth, evaluate_truths

    lesion = GtLesion(box=(10, 10, 20, 20), noisy=False, lesion_type=4, size_mm=8.0, slice_interval_mm=1.0)
    truths = [KeySliceTruth(f"00000{i}_01_01_001.png", (1.0, 1.0, 1.0), [lesion]) for i in range(1, 4)]
    calls: list[tuple[int, int]] = []
    predicted: list[str] = []

    def predict(file_name: str, spacing: Sequence[float]) -> list[Any]:
        predicted.append(file_name)
        return []

    result = evaluate_truths(
        truths,
        predict,
        skip_missing=lambda f: f == truths[1].file_name,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert predicted == [truths[0].file_name, truths[2].file_name] and result["missing_key_slices"] == 1


def test_an_exception_from_the_progress_callback_stops_the_evaluation() -> None:
    from app.detection.pipeline import KeySliceTruth, evaluate_truths

    truths = [KeySliceTruth(f"00000{i}_01_01_001.png", (1.0, 1.0, 1.0), []) for i in range(1, 4)]
    predicted: list[str] = []

    def stop_after_first(done: int, total: int) -> None:
        if done == 1:
            raise InterruptedError("stop")

    def predict(file_name: str, spacing: Sequence[float]) -> list[Any]:
        predicted.append(file_name)
        return []

    with pytest.raises(InterruptedError):
        evaluate_truths(truths, predict, on_progress=stop_after_first)
    assert predicted == [truths[0].file_name]
