"""Render example synthetic slices into docs/images/synth_*.png (chest, abdomen, liver lesion, pelvis)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from app.deeplesion.render import OverlayMark, draw_overlays
from app.deeplesion.synth.generator import Observation, PatientPlan, plan_patient
from app.deeplesion.windowing import PRESETS, Window, apply_window
from app.review.vocabulary import palette_rgb

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def _slice(plan: PatientPlan, ob: Observation | None, z_ref: float, preset: str, seed: int) -> np.ndarray:
    """A windowed 8-bit slice of the patient's first study at reference height z_ref (or at a key slice)."""
    study = plan.studies[0] if ob is None else plan.studies[ob.study - 1]
    series = study.series[0] if ob is None else ob.series
    index = series.nearest(z_ref * plan.phantom.z_scale) if ob is None else ob.key_index
    # The same noise as generate_dataset would write for this slice.
    rng = np.random.default_rng([seed, plan.index, study.index, series.series_id, index])
    shapes = [o.shape for o in study.observations]
    hu, _ = plan.phantom.render(series.z_of(index), series.grid, shapes, rng=rng, noise_sd=series.noise_sd)
    center, width = PRESETS[preset]
    return apply_window(np.rint(hu).astype(np.int16), Window(center, width))


def main() -> None:
    """Find a patient with an annotated liver lesion and save the four example images."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=20180705)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # The patient with the largest annotated liver lesion among the first 40 makes the clearest example.
    found: list[tuple[float, PatientPlan, Observation]] = []
    for pid in range(1, 41):
        plan = plan_patient(pid, seed=args.seed, size=512, split=2, max_studies=None)
        found += [
            (o.shape.semi_axes[0], plan, o)
            for st in plan.studies
            for o in st.observations
            if o.annotated and o.lesion.lesion_type == 4
        ]
    if not found:
        raise SystemExit("no patient with a liver lesion found")
    _, plan, ob = max(found, key=lambda t: t[0])
    pid = plan.index
    draw_overlays(_slice(plan, None, 150.0, "lung", args.seed), []).save(
        args.out / "synth_chest_lung.png", optimize=True
    )
    draw_overlays(_slice(plan, None, 335.0, "soft_tissue", args.seed), []).save(
        args.out / "synth_abdomen_soft.png", optimize=True
    )
    long_mm = ob.diameters[0] * ob.series.spacing_mm
    short_mm = ob.diameters[1] * ob.series.spacing_mm
    mark = OverlayMark(ob.recist, ob.box, f"{long_mm:.1f} x {short_mm:.1f} mm", palette_rgb("original"))
    draw_overlays(_slice(plan, ob, 0.0, "soft_tissue", args.seed), [mark]).save(
        args.out / "synth_liver_lesion_recist.png", optimize=True
    )
    draw_overlays(_slice(plan, None, 595.0, "soft_tissue", args.seed), []).save(
        args.out / "synth_pelvis_soft.png", optimize=True
    )
    print(f"patient {pid}: liver lesion key slice {ob.file_name}; images in {args.out}")


if __name__ == "__main__":
    main()
