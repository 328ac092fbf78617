"""NIfTI sub-volumes of a series, following the dataset's own DL_save_nifti.py convention."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.deeplesion.errors import CorruptSliceError, SliceNotFoundError
from app.deeplesion.store import SliceStore, check_series_folder

logger = logging.getLogger(__name__)


def series_runs(slice_indices: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive slice indices as (first, last); a gap starts a new run (duplicates ignored)."""
    ordered = sorted(set(int(i) for i in slice_indices))
    runs: list[tuple[int, int]] = []
    for index in ordered:
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def volume_file_name(series_folder: str, first: int, last: int) -> str:
    """`{pid}_{study}_{series}_{first:03d}-{last:03d}.nii.gz`, the dataset's own naming."""
    return f"{check_series_folder(series_folder)}_{first:03d}-{last:03d}.nii.gz"


def nifti_affine(spacing_mm: Sequence[float]) -> npt.NDArray[np.float64]:
    """DL_save_nifti.py's affine: rows/columns swapped, all axes negated (for 3D Slicer and ITK-SNAP)."""
    # Voxel (i, j, k) is PNG row i, column j of the k-th slice of the run (cv2.merge in the original).
    # World x follows the columns and y the rows, both flipped, z flipped too; the original scales rows by
    # the x spacing and columns by the y spacing, which is harmless because DeepLesion pixels are square.
    sx, sy, sz = (float(s) for s in spacing_mm)
    return np.array(
        [
            [0.0, -sy, 0.0, 0.0],
            [-sx, 0.0, 0.0, 0.0],
            [0.0, 0.0, -sz, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    """Three positive finite spacings in mm."""
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_mm must be 3 positive numbers (x, y, z), got {spacing_mm!r}")
    return values[0], values[1], values[2]


def write_series_nifti(
    store: SliceStore,
    series_folder: str,
    out_dir: Path | str,
    spacing_mm: tuple[float, float, float],
    slices: Iterable[int] | None = None,
) -> list[Path]:
    """Write one int16 HU volume (H, W, N) per run of consecutive slices (default: every stored slice)."""
    import nibabel as nib  # heavy import, only needed when exporting

    folder = check_series_folder(series_folder)
    spacing = _check_spacing(spacing_mm)
    stored = store.stored_slices(folder)
    wanted = stored if slices is None else sorted(set(int(s) for s in slices))
    missing = sorted(set(wanted) - set(stored))
    if missing:
        shown = ", ".join(f"{m:03d}" for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise SliceNotFoundError(
            str(store.series_dir(folder)), f"{len(missing)} slice(s) of {folder} not stored: {shown}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for first, last in series_runs(wanted):
        first_slice = store.read_hu_slice(folder, first)
        volume = np.empty((*first_slice.shape, last - first + 1), dtype=np.int16)
        for k, index in enumerate(range(first, last + 1)):
            hu = first_slice if k == 0 else store.read_hu_slice(folder, index)
            if hu.shape != first_slice.shape:
                raise CorruptSliceError(
                    str(store.slice_path(folder, index)),
                    f"shape {hu.shape} differs from slice {first:03d}'s {first_slice.shape}",
                )
            volume[:, :, k] = hu
        image = nib.Nifti1Image(volume, nifti_affine(spacing))
        image.header.set_xyzt_units("mm")
        target = out / volume_file_name(folder, first, last)
        # nibabel picks gzip from the suffix, so the temporary name must keep .nii.gz.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:-7]}.", suffix=".nii.gz", dir=out)
        os.close(fd)
        try:
            nib.save(image, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.info("wrote %s (%d slices)", target, last - first + 1)
        written.append(target)
    return written
