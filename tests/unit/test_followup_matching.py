"""Follow-up matching (lesion graph) and the RECIST 1.1 response rule, at their boundaries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.deeplesion.followup import (
    GATE,
    MAX_TARGETS,
    PD_ABSOLUTE_MM,
    PD_INCREASE,
    PR_DECREASE,
    LesionObs,
    choose_targets,
    match_all,
    match_patient,
    patch_descriptor,
    recist_response,
    tracks_from_links,
)
from app.deeplesion.synth.followup import plan_followup
from bench.bench_followup import observations, scores, true_links


def _obs(
    key: int,
    study: int,
    norm: tuple[float, float, float],
    scan: tuple[float, float, float],
    long_mm: float = 20.0,
    ltype: int = 4,
) -> LesionObs:
    return LesionObs(key, 1, study, norm, scan, long_mm, ltype)


def test_links_on_the_synthetic_set_reach_95_percent_against_known_identities() -> None:
    plan = plan_followup(2500, seed=11)
    obs = observations(plan.records)
    res = match_all(obs)
    precision, recall = scores({(lk.a, lk.b) for lk in res.links}, true_links(plan.row_tracks, obs))
    assert precision >= 0.95 and recall >= 0.95
    assert set(res.track_of) == {o.key for o in obs}


def test_a_whole_study_shifted_in_the_scanner_links_the_same() -> None:
    plan = plan_followup(1500, seed=5)
    obs = observations(plan.records)
    moved = [
        dataclasses.replace(o, scan_mm=(o.scan_mm[0] + 40, o.scan_mm[1] - 25, o.scan_mm[2] + 60))
        if o.study == 2
        else o
        for o in obs
    ]
    assert {(lk.a, lk.b) for lk in match_all(moved).links} == {(lk.a, lk.b) for lk in match_all(obs).links}


def test_each_lesion_links_to_its_own_counterpart_not_the_nearer_neighbour_in_size() -> None:
    a1 = _obs(1, 1, (0.40, 0.50, 0.40), (100, 100, 200), 30)
    a2 = _obs(2, 1, (0.46, 0.50, 0.40), (120, 100, 200), 12)
    b1 = _obs(3, 2, (0.40, 0.50, 0.40), (100, 100, 200), 34)
    b2 = _obs(4, 2, (0.46, 0.50, 0.40), (120, 100, 200), 10)
    res = match_patient([a1, a2, b1, b2])
    assert {(lk.a, lk.b) for lk in res.links} == {(1, 3), (2, 4)}
    assert res.track_of[1] == res.track_of[3] != res.track_of[2] == res.track_of[4]


def test_a_different_type_or_a_far_lesion_is_never_linked_and_starts_a_track() -> None:
    a = _obs(1, 1, (0.4, 0.5, 0.4), (100, 100, 200), ltype=4)
    other_type = _obs(2, 2, (0.4, 0.5, 0.4), (100, 100, 200), ltype=5)
    far = _obs(3, 3, (0.9, 0.1, 0.9), (300, 20, 500), ltype=4)
    res = match_patient([a, other_type, far])
    assert res.links == []
    assert len(set(res.track_of.values())) == 3


def test_a_lesion_missing_in_one_study_is_bridged_to_the_next() -> None:
    a = _obs(1, 1, (0.4, 0.5, 0.4), (100, 100, 200))
    c = _obs(3, 3, (0.4, 0.5, 0.41), (101, 100, 204))
    res = match_patient([a, c])
    assert [(lk.a, lk.b) for lk in res.links] == [(1, 3)]
    assert res.links[0].cost <= GATE


def test_tracks_from_links_are_connected_components_named_by_smallest_key() -> None:
    assert tracks_from_links([5, 3, 9, 7], [(3, 9), (9, 7)]) == {5: 5, 3: 3, 9: 3, 7: 3}
    assert tracks_from_links([1, 2], [(1, 4)]) == {1: 1, 2: 2}


def test_patch_descriptor_is_the_same_for_the_same_patch_and_differs_for_another() -> None:
    rng = np.random.default_rng(0)
    patch = rng.normal(40, 10, (32, 32))
    patch[10:22, 10:22] = -20
    assert patch_descriptor(patch) == patch_descriptor(patch.copy())
    assert patch_descriptor(patch) != patch_descriptor(rng.normal(40, 10, (32, 32)))
    assert sum(patch_descriptor(patch)) == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize(
    ("baseline", "nadir", "current", "expected"),
    [
        (100.0, 100.0, 100 * (1 - PR_DECREASE), "PR"),  # exactly -30%
        (100.0, 100.0, 100 * (1 - PR_DECREASE) + 0.1, "SD"),  # just short of -30%
        (50.0, 50.0, 50 * (1 + PD_INCREASE), "PD"),  # exactly +20% and 10 mm
        (50.0, 50.0, 50 * (1 + PD_INCREASE) - 0.1, "SD"),  # just short of +20%
        (20.0, 20.0, 20 * (1 + PD_INCREASE) + 0.5, "SD"),  # +22.5% but only 4.5 mm
        (25.0, 25.0, 25.0 + PD_ABSOLUTE_MM, "PD"),  # exactly +5 mm and +20%
        (100.0, 50.0, 60.0, "PD"),  # -40% from baseline, but +20% and 10 mm from the nadir
        (100.0, 60.0, 65.0, "PR"),  # +8% from the nadir is not progression
        (100.0, 100.0, 0.0, "CR"),
    ],
)
def test_recist_response_at_its_boundaries(
    baseline: float, nadir: float, current: float, expected: str
) -> None:
    resp = recist_response(baseline, nadir, current)
    assert resp.category == expected
    assert resp.rule
    assert resp.change_from_baseline == pytest.approx((current - baseline) / baseline)


def test_a_new_lesion_is_progression_and_a_zero_baseline_is_refused() -> None:
    assert recist_response(100, 80, 70, new_lesion=True).category == "PD"
    with pytest.raises(ValueError):
        recist_response(0, 0, 0)


def test_targets_are_the_largest_measurable_at_most_five_and_two_per_organ() -> None:
    lesions = [
        (1, 4, 50),
        (2, 4, 40),
        (3, 4, 30),
        (4, 5, 9.9),
        (5, 5, 10),
        (6, 2, 12),
        (7, 3, 15),
        (8, 6, 11),
        (9, 7, 10.5),
    ]
    chosen = choose_targets(lesions)
    assert len(chosen) == MAX_TARGETS
    assert chosen == [1, 2, 7, 6, 8]
    assert 3 not in chosen and 4 not in chosen


def test_a_lesion_without_body_location_does_not_steer_the_study_shift() -> None:
    from app.deeplesion.followup import study_shift

    a = [_obs(1, 1, (0.4, 0.5, 0.4), (100, 100, 200)), _obs(2, 1, (None, None, None), (300, 300, 100), 50)]  # type: ignore[arg-type]
    b = [_obs(3, 2, (0.4, 0.5, 0.4), (110, 95, 230)), _obs(4, 2, (None, None, None), (10, 10, 10), 50)]  # type: ignore[arg-type]
    assert study_shift(a, b).tolist() == [10.0, -5.0, 30.0]
