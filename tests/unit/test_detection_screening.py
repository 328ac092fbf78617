"""The possible-missed queue: ranking, recall of hidden lesions in its top N, synth_truth.json reading."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.screening import HiddenLesion, QueueItem, hidden_recall, load_hidden_lesions, rank_queue


def test_queue_ranks_by_score_then_file_name() -> None:
    items = [
        QueueItem("b.png", (0, 0, 1, 1), 0.5),
        QueueItem("a.png", (0, 0, 1, 1), 0.5),
        QueueItem("c.png", (0, 0, 1, 1), 0.9),
    ]
    assert [q.file_name for q in rank_queue(items)] == ["c.png", "a.png", "b.png"]


def test_hidden_recall_counts_only_the_top_n_and_both_iou_levels() -> None:
    hidden = [HiddenLesion("x.png", (0, 0, 9, 9)), HiddenLesion("y.png", (0, 0, 9, 9))]
    queue = [
        QueueItem("x.png", (0, 0, 9, 9), 0.9),  # exact: IoU 1
        QueueItem("z.png", (0, 0, 9, 9), 0.8),  # another slice: no match
        # y: [0,0,9,14] vs [0,0,9,9] -> 100/150 = 0.67 but ranked third, outside the top 2
        QueueItem("y.png", (0, 0, 9, 14), 0.7),
    ]
    top2 = hidden_recall(queue, hidden)
    assert top2["top_n"] == 2 and top2["found_top_n_iou_0_3"] == 1 and top2["recall_top_n_iou_0_5"] == 0.5
    top3 = hidden_recall(queue, hidden, top_n=3)
    assert top3["found_top_n_iou_0_5"] == 2
    assert top2["ranks_iou_0_3"] == [1, 3]


def test_hidden_recall_separates_iou_0_3_from_0_5() -> None:
    # [0,0,9,9] vs [5,0,14,9]: IoU 1/3, found at 0.3 only.
    res = hidden_recall([QueueItem("x.png", (5, 0, 14, 9), 0.9)], [HiddenLesion("x.png", (0, 0, 9, 9))])
    assert (res["found_top_n_iou_0_3"], res["found_top_n_iou_0_5"]) == (1, 0)


def test_load_hidden_lesions_reads_the_generators_unannotated_list(tmp_path: Path) -> None:
    assert load_hidden_lesions(tmp_path) is None
    doc = {
        "unannotated": [
            {"lesion_id": "1", "file_name": "000001_01_01_010.png", "box": [1, 2, 3, 4]},
            {"lesion_id": "2", "file_name": "000001_01_01_011.png", "box": None},
        ]
    }
    (tmp_path / "synth_truth.json").write_text(json.dumps(doc))
    assert load_hidden_lesions(tmp_path) == [HiddenLesion("000001_01_01_010.png", (1.0, 2.0, 3.0, 4.0))]


def test_isotonic_calibration_pools_adjacent_violators() -> None:
    from app.detection.screening import fit_calibration

    cal = fit_calibration([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    assert cal.probabilities == (0.0, 0.5, 0.5, 1.0)
    # Read linearly between fitted scores, flat beyond them.
    assert cal([0.0, 0.35, 0.9]).tolist() == pytest.approx([0.0, 0.75, 1.0])


_unit = st.integers(0, 20).map(lambda v: v / 20)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(_unit, st.booleans()), min_size=1, max_size=40))
def test_calibration_is_monotone_and_keeps_the_hit_rate(pairs: list[tuple[float, bool]]) -> None:
    from app.detection.screening import Calibration, fit_calibration

    scores = np.array([p[0] for p in pairs])
    labels = np.array([p[1] for p in pairs], dtype=float)
    cal = fit_calibration(scores, labels)
    assert all(b >= a for a, b in itertools.pairwise(cal.probabilities))
    # Stored compactly: a flat run keeps its two ends only.
    p = cal.probabilities
    assert not any(a == b == c for a, b, c in zip(p, p[1:], p[2:], strict=False))
    # Isotonic regression preserves the mean: the fitted values average to the observed hit rate.
    assert cal(scores).mean() == pytest.approx(labels.mean())
    assert Calibration.from_dict(cal.as_dict())(scores) == pytest.approx(cal(scores), abs=1e-6)


def test_a_calibration_that_is_not_monotone_is_refused() -> None:
    from app.detection.screening import Calibration

    with pytest.raises(ValueError, match="ascending"):
        Calibration.from_dict({"scores": [0.1, 0.2], "probabilities": [0.9, 0.1]})


def _labelled() -> list[Any]:
    from app.detection.screening import label_detections

    annotated = {"a.png": [(0.0, 0.0, 9.0, 9.0)]}
    hidden = [HiddenLesion("a.png", (50.0, 50.0, 59.0, 59.0)), HiddenLesion("b.png", (0.0, 0.0, 9.0, 9.0))]
    dets = [
        ("a.png", (0.0, 0.0, 9.0, 9.0), 0.95),  # the annotated lesion: never queued
        ("a.png", (50.0, 50.0, 59.0, 59.0), 0.9),  # left-out lesion 0
        ("b.png", (100.0, 100.0, 109.0, 109.0), 0.6),  # nothing
        ("b.png", (0.0, 0.0, 9.0, 19.0), 0.4),  # left-out lesion 1 at IoU exactly 0.5
        ("b.png", (200.0, 200.0, 209.0, 209.0), 0.2),  # nothing
    ]
    return label_detections(dets, annotated, hidden)


def test_detections_are_labelled_with_the_hit_criterion() -> None:
    labelled = _labelled()
    assert [d.matches_annotation for d in labelled] == [True, False, False, False, False]
    assert [d.hidden_index for d in labelled] == [None, 0, None, 1, None]


def test_queue_report_counts_precision_and_recall_of_left_out_lesions() -> None:
    from app.detection.screening import IDENTITY, queue_report

    # Raw scores as probabilities: >= 0.5 keeps the 0.9 hit and the 0.6 miss (the 0.95 is annotated).
    r = queue_report(_labelled(), 2, IDENTITY, 0.5)
    assert (r["queue_length"], r["precision"], r["left_out_found"], r["recall"]) == (2, 0.5, 1, 0.5)
    r = queue_report(_labelled(), 2, IDENTITY, 0.3)
    assert (r["queue_length"], r["precision"], r["recall"]) == (3, round(2 / 3, 4), 1.0)


def test_the_threshold_chosen_on_val_maximises_the_queues_f1() -> None:
    from app.detection.screening import IDENTITY, choose_threshold

    # Candidates 0.9 (P 1, R .5, F1 .667), 0.6 (P .5, R .5), 0.4 (P .667, R 1, F1 .8), 0.2 (P .5, R 1).
    assert choose_threshold(_labelled(), 2, IDENTITY) == 0.4


class _FixedDetector:
    """Stands in for Detector: fixed boxes per key slice."""

    model_version = "fixed-1"

    def __init__(self, boxes: dict[str, list[tuple[tuple[float, float, float, float], float]]]) -> None:
        self.boxes = boxes

    def predict(self, file_name: str, store: Any, *, spacing_mm: Any, threshold: float) -> list[Any]:
        from app.detection.decode import Detection

        return [Detection(b, s) for b, s in self.boxes.get(file_name, []) if s >= threshold]


def test_screening_study_fits_on_one_split_and_reports_on_another(tmp_path: Path) -> None:
    from app.detection.screening import screening_study
    from tests.api.review_data import build_review_dataset

    build_review_dataset(tmp_path)  # stored key slices: 000002_01_01_050 (train), 000001_01_01_108 (test)
    train, test = "000002_01_01_050.png", "000001_01_01_108.png"
    hidden = [{"file_name": train, "box": [10, 10, 20, 20]}, {"file_name": test, "box": [100, 10, 115, 25]}]
    (tmp_path / "synth_truth.json").write_text(json.dumps({"unannotated": hidden}))
    det = _FixedDetector(
        {
            train: [((10, 10, 20, 20), 0.8), ((60, 100, 70, 110), 0.5)],
            test: [((100, 10, 115, 25), 0.85), ((5, 100, 15, 110), 0.3)],
        }
    )
    res = screening_study(tmp_path, det, fit_split="train", report_split="test")
    # On train, 0.8 is a left-out lesion and 0.5 is not: P = 1 from 0.8 up, 0 at 0.5; best F1 at P >= 1.
    assert res["calibration"] == {"scores": [0.5, 0.8], "probabilities": [0.0, 1.0]}
    assert (res["threshold"], res["threshold_raw_score"]) == (1.0, 0.8)
    assert (
        res["test"]["queue_length"] == 1 and res["test"]["precision"] == 1.0 and res["test"]["recall"] == 1.0
    )
    raw = res["test_at_raw_0.3"]
    assert (raw["queue_length"], raw["precision"], raw["recall"]) == (2, 0.5, 1.0)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(_unit, st.booleans()), min_size=1, max_size=30))
def test_calibration_equals_the_min_max_formula_of_isotonic_regression(
    pairs: list[tuple[float, bool]],
) -> None:
    from app.detection.screening import fit_calibration

    xs = sorted({p[0] for p in pairs})
    sums = [sum(float(b) for a, b in pairs if a == x) for x in xs]
    counts = [sum(1 for a, _ in pairs if a == x) for x in xs]

    def mean(j: int, k: int) -> float:
        return sum(sums[j : k + 1]) / sum(counts[j : k + 1])

    # An independent definition: f(i) = max over j <= i of min over k >= i of the mean of blocks j..k.
    expected = [max(min(mean(j, k) for k in range(i, len(xs))) for j in range(i + 1)) for i in range(len(xs))]
    assert fit_calibration([p[0] for p in pairs], [p[1] for p in pairs])(xs) == pytest.approx(expected)
