"""synth --context-mm: fewer slices stored around each key slice, the CSV's Slice_range saying so."""

from __future__ import annotations

import pytest

from app.deeplesion.synth.generator import CONTEXT_MM, plan_dataset


def _ranges(context_mm: float) -> dict[str, tuple[tuple[int, int], float]]:
    plan = plan_dataset(patients=6, seed=4, context_mm=context_mm)
    return {r.file_name: (r.slice_range, r.spacing_mm[2]) for r in plan.records()}


def test_slice_ranges_shrink_to_the_context_and_keep_the_key_slice_inside() -> None:
    wide, narrow = _ranges(CONTEXT_MM), _ranges(5.0)
    assert wide.keys() == narrow.keys()  # the same lesions and key slices
    for name, ((lo, hi), dz) in narrow.items():
        key = int(name.rsplit("_", 1)[1].split(".")[0])
        (wlo, whi), _ = wide[name]
        assert wlo <= lo <= key <= hi <= whi
        half = max(1, round(5.0 / dz))
        assert (key - lo <= half) and (hi - key <= half)
        # Whole volume inside: exactly +-half slices (the 1 mm series keep 11 slices, not 61).
        if wlo < key - half and whi > key + half:
            assert (lo, hi) == (key - half, key + half)
    assert sum(h - lo for (lo, h), _ in narrow.values()) < sum(h - lo for (lo, h), _ in wide.values()) / 2


def test_the_default_is_deeplesion_30_mm_and_odd_values_are_refused() -> None:
    default = {r.file_name: r.slice_range for r in plan_dataset(patients=6, seed=4).records()}
    assert default == {k: rng for k, (rng, _) in _ranges(30.0).items()}
    with pytest.raises(ValueError, match="context_mm"):
        plan_dataset(patients=1, seed=1, context_mm=0.5)
    with pytest.raises(ValueError, match="context_mm"):
        plan_dataset(patients=1, seed=1, context_mm=45.0)
