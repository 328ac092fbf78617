"""The 3-slice context the published DeepLesion detectors (3DCE, MULAN) feed their networks."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from app.deeplesion.errors import CorruptSliceError, SliceNotFoundError

if TYPE_CHECKING:
    from app.deeplesion.store import SliceStore

logger = logging.getLogger(__name__)

DEFAULT_OFFSET_MM = 2.0
# 2 / dz in floating point is rarely an exact integer (2 / 0.4 = 5.000000000000001); within this
# tolerance the offset counts as whole slices and no interpolation is done.
_WHOLE_TOLERANCE = 1e-6

# One output channel: the slices it blends and their weights (summing to 1).
Channel = tuple[tuple[int, float], ...]


def _nearest_stored(key_index: int, delta: int, stored: set[int]) -> int:
    """Slice key+delta, or stepping back toward the key until a stored one is found (3DCE get_slice_name)."""
    while delta != 0 and (key_index + delta) not in stored:
        delta -= 1 if delta > 0 else -1
    return key_index + delta


def _usable_interval(slice_interval_mm: float | None) -> float | None:
    """The slice interval when it is a positive finite number, else None (unknown)."""
    if slice_interval_mm is None:
        return None
    try:
        dz = float(slice_interval_mm)
    except (TypeError, ValueError):
        return None
    return dz if math.isfinite(dz) and dz > 0 else None


def _merge(pairs: Sequence[tuple[int, float]]) -> Channel:
    """Combine weights of repeated slices and drop zero weights, keeping slice order."""
    weights: dict[int, float] = {}
    for index, weight in pairs:
        if weight > 0:
            weights[index] = weights.get(index, 0.0) + weight
    return tuple(sorted(weights.items()))


def context_indices(
    key_index: int,
    slice_interval_mm: float | None,
    stored: Sequence[int],
    offset_mm: float = DEFAULT_OFFSET_MM,
) -> tuple[Channel, Channel, Channel]:
    """Which slices (and weights) make the 3 channels [key - d, key, key + d], d = offset_mm / dz slices."""
    stored_set = set(int(s) for s in stored)
    if key_index not in stored_set:
        raise SliceNotFoundError(f"slice {key_index:03d}", f"key slice {key_index:03d} is not stored")
    key: Channel = ((key_index, 1.0),)
    dz = _usable_interval(slice_interval_mm)
    if dz is None or not (math.isfinite(offset_mm) and offset_mm > 0):
        return (key, key, key)
    rel = offset_mm / dz
    if abs(rel - round(rel)) < _WHOLE_TOLERANCE:
        step = int(round(rel))
        above = _merge([(_nearest_stored(key_index, -step, stored_set), 1.0)])
        below = _merge([(_nearest_stored(key_index, step, stored_set), 1.0)])
        return (above, key, below)
    # Linear interpolation between the two nearest slices, weighted as in 3DCE: frac on the far one.
    frac = rel - math.floor(rel)
    far, near = math.ceil(rel), math.floor(rel)
    above = _merge(
        [
            (_nearest_stored(key_index, -far, stored_set), frac),
            (_nearest_stored(key_index, -near, stored_set), 1.0 - frac),
        ]
    )
    below = _merge(
        [
            (_nearest_stored(key_index, far, stored_set), frac),
            (_nearest_stored(key_index, near, stored_set), 1.0 - frac),
        ]
    )
    return (above, key, below)


def missing_context(
    key_index: int,
    slice_interval_mm: float | None,
    stored: Sequence[int],
    offset_mm: float = DEFAULT_OFFSET_MM,
) -> list[int]:
    """The neighbours context_indices wants that are not stored: for each, a nearer slice stands in."""
    dz = _usable_interval(slice_interval_mm)
    if dz is None or not (math.isfinite(offset_mm) and offset_mm > 0):
        return []
    rel = offset_mm / dz
    whole = abs(rel - round(rel)) < _WHOLE_TOLERANCE
    steps = {int(round(rel))} if whole else {math.floor(rel), math.ceil(rel)}
    stored_set = set(int(s) for s in stored)
    wanted = {key_index + sign * step for step in steps if step > 0 for sign in (-1, 1)}
    return sorted(i for i in wanted if i not in stored_set)


def build_context(
    read_slice: Callable[[int], npt.NDArray[np.generic] | None],
    key_index: int,
    slice_interval_mm: float | None,
    stored: Sequence[int],
    offset_mm: float = DEFAULT_OFFSET_MM,
) -> npt.NDArray[np.float32]:
    """A float32 (3, H, W) stack [slice above, key, slice below] in the units read_slice returns (HU)."""
    channels = context_indices(key_index, slice_interval_mm, stored, offset_mm)
    cache: dict[int, npt.NDArray[np.float32]] = {}

    def load(index: int) -> npt.NDArray[np.float32] | None:
        if index not in cache:
            arr = read_slice(index)
            if arr is None:
                return None
            cache[index] = np.asarray(arr, dtype=np.float32)
        return cache[index]

    key = load(key_index)
    if key is None:
        raise SliceNotFoundError(f"slice {key_index:03d}", f"key slice {key_index:03d} could not be read")
    if key.ndim != 2:
        raise CorruptSliceError(f"slice {key_index:03d}", f"expected a 2-D slice, got shape {key.shape}")
    out = np.empty((3, *key.shape), dtype=np.float32)
    for c, channel in enumerate(channels):
        acc = out[c]
        acc.fill(0.0)
        for index, weight in channel:
            arr = load(index)
            if arr is None:
                # Listed as stored but unreadable now (e.g. deleted meanwhile): fall back to the key slice.
                logger.warning("context slice %03d unreadable, using key slice %03d", index, key_index)
                arr = key
            if arr.shape != key.shape:
                raise CorruptSliceError(
                    f"slice {index:03d}", f"shape {arr.shape} differs from the key slice's {key.shape}"
                )
            if weight == 1.0:
                acc[...] = arr
            else:
                acc += np.float32(weight) * arr
    return out


def store_context(
    store: SliceStore,
    file_name: str,
    slice_interval_mm: float | None,
    offset_mm: float = DEFAULT_OFFSET_MM,
) -> npt.NDArray[np.float32]:
    """build_context for a key slice of a SliceStore, in HU."""
    from app.deeplesion.store import parse_file_name

    series, key_index = parse_file_name(file_name)
    stored = store.stored_slices(series)

    def read(index: int) -> npt.NDArray[np.int16] | None:
        try:
            return store.read_hu_slice(series, index)
        except SliceNotFoundError:
            return None

    if key_index not in stored:
        raise SliceNotFoundError(str(store.path_for(file_name)))
    return build_context(read, key_index, slice_interval_mm, stored, offset_mm)
