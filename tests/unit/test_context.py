"""The 3-slice context on hand-made stacks where every slice is a constant equal to its index."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from app.deeplesion.context import build_context, context_indices, store_context
from app.deeplesion.errors import CorruptSliceError, SliceNotFoundError
from app.deeplesion.store import SliceStore

SHAPE = (4, 6)


def constant_stack(stored: Sequence[int]) -> Callable[[int], np.ndarray | None]:
    """read_slice for a stack whose slice i is filled with the value i (None when not stored)."""
    present = set(stored)

    def read(index: int) -> np.ndarray | None:
        return np.full(SHAPE, index, dtype=np.int16) if index in present else None

    return read


def channel_values(stored: Sequence[int], key: int, dz: float | None, offset: float = 2.0) -> list[float]:
    """The constant value of each of the 3 channels."""
    out = build_context(constant_stack(stored), key, dz, stored, offset)
    assert out.shape == (3, *SHAPE)
    assert out.dtype == np.float32
    for c in range(3):
        assert np.all(out[c] == out[c, 0, 0])
    return [float(out[c, 0, 0]) for c in range(3)]


FULL = list(range(1, 61))


@pytest.mark.parametrize(
    ("dz", "expected"),
    [
        (1.0, [28.0, 30.0, 32.0]),  # d = 2 slices exactly
        (2.0, [29.0, 30.0, 31.0]),  # d = 1 slice
        (0.5, [26.0, 30.0, 34.0]),  # d = 4 slices
        (5.0, [29.6, 30.0, 30.4]),  # d = 0.4: 0.6 * key + 0.4 * neighbour
        (0.8, [27.5, 30.0, 32.5]),  # d = 2.5: half of slice 27, half of 28
        (1.25, [28.4, 30.0, 31.6]),  # d = 1.6
        (3.0, [29.333333, 30.0, 30.666667]),  # d = 2/3
        (22.5, [29.911111, 30.0, 30.088889]),  # the largest interval in the real file
    ],
)
def test_neighbours_sit_two_mm_away_with_linear_interpolation(dz: float, expected: list[float]) -> None:
    assert channel_values(FULL, 30, dz) == pytest.approx(expected, abs=1e-4)


def test_channel_order_is_above_key_below() -> None:
    above, key, below = channel_values(FULL, 30, 1.0)
    assert above < key < below


def test_offset_that_is_whole_within_rounding_is_not_interpolated() -> None:
    # 2 / 0.4 = 5.000000000000001 in floating point: exactly 5 slices, one slice per channel.
    channels = context_indices(30, 0.4, FULL)
    assert channels == (((25, 1.0),), ((30, 1.0),), ((35, 1.0),))


def test_weights_of_each_channel_sum_to_one() -> None:
    for dz in (0.3, 0.7, 1.1, 2.5, 5.0, 7.0):
        for channel in context_indices(30, dz, FULL):
            assert sum(w for _, w in channel) == pytest.approx(1.0)


def test_missing_neighbour_steps_back_toward_the_key_slice() -> None:
    stored = [s for s in FULL if s not in (28, 32, 31)]
    # dz = 1: above wants 28 (missing) -> 29; below wants 32 -> 31 missing too -> key 30.
    assert channel_values(stored, 30, 1.0) == [29.0, 30.0, 30.0]


def test_missing_far_slice_in_an_interpolation_falls_back_separately() -> None:
    stored = [s for s in FULL if s != 27]
    # dz = 0.8, d = 2.5: 0.5 * slice 27 (missing -> 28) + 0.5 * slice 28.
    assert channel_values(stored, 30, 0.8) == pytest.approx([28.0, 30.0, 32.5])
    assert context_indices(30, 0.8, stored)[0] == ((28, 1.0),)


def test_key_slice_at_the_edge_of_the_stored_range_repeats_itself() -> None:
    stored = list(range(10, 21))
    assert channel_values(stored, 10, 1.0) == [10.0, 10.0, 12.0]
    assert channel_values(stored, 20, 5.0) == pytest.approx([19.6, 20.0, 20.0])


def test_isolated_key_slice_gives_three_copies() -> None:
    assert channel_values([7], 7, 1.0) == [7.0, 7.0, 7.0]


@pytest.mark.parametrize("dz", [None, 0.0, -1.0, math.nan, math.inf])
def test_unknown_slice_interval_repeats_the_key_slice(dz: float | None) -> None:
    assert channel_values(FULL, 30, dz) == [30.0, 30.0, 30.0]


def test_other_offsets_are_honoured() -> None:
    assert channel_values(FULL, 30, 1.0, offset=5.0) == [25.0, 30.0, 35.0]


def test_key_slice_not_stored_is_an_error() -> None:
    with pytest.raises(SliceNotFoundError, match="key slice 030"):
        build_context(constant_stack(FULL), 30, 1.0, [s for s in FULL if s != 30])


def test_unreadable_neighbour_falls_back_to_the_key_slice() -> None:
    def read(index: int) -> np.ndarray | None:
        return None if index == 28 else np.full(SHAPE, index, np.int16)

    out = build_context(read, 30, 1.0, FULL)
    assert [float(out[c, 0, 0]) for c in range(3)] == [30.0, 30.0, 32.0]


def test_neighbour_of_another_size_is_corrupt() -> None:
    def read(index: int) -> np.ndarray:
        return np.zeros((8, 8) if index == 28 else SHAPE, np.int16)

    with pytest.raises(CorruptSliceError, match="differs from the key slice"):
        build_context(read, 30, 1.0, FULL)


def test_pixel_structure_is_kept_per_channel() -> None:
    rng = np.random.default_rng(3)
    slices = {i: rng.integers(-1000, 1000, SHAPE).astype(np.int16) for i in FULL}
    out = build_context(slices.get, 30, 5.0, FULL)
    np.testing.assert_allclose(out[0], 0.4 * slices[29] + 0.6 * slices[30], atol=1e-3)
    np.testing.assert_array_equal(out[1], slices[30])
    np.testing.assert_allclose(out[2], 0.6 * slices[30] + 0.4 * slices[31], atol=1e-3)


def test_store_context_reads_hu_from_png_slices(tmp_path: Path) -> None:
    store = SliceStore(tmp_path)
    for i in (8, 9, 10, 11):  # slice 12 is not stored
        store.write_hu(f"000001_01_01_{i:03d}.png", np.full(SHAPE, i * 100 - 1000, np.int16))
    out = store_context(store, "000001_01_01_010.png", 1.0)
    assert [float(out[c, 0, 0]) for c in range(3)] == [-200.0, 0.0, 100.0]
    with pytest.raises(SliceNotFoundError):
        store_context(store, "000001_01_01_012.png", 1.0)
