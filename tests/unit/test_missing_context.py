"""missing_context names exactly the neighbours context_indices had to replace with a nearer stored slice."""

from __future__ import annotations

import pytest

from app.deeplesion.context import context_indices, missing_context


@pytest.mark.parametrize("dz", [1.0, 0.8, 2.0, 5.0, 0.625])
def test_missing_context_is_empty_when_every_slice_is_stored(dz: float) -> None:
    assert missing_context(50, dz, range(0, 101)) == []


@pytest.mark.parametrize("dz", [1.0, 0.8, 2.0, 0.625])
def test_each_wanted_neighbour_removed_is_named_and_the_context_changes(dz: float) -> None:
    full = list(range(0, 101))
    wanted = missing_context(50, dz, [50])  # with only the key stored, every neighbour is missing
    assert wanted and 50 not in wanted
    for index in wanted:
        stored = [i for i in full if i != index]
        assert missing_context(50, dz, stored) == [index]
        assert context_indices(50, dz, stored) != context_indices(50, dz, full)


def test_unknown_interval_wants_no_neighbours() -> None:
    assert missing_context(50, None, [50]) == [] == missing_context(50, float("nan"), [50])
