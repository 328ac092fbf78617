"""A generated synthetic dataset on disk: real layout, readable CSV, context slices, truth file, seed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from app.cli import main
from app.deeplesion.csvio import read_dl_info
from app.deeplesion.schema import LesionRecord
from app.deeplesion.store import SliceStore
from app.deeplesion.synth import SynthSummary, generate_dataset
from app.deeplesion.synth.generator import _jobs, _render_job, plan_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    """The small dataset other areas' tests build: two patients, one study each."""
    root = tmp_path_factory.mktemp("synth")
    summary = generate_dataset(root, patients=2, seed=1, max_studies=1, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def records(dataset: tuple[Path, SynthSummary]) -> list[LesionRecord]:
    return read_dl_info(dataset[0] / "DL_info.csv")


@pytest.fixture(scope="module")
def truth(dataset: tuple[Path, SynthSummary]) -> dict[str, Any]:
    return json.loads((dataset[0] / "synth_truth.json").read_text())


def test_csv_reads_back_with_zero_validation_errors(
    dataset: tuple[Path, SynthSummary], records: list[LesionRecord]
) -> None:
    assert len(records) == dataset[1].lesions_annotated > 0
    assert {r.patient_index for r in records} == {1, 2}
    assert len({r.file_name for r in records}) == dataset[1].key_slices


def test_every_slice_of_every_slice_range_is_stored(
    dataset: tuple[Path, SynthSummary], records: list[LesionRecord]
) -> None:
    store = SliceStore(dataset[0])
    stored_total = 0
    for r in records:
        stored = set(store.stored_slices(r.series_folder))
        first, last = r.slice_range
        assert set(range(first, last + 1)) <= stored
        assert store.exists(r.file_name)
    for folder in (dataset[0] / "Images_png").iterdir():
        stored_total += len(list(folder.glob("*.png")))
    assert stored_total == dataset[1].slices_written


def test_only_context_slices_are_stored_not_whole_volumes(
    dataset: tuple[Path, SynthSummary], records: list[LesionRecord], truth: dict[str, Any]
) -> None:
    store = SliceStore(dataset[0])
    wanted: dict[str, set[int]] = {}
    for r in records:
        wanted.setdefault(r.series_folder, set()).update(range(r.slice_range[0], r.slice_range[1] + 1))
    for folder, indices in wanted.items():
        assert set(store.stored_slices(folder)) == indices
    volumes = {
        s["folder"]: s["n_slices_in_volume"]
        for p in truth["patients"]
        for st in p["studies"]
        for s in st["series"]
    }
    assert all(len(wanted[f]) < volumes[f] for f in wanted)


def test_slices_are_16_bit_ct_in_hu_with_air_and_bone(
    dataset: tuple[Path, SynthSummary], records: list[LesionRecord]
) -> None:
    store = SliceStore(dataset[0])
    r = records[0]
    hu = store.read_hu(r.file_name)
    assert hu.dtype == np.int16 and hu.shape == (r.image_size[1], r.image_size[0])
    assert int(hu.min()) >= -1024 and int(hu.max()) <= 3071
    assert float(np.median(hu[:20, :])) < -950  # air above the body
    assert int(hu.max()) > 500  # bone


def test_the_lesion_shows_at_the_recist_centre_of_its_key_slice(
    dataset: tuple[Path, SynthSummary], records: list[LesionRecord], truth: dict[str, Any]
) -> None:
    store = SliceStore(dataset[0])
    by_row = {}
    for les in truth["lesions"]:
        for st in les["studies"]:
            if st["in_csv"]:
                by_row[(st["file_name"], tuple(st["csv_recist"]))] = (les, st)
    assert len(by_row) == len(records)
    for r in records:
        les, st = by_row[(r.file_name, tuple(round(v, 3) for v in r.recist_px or ()))]
        if r.possibly_noisy:
            continue
        c = r.recist_px or ()
        col, row = round((c[0] + c[2]) / 2), round((c[1] + c[3]) / 2)
        hu = store.read_hu(r.file_name).astype(float)
        patch = hu[row - 1 : row + 2, col - 1 : col + 2]
        # The lesion's noise-free HU at its centre in this study's phase (its core when it has one), with
        # image noise averaged over 9 pixels, kernel blur and streaks.
        assert abs(float(patch.mean()) - st["centre_hu"]) < 35, (les["site"], les["kind"], patch.mean(), st)


def test_truth_lists_every_lesion_with_its_csv_status(
    dataset: tuple[Path, SynthSummary], records: list[LesionRecord], truth: dict[str, Any]
) -> None:
    assert truth["synthetic"] is True and "SYNTHETIC" in truth["description"]
    in_csv = [st for les in truth["lesions"] for st in les["studies"] if st["in_csv"]]
    not_in_csv = [st for les in truth["lesions"] for st in les["studies"] if not st["in_csv"]]
    assert len(in_csv) == len(records)
    assert len(not_in_csv) == dataset[1].lesions_unannotated
    for les in truth["lesions"]:
        assert len(les["centre_mm"]) == 3 and len(les["semi_axes_mm"]) == 3
        assert 1 <= les["type"] <= 8
    csv_keys = {r.file_name for r in records}
    for entry in truth["unannotated"]:
        assert entry["file_name"] in csv_keys and len(entry["box"]) == 4


def test_truth_names_the_generator_and_each_study_and_series_acquisition(truth: dict[str, Any]) -> None:
    from app.deeplesion.synth.acquisition import KERNELS, PHASES
    from app.deeplesion.synth.generator import GENERATOR_VERSION

    assert truth["generator"]["version"] == GENERATOR_VERSION
    for patient in truth["patients"]:
        for study in patient["studies"]:
            assert study["contrast_phase"] in PHASES
            for series in study["series"]:
                assert series["kernel"] in KERNELS
                assert series["noise_sd_hu"] > 0 and 0 <= series["artefacts"] <= 1
    assert all(les["kind"] for les in truth["lesions"])


def test_cli_synth_prints_a_summary_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "meta"
    result = CliRunner().invoke(
        main, ["synth", str(out), "--metadata-only", "--lesions", "50", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "50 annotated lesions" in result.output
    assert len(read_dl_info(out / "DL_info.csv")) == 50
    again = CliRunner().invoke(main, ["synth", str(out), "--metadata-only", "--lesions", "50"])
    assert again.exit_code != 0 and "already exists" in again.output
    bad = CliRunner().invoke(main, ["synth", str(tmp_path / "x"), "--patients", "0"])
    assert bad.exit_code != 0 and "patients" in bad.output.lower()


def test_slices_rendered_by_the_worker_pool_equal_slices_rendered_in_process(
    dataset: tuple[Path, SynthSummary], tmp_path: Path
) -> None:
    assert dataset[1].slices_written >= 120, "the fixture must be big enough to use the process pool"
    plan = plan_dataset(patients=2, seed=1, max_studies=1)
    job = next(_jobs(plan.plans, tmp_path / "Images_png", seed=1))
    _render_job(job)
    for k in job.indices:
        mine = (tmp_path / "Images_png" / job.folder / f"{k:03d}.png").read_bytes()
        assert mine == (dataset[0] / "Images_png" / job.folder / f"{k:03d}.png").read_bytes()


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"patients": 1, "max_studies": 1, "max_lesions": 1, "progress": False}
    generate_dataset(tmp_path / "a", seed=8, **kwargs)
    generate_dataset(tmp_path / "b", seed=8, workers=2, **kwargs)
    first, second = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(first) > 3 and first == second
    same = [r.measurement_coordinates for r in read_dl_info(tmp_path / "a" / "DL_info.csv")]
    assert [
        r.measurement_coordinates
        for r in plan_dataset(patients=1, seed=8, max_studies=1, max_lesions=1).records()
    ] == same
    other = plan_dataset(patients=1, seed=9, max_studies=1, max_lesions=1).records()
    assert [r.measurement_coordinates for r in other] != same


def test_most_left_out_lesions_cut_clearly_through_a_csv_key_slice() -> None:
    """Bookmarks miss lesions a radiologist saw: most left-out lesions show on another lesion's key slice."""
    from app.deeplesion.synth.generator import SHOWN_MIN_MM, SHOWN_MIN_SHARE

    plan = plan_dataset(patients=40, seed=5)
    left_out = shown = 0
    for patient in plan.plans:
        for study in patient.studies:
            keys = [o for o in study.observations if o.annotated]
            assert keys or not any(o.visible for o in study.observations)
            for ob in study.observations:
                if ob.annotated or not ob.visible:
                    continue
                left_out += 1
                zs = [h.series.z_of(h.key_index) for h in keys if h.series is ob.series]
                cuts = [ob.shape.cross_section(z) for z in zs]
                widest = max((2 * max(c) for c in cuts if c is not None), default=0.0)
                lesion_width = 2 * max(ob.shape.semi_axes[:2])
                shown += widest >= max(SHOWN_MIN_MM, SHOWN_MIN_SHARE * lesion_width) - 1e-9
    assert left_out >= 20, left_out
    assert shown / left_out >= 0.6, (shown, left_out)
