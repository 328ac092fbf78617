"""The sub-volume model of missed lesions (missed_off_key): default unchanged, storage rule kept, truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app.cli import main
from app.deeplesion.csvio import write_dl_info
from app.deeplesion.synth import generator
from app.deeplesion.synth.generator import SUBVOLUME_Z_MM, DatasetPlan, _truth, plan_dataset
from app.deeplesion.synth.lesions import NEAR_CLEAR_MM
from app.detection.volume_truth import left_out_lesions
from tests.synth_fast import empty_slices

PATIENTS = 8
SEED = 23
RATE = 0.5


@pytest.fixture(scope="module")
def default() -> DatasetPlan:
    return plan_dataset(patients=PATIENTS, seed=SEED)


@pytest.fixture(scope="module")
def subvolume() -> DatasetPlan:
    return plan_dataset(patients=PATIENTS, seed=SEED, missed_off_key=RATE)


def _files(plan: DatasetPlan, tmp: Path, rate: float | None = None) -> tuple[bytes, str]:
    """DL_info.csv bytes and synth_truth.json text of a plan, as generate_dataset writes them."""
    write_dl_info(tmp / "DL_info.csv", plan.records())
    return (tmp / "DL_info.csv").read_bytes(), json.dumps(_truth(plan.plans, SEED, 512, rate), indent=1)


def _left_out_on(truth: dict[str, Any]) -> tuple[int, int]:
    """Left-out observations a stored slice shows: (on a CSV key slice, on no CSV key slice)."""
    on_key = off_key = 0
    for lesion in truth["lesions"]:
        for obs in lesion["studies"]:
            if obs["in_csv"] or not obs["stored_slices_showing_it"]:
                continue
            if obs["visible_on_csv_key_slices"]:
                on_key += 1
            else:
                off_key += 1
    return on_key, off_key


def test_without_the_option_the_plan_and_files_are_those_of_the_default_model(
    default: DatasetPlan, tmp_path: Path
) -> None:
    explicit = plan_dataset(patients=PATIENTS, seed=SEED, missed_off_key=None)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _files(explicit, tmp_path / "a") == _files(default, tmp_path / "b")
    truth = _truth(default.plans, SEED, 512)
    assert "missed_off_key" not in truth["generator"]
    assert not any("placed_near" in lesion for lesion in truth["lesions"])


def test_the_option_keeps_the_default_lesions_and_records_its_rate(
    default: DatasetPlan, subvolume: DatasetPlan
) -> None:
    for plain, model in zip(default.plans, subvolume.plans, strict=True):
        # The neighbours come from a stream of their own: the default lesions are drawn unchanged.
        assert model.lesions[: len(plain.lesions)] == plain.lesions
    assert sum(len(p.lesions) for p in subvolume.plans) > sum(len(p.lesions) for p in default.plans)
    truth = _truth(subvolume.plans, SEED, 512, RATE)
    assert truth["generator"]["missed_off_key"] == RATE
    assert any("placed_near" in lesion for lesion in truth["lesions"])


def test_neighbours_lie_inside_their_lesions_context_and_miss_its_centre_height(
    subvolume: DatasetPlan,
) -> None:
    near = [(p, les) for p in subvolume.plans for les in p.lesions if les.near]
    assert near
    for p, les in near:
        anchor = next(a for a in p.lesions if a.index == les.near)
        dz = abs(les.centre[2] - anchor.centre[2])
        assert SUBVOLUME_Z_MM[0] - 1e-9 <= dz <= SUBVOLUME_Z_MM[1] + 1e-9
        assert les.semi_axes[2] <= dz - NEAR_CLEAR_MM + 1e-9


def test_the_option_leaves_out_lesions_that_stored_slices_show_off_the_key_slices(
    default: DatasetPlan, subvolume: DatasetPlan
) -> None:
    plain_on, plain_off = _left_out_on(_truth(default.plans, SEED, 512))
    on, off = _left_out_on(_truth(subvolume.plans, SEED, 512, RATE))
    assert off >= PATIENTS // 2 and off > 2 * plain_off, (off, plain_off)
    # Those on key slices are still left out as before.
    assert on >= plain_on // 2


def test_the_storage_rule_holds_with_the_option(subvolume: DatasetPlan) -> None:
    """Only slices within +-30 mm (Slice_range) of a CSV key slice are stored."""
    ranges: dict[str, set[int]] = {}
    for r in subvolume.records():
        folder = r.file_name.rpartition("_")[0]
        ranges.setdefault(folder, set()).update(range(r.slice_range[0], r.slice_range[1] + 1))
    for p in subvolume.plans:
        for st in p.studies:
            for s in st.series:
                assert s.stored == ranges.get(s.folder, set())


def test_rate_zero_leaves_out_no_lesion_that_cuts_no_csv_key_slice() -> None:
    plan = plan_dataset(patients=4, seed=SEED, missed_off_key=0.0)
    on, off = _left_out_on(_truth(plan.plans, SEED, 512, 0.0))
    assert off == 0 and on > 0
    # ...and rate one leaves out every such lesion a stored slice shows, unless it is its study's only one.
    plan = plan_dataset(patients=4, seed=SEED, missed_off_key=1.0)
    assert _left_out_on(_truth(plan.plans, SEED, 512, 1.0))[1] > 0


def test_left_out_lesions_count_only_those_a_stored_slice_shows(subvolume: DatasetPlan) -> None:
    truth = _truth(subvolume.plans, SEED, 512, RATE)
    unshown = [
        o
        for les in truth["lesions"]
        for o in les["studies"]
        if not o["in_csv"] and not o["stored_slices_showing_it"]
    ]
    assert unshown, "the check needs left-out lesions no stored slice shows"
    assert len(left_out_lesions(truth)) == sum(_left_out_on(truth))


def test_cli_synth_missed_off_key_writes_it_into_the_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator, "_render_job", empty_slices)
    out = tmp_path / "d"
    args = ["synth", str(out), "--patients", "2", "--seed", "4", "--workers", "1", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--missed-off-key", "0.4"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "synth_truth.json").read_text())["generator"]["missed_off_key"] == 0.4
    bad = CliRunner().invoke(
        main, ["synth", str(tmp_path / "m"), "--metadata-only", "--missed-off-key", "0.4"]
    )
    assert bad.exit_code != 0 and "--missed-off-key" in bad.output
    with pytest.raises(ValueError, match="missed_off_key"):
        plan_dataset(patients=1, seed=1, missed_off_key=1.5)
