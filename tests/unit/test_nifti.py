"""NIfTI sub-volumes: runs of consecutive slices, file names, and voxels read back with nibabel."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.deeplesion.errors import SliceNotFoundError, UnsafePathError
from app.deeplesion.nifti import series_runs, volume_file_name, write_series_nifti
from app.deeplesion.store import SliceStore

SERIES = "000004_02_03"


@pytest.mark.parametrize(
    ("indices", "runs"),
    [
        ([1, 2, 3, 5, 6, 9], [(1, 3), (5, 6), (9, 9)]),
        ([], []),
        ([7], [(7, 7)]),
        ([9, 3, 2, 2, 1, 4], [(1, 4), (9, 9)]),
        (range(100, 131), [(100, 130)]),
    ],
)
def test_series_runs_split_at_gaps(indices: list[int], runs: list[tuple[int, int]]) -> None:
    assert series_runs(indices) == runs


def test_volume_file_name_follows_the_dataset_convention() -> None:
    assert volume_file_name("000001_01_01", 103, 115) == "000001_01_01_103-115.nii.gz"
    assert volume_file_name("000001_01_01", 7, 1004) == "000001_01_01_007-1004.nii.gz"
    with pytest.raises(UnsafePathError):
        volume_file_name("../x", 1, 2)


def load(path: Path) -> nib.Nifti1Image:
    """A written volume, checked to be NIfTI-1."""
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


@pytest.fixture
def store(tmp_path: Path) -> SliceStore:
    store = SliceStore(tmp_path / "data")
    rng = np.random.default_rng(11)
    for index in (3, 4, 5, 6, 10, 11):
        hu = rng.integers(-1024, 3072, size=(6, 5)).astype(np.int16)
        hu[0, 0] = index  # a marker so a misordered stack is caught
        store.write_hu(f"{SERIES}_{index:03d}.png", hu)
    return store


def test_every_stored_run_becomes_one_int16_volume(store: SliceStore, tmp_path: Path) -> None:
    out = tmp_path / "nifti"
    paths = write_series_nifti(store, SERIES, out, (0.7, 0.7, 5.0))
    assert [p.name for p in paths] == [f"{SERIES}_003-006.nii.gz", f"{SERIES}_010-011.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in paths]  # no temporary files left
    for path, (first, last) in zip(paths, [(3, 6), (10, 11)], strict=True):
        image = load(path)
        data = np.asanyarray(image.dataobj)
        assert data.dtype == np.int16
        assert data.shape == (6, 5, last - first + 1)
        for k, index in enumerate(range(first, last + 1)):
            np.testing.assert_array_equal(data[:, :, k], store.read_hu_slice(SERIES, index))


def test_spacing_and_affine_follow_dl_save_nifti(store: SliceStore, tmp_path: Path) -> None:
    (path, _) = write_series_nifti(store, SERIES, tmp_path, (0.781, 0.79, 2.5))
    image = load(path)
    assert image.header.get_zooms() == pytest.approx((0.781, 0.79, 2.5))
    expected = np.array([[0, -0.79, 0, 0], [-0.781, 0, 0, 0], [0, 0, -2.5, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(image.affine, expected, atol=1e-6)
    assert image.header.get_xyzt_units()[0] == "mm"


def test_selected_slices_only(store: SliceStore, tmp_path: Path) -> None:
    paths = write_series_nifti(store, SERIES, tmp_path, (1.0, 1.0, 1.0), slices=[5, 4, 11])
    assert [p.name for p in paths] == [f"{SERIES}_004-005.nii.gz", f"{SERIES}_011-011.nii.gz"]
    data = np.asanyarray(load(paths[0]).dataobj)
    assert [int(data[0, 0, k]) for k in range(2)] == [4, 5]


def test_requesting_a_slice_that_is_not_stored_names_it(store: SliceStore, tmp_path: Path) -> None:
    with pytest.raises(SliceNotFoundError, match="1 slice\\(s\\) of 000004_02_03 not stored: 007"):
        write_series_nifti(store, SERIES, tmp_path, (1.0, 1.0, 1.0), slices=[5, 6, 7])
    assert list(tmp_path.glob("*.nii.gz")) == []


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (1.0, 1.0), (1.0, float("nan"), 1.0)])
def test_bad_spacing_is_refused(
    store: SliceStore, tmp_path: Path, spacing: tuple[float, float, float]
) -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        write_series_nifti(store, SERIES, tmp_path, spacing)


def test_missing_series_writes_nothing(store: SliceStore, tmp_path: Path) -> None:
    assert write_series_nifti(store, "000099_01_01", tmp_path / "o", (1.0, 1.0, 1.0)) == []
