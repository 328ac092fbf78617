"""The synthetic follow-up set: several studies per patient, lesions recurring, identities in the truth."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from app.deeplesion.csvio import read_dl_info
from app.deeplesion.followup import match_all
from app.deeplesion.synth.followup import FollowupPlan, generate_followup_metadata, plan_followup
from app.deeplesion.synth.generator import DatasetPlan, _truth, plan_dataset
from bench.bench_followup import observations, scores, true_links


@pytest.fixture(scope="module")
def plan() -> FollowupPlan:
    return plan_followup(3000, seed=3)


def _studies_of_tracks(plan: FollowupPlan) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for rec, tid in zip(plan.records, plan.row_tracks, strict=True):
        out[tid].append(rec.study_index)
    return out


def test_exact_row_count_and_rows_align_with_truth(plan: FollowupPlan) -> None:
    assert len(plan.records) == 3000 == len(plan.truth["rows"])
    assert [r.file_name for r in plan.records] == [t["file_name"] for t in plan.truth["rows"]]
    assert {t["track_id"] for t in plan.truth["tracks"]} == set(plan.row_tracks)


def test_same_seed_same_set_and_another_seed_differs(plan: FollowupPlan) -> None:
    again = plan_followup(3000, seed=3)
    assert again.records == plan.records and again.row_tracks == plan.row_tracks
    assert plan_followup(3000, seed=4).records != plan.records


def test_lesions_recur_across_studies_and_a_track_is_one_patient(plan: FollowupPlan) -> None:
    studies = _studies_of_tracks(plan)
    assert sum(1 for s in studies.values() if len(s) >= 3) > 50
    for tid, ss in studies.items():
        assert len(ss) == len(set(ss)), f"{tid} twice in one study"
    for rec, tid in zip(plan.records, plan.row_tracks, strict=True):
        assert tid.startswith(f"{rec.patient_index:06d}-")


def test_lesions_appear_disappear_grow_and_shrink(plan: FollowupPlan) -> None:
    first_study: dict[int, int] = {}
    last_study: dict[int, int] = defaultdict(int)
    for rec in plan.records:
        first_study[rec.patient_index] = min(first_study.get(rec.patient_index, 99), rec.study_index)
        last_study[rec.patient_index] = max(last_study[rec.patient_index], rec.study_index)
    studies = _studies_of_tracks(plan)
    patient = {tid: int(tid.split("-")[0]) for tid in studies}
    assert any(min(s) > first_study[patient[t]] for t, s in studies.items()), "no lesion appears later"
    assert any(max(s) < last_study[patient[t]] for t, s in studies.items()), "no lesion disappears"
    sizes: dict[str, list[float]] = defaultdict(list)
    for rec, tid in zip(plan.records, plan.row_tracks, strict=True):
        sizes[tid].append(rec.long_axis_mm)
    changes = [b / a for s in sizes.values() for a, b in zip(s, s[1:], strict=False)]
    assert any(c > 1.2 for c in changes) and any(c < 0.8 for c in changes)


def test_body_shifts_and_scales_between_studies(plan: FollowupPlan) -> None:
    by_patient: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for st in plan.truth["studies"]:
        by_patient[st["patient_index"]].append(st)
    multi = [sts for sts in by_patient.values() if len(sts) > 1]
    assert multi
    # Drawn per study: equal values by chance (4 decimals) are rare, never the rule.
    assert sum(len({s["body_scale"] for s in sts}) > 1 for sts in multi) >= 0.95 * len(multi)
    assert sum(len({tuple(s["shift_mm"]) for s in sts}) > 1 for sts in multi) >= 0.95 * len(multi)


def test_written_set_reads_back_and_truth_says_synthetic(tmp_path: Path) -> None:
    summary = generate_followup_metadata(tmp_path, lesions=500, seed=1)
    records = read_dl_info(tmp_path / "DL_info.csv")
    truth = json.loads((tmp_path / "synth_truth.json").read_text())
    assert len(records) == summary.lesions_annotated == 500
    assert truth["synthetic"] is True and truth["followup"] is True
    assert [r.file_name for r in records] == [row["file_name"] for row in truth["rows"]]


# -- the image generator's follow-up mode ----------------------------------------------------------------


@pytest.fixture(scope="module")
def image_plan() -> DatasetPlan:
    return plan_dataset(patients=12, seed=3, followup=True)


def test_image_follow_up_mode_lesions_appear_resolve_and_the_body_scales(image_plan: DatasetPlan) -> None:
    late = resolved = 0
    for plan in image_plan.plans:
        assert len(plan.studies) >= 2
        seen = [{ob.lesion.index for ob in st.observations} for st in plan.studies]
        for les in plan.lesions:
            where = [les.index in s for s in seen]
            if True in where:
                late += where.index(True) > 0
                resolved += where[-1] is False and True in where
        scales = {st.phantom.scale for st in plan.studies if st.phantom is not None}
        assert len(scales) == len(plan.studies)
    assert late > 0 and resolved > 0
    truth = _truth(image_plan.plans, 3, 512)
    assert all("body_scale" in st for p in truth["patients"] for st in p["studies"])


def test_default_mode_is_what_it_was(image_plan: DatasetPlan) -> None:
    plain = plan_dataset(patients=3, seed=3)
    again = plan_dataset(patients=3, seed=3, followup=False)
    assert plain.records() == again.records()
    assert all(st.phantom is None for p in plain.plans for st in p.studies)
    assert "body_scale" not in _truth(plain.plans, 3, 512)["patients"][0]["studies"][0]


def test_matching_the_image_follow_up_csv_finds_the_true_identities(image_plan: DatasetPlan) -> None:
    records = image_plan.records()
    identity = [f"{plan.index}-{ob.lesion.index}" for plan, ob in image_plan.rows]
    obs = observations(records)
    res = match_all(obs)
    precision, recall = scores({(lk.a, lk.b) for lk in res.links}, true_links(identity, obs))
    assert precision >= 0.9 and recall >= 0.9
