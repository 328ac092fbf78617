"""Volume screening's pure rules: joining slice boxes into 3D candidates, matching marked lesions, truth."""

from __future__ import annotations

from typing import Any

import pytest

from app.detection import volume as volume_rules
from app.detection.volume import (
    AnnotatedLesion,
    Candidate,
    SliceBox,
    host_key_slice,
    lesion_extent,
    link_slices,
    matches_annotation,
)
from app.detection.volume_truth import QueueEntry, cut_box, found_lesion, left_out_lesions, queue_curve


def test_boxes_on_adjacent_slices_join_into_one_candidate_with_its_largest_slice() -> None:
    dets = {
        10: [((100, 100, 110, 110), 0.4)],
        11: [((98, 98, 114, 114), 0.9)],  # the widest cut
        12: [((101, 101, 111, 111), 0.5)],
    }
    (cand,) = link_slices(dets)
    assert [b.slice_index for b in cand.boxes] == [10, 11, 12]
    assert (cand.first, cand.last, cand.largest.slice_index) == (10, 12, 11)
    assert cand.largest.box == (98, 98, 114, 114)
    assert cand.score == 0.9  # the best slice's


def test_candidate_score_is_the_mean_of_its_best_score_slices_slice_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = (50, 50, 70, 70)
    spike = Candidate((SliceBox(1, box, 0.9), SliceBox(2, box, 0.3), SliceBox(3, box, 0.2)))
    steady = Candidate((SliceBox(1, box, 0.7), SliceBox(2, box, 0.7), SliceBox(3, box, 0.1)))
    assert (spike.score, steady.score) == (0.9, 0.7)
    monkeypatch.setattr(volume_rules, "SCORE_SLICES", 2)
    assert steady.score == pytest.approx(0.7) and spike.score == pytest.approx(0.6)
    assert Candidate((SliceBox(4, box, 0.8),)).score == 0.8  # one slice: its own score
    far = (300, 300, 320, 320)
    ranked = link_slices({1: [(box, 0.9), (far, 0.7)], 2: [(box, 0.3), (far, 0.7)]})
    assert [c.boxes[0].box for c in ranked] == [far, box]


def test_one_missing_slice_is_tolerated_two_split_the_candidate() -> None:
    box = (50, 50, 70, 70)
    one_gap = link_slices({1: [(box, 0.5)], 3: [(box, 0.5)]})
    two_gap = link_slices({1: [(box, 0.5)], 4: [(box, 0.5)]})
    assert len(one_gap) == 1 and len(one_gap[0].boxes) == 2
    assert len(two_gap) == 2
    assert len(link_slices({1: [(box, 0.5)], 4: [(box, 0.5)]}, max_gap=2)) == 1


def test_boxes_far_apart_on_the_same_slices_stay_two_candidates() -> None:
    a, b = (10, 10, 30, 30), (200, 200, 230, 230)
    cands = link_slices({5: [(a, 0.3), (b, 0.8)], 6: [(b, 0.7), (a, 0.35)]})
    assert len(cands) == 2
    assert cands[0].score == 0.8 and {sb.box for sb in cands[0].boxes} == {b}  # ranked by score
    assert {sb.box for sb in cands[1].boxes} == {a}


def test_a_shrinking_cut_centred_in_the_last_box_links_despite_low_iou() -> None:
    # IoU 16/400 = 0.04, but each centre lies in the other box: the lesion's pole.
    cands = link_slices({1: [((0, 0, 20, 20), 0.9)], 2: [((8, 8, 12, 12), 0.4)]})
    assert len(cands) == 1


def test_two_boxes_on_one_slice_never_join_the_same_candidate() -> None:
    cands = link_slices({1: [((0, 0, 20, 20), 0.9), ((2, 2, 22, 22), 0.8)]})
    assert len(cands) == 2


def test_extent_is_half_the_long_axis_each_way_and_at_least_one_slice() -> None:
    assert lesion_extent(50, 20.0, 2.0) == (45, 55)
    assert lesion_extent(50, 3.0, 5.0) == (49, 51)
    assert lesion_extent(50, 20.0, None) == (49, 51)


def test_a_candidate_matches_a_marked_lesion_on_any_slice_of_its_extent() -> None:
    marked = AnnotatedLesion(slice_index=20, box=(100, 100, 140, 140), first=17, last=23)
    # Off the key slice, small (low IoU with the widest box) but centred in it: the same lesion.
    near = Candidate((SliceBox(22, (115, 115, 125, 125), 0.8), SliceBox(23, (116, 116, 124, 124), 0.7)))
    # The same place but beyond the lesion's depth: another lesion.
    far = Candidate((SliceBox(30, (115, 115, 125, 125), 0.8),))
    # On the key slice, elsewhere.
    beside = Candidate((SliceBox(20, (150, 150, 170, 170), 0.8),))
    assert matches_annotation(near, [marked])
    assert not matches_annotation(far, [marked])
    assert not matches_annotation(beside, [marked])
    # A candidate reaching into the extent on only one of its slices still matches.
    reaching = Candidate((SliceBox(23, (118, 118, 122, 122), 0.5), SliceBox(24, (118, 118, 122, 122), 0.9)))
    assert matches_annotation(reaching, [marked])


def test_host_key_slice_is_the_nearest_key_whose_context_holds_the_slice() -> None:
    keys = [(30, 20, 40), (45, 35, 55), (90, 80, 100)]
    assert host_key_slice(37, keys) == 30
    assert host_key_slice(39, keys) == 45
    assert host_key_slice(60, keys) is None


def _truth() -> dict[str, Any]:
    series = {
        "series_id": 1,
        "folder": "000001_01_01",
        "slice_interval_mm": 1.0,
        "pixel_spacing_mm": 0.5,
        "z_first_mm": 100.0,
        "stored_slices": [[1, 30]],
    }
    lesion = {
        "lesion_id": "000001-L01",
        "patient_index": 1,
        "centre_mm": [0.0, 0.0, 110.0],  # slice 11
        "in_plane_angle_deg": 0.0,
        "studies": [
            {
                "study_index": 1,
                "series_id": 1,
                "semi_axes_mm": [4.0, 2.0, 3.0],
                "centre_px": [200.0, 100.0],
                "in_csv": False,
                "stored_slices_showing_it": [9, 10, 11, 12, 13],
                "visible_on_csv_key_slices": [],
            }
        ],
    }
    marked = {**lesion, "lesion_id": "000001-L02", "studies": [{**lesion["studies"][0], "in_csv": True}]}
    return {"patients": [{"patient_index": 1, "studies": [{"study_index": 1, "series": [series]}]}],
            "lesions": [lesion, marked]}  # fmt: skip


def test_left_out_lesions_have_their_cut_on_each_stored_slice_showing_them() -> None:
    (lesion,) = left_out_lesions(_truth())
    assert lesion.folder == "000001_01_01" and sorted(lesion.boxes) == [9, 10, 11, 12, 13]
    # At the centre: 4 mm / 0.5 mm = 8 px wide each way, 2 mm = 4 px, plus the 5 px padding.
    assert lesion.boxes[11] == pytest.approx((187.0, 91.0, 213.0, 109.0))
    assert lesion.boxes[9][2] - lesion.boxes[9][0] < lesion.boxes[11][2] - lesion.boxes[11][0]
    obs = _truth()["lesions"][0]["studies"][0]
    assert cut_box(obs, _truth()["lesions"][0], 114.0, 0.5) is None


def test_a_queue_item_finds_a_left_out_lesion_on_any_slice_it_shares() -> None:
    (lesion,) = left_out_lesions(_truth())
    hit = QueueEntry(
        "000001_01_01", (SliceBox(30, (0, 0, 5, 5), 0.9), SliceBox(12, lesion.boxes[12], 0.5)), 0.9
    )
    other_series = QueueEntry("000001_01_02", (SliceBox(12, lesion.boxes[12], 0.9),), 0.9)
    off = QueueEntry("000001_01_01", (SliceBox(20, lesion.boxes[11], 0.9),), 0.9)
    assert found_lesion(hit, [lesion]) == 0
    assert found_lesion(other_series, [lesion]) is None
    assert found_lesion(off, [lesion]) is None


def test_queue_curve_counts_precision_and_distinct_lesions_found_per_threshold() -> None:
    (lesion,) = left_out_lesions(_truth())
    right = QueueEntry("000001_01_01", (SliceBox(11, lesion.boxes[11], 0.9),), 0.9)
    again = QueueEntry("000001_01_01", (SliceBox(12, lesion.boxes[12], 0.6),), 0.6)
    wrong = QueueEntry("000001_01_01", (SliceBox(25, (0, 0, 9, 9), 0.7),), 0.7)
    curve = queue_curve([wrong, again, right], [lesion])
    assert [(p["queue_length"], p["precision"], p["found"]) for p in curve.points] == [
        (1, 1.0, 1),
        (2, 0.5, 1),
        (3, 0.6667, 1),
    ]
    assert curve.best_at_precision(0.6)["queue_length"] == 1
    assert curve.best_at_precision(1.01)["found"] == 0
