"""Render docs/images/synth_contact_sheet.png: confusers, lesion kinds, phases and kernels of the phantoms."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from app.deeplesion.render import OverlayMark, draw_overlays
from app.deeplesion.synth.acquisition import PHASES
from app.deeplesion.synth.generator import Observation, PatientPlan, plan_patient, render_slice
from app.deeplesion.synth.raster import Grid
from app.deeplesion.windowing import PRESETS, Window, apply_window
from app.review.vocabulary import palette_rgb

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"
TILE = 384


def _window(hu: np.ndarray, preset: str) -> np.ndarray:
    center, width = PRESETS[preset]
    return apply_window(np.rint(hu).astype(np.int16), Window(center, width))


def _key_slice(plan: PatientPlan, ob: Observation, seed: int, phase: str | None = None) -> np.ndarray:
    """The observation's key slice as generate_dataset writes it (in HU), or as it would look in `phase`."""
    study = plan.studies[ob.study - 1]
    phase = phase or study.phase
    shapes = tuple(
        o.lesion.at_scale(o.shape.semi_axes[0] / o.lesion.semi_axes[0], phase) if o.shape.kind else o.shape
        for o in study.observations
    )
    body = (study.phantom or plan.phantom).with_phase(phase)
    return render_slice(body, ob.series, shapes, ob.key_index, seed)


def _tile(gray: np.ndarray, caption: str, marks: list[OverlayMark], zoom: int = 0) -> Image.Image:
    """A captioned tile: the whole slice, or a `zoom`-pixel square around the first mark."""
    img = draw_overlays(gray, marks).convert("RGB")
    if zoom and marks:
        x1, y1, x2, y2 = marks[0].box or (0.0, 0.0, float(img.width), float(img.height))
        half = max(zoom, int(1.6 * max(x2 - x1, y2 - y1))) // 2
        cx = min(max(int((x1 + x2) / 2), half), img.width - half)
        cy = min(max(int((y1 + y2) / 2), half), img.height - half)
        img = img.crop((cx - half, cy - half, cx + half, cy + half))
    img = img.resize((TILE, TILE), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, TILE, 16), fill=(0, 0, 0))
    draw.text((4, 2), caption, fill=(255, 255, 120))
    return img


def _mark(ob: Observation) -> OverlayMark:
    long_mm = ob.diameters[0] * ob.series.spacing_mm
    return OverlayMark(ob.recist, ob.box, f"{long_mm:.0f} mm", palette_rgb("original"))


def _find(
    plans: list[PatientPlan], want: Callable[[PatientPlan, Observation], bool]
) -> tuple[PatientPlan, Observation]:
    """The largest annotated observation matching `want`."""
    found = [
        (o.diameters[0], p, o) for p in plans for st in p.studies for o in st.observations if o.annotated
    ]
    found = [f for f in found if want(f[1], f[2]) and not f[2].noisy]
    if not found:
        raise SystemExit("no example found; raise --patients")
    _, plan, ob = max(found, key=lambda t: t[0])
    return plan, ob


def main() -> None:
    """Plan patients, pick one example of each kind and save the contact sheet."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=20180705)
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plans = [
        plan_patient(p, seed=args.seed, size=512, split=2, max_studies=None)
        for p in range(1, args.patients + 1)
    ]

    def mm(o: Observation) -> float:
        return o.diameters[0] * o.series.spacing_mm

    # (caption, window, phase to show it in or None for the study's own, which lesions qualify)
    examples: list[tuple[str, str, str | None, Callable[[PatientPlan, Observation], bool]]] = [
        ("liver metastasis, portal venous", "soft_tissue", "portal venous",
         lambda p, o: o.lesion.kind == "metastasis" and mm(o) < 45),
        ("hypervascular liver lesion, arterial", "soft_tissue", "arterial",
         lambda p, o: o.lesion.kind == "hypervascular"),
        ("necrotic mass > 30 mm", "soft_tissue", None,
         lambda p, o: o.lesion.kind == "necrotic" and o.lesion.lesion_type != 5),
        ("conglomerate nodes", "soft_tissue", None, lambda p, o: o.lesion.kind == "conglomerate"),
        ("spiculated lung nodule", "lung", None, lambda p, o: o.lesion.kind == "spiculated"),
        ("ground-glass nodule", "lung", None, lambda p, o: o.lesion.kind == "ground glass"),
        ("lung mass > 30 mm", "lung", None, lambda p, o: o.lesion.lesion_type == 5 and mm(o) > 30),
        ("bone lesion (lytic / sclerotic)", "bone", None, lambda p, o: o.lesion.lesion_type == 1),
    ]  # fmt: skip
    tiles: list[Image.Image] = []
    for caption, preset, show_phase, want in examples:
        plan, ob = _find(plans, want)
        hu = _key_slice(plan, ob, args.seed, show_phase)
        tiles.append(_tile(_window(hu, preset), f"{caption} ({ob.file_name})", [_mark(ob)], zoom=260))
    # Confusers without lesions: one body at the kidneys, the pelvis and the groin, and all four phases.
    body = plans[0].phantom
    grid = Grid.centred(512, 0.78, (256.0, 240.0))
    rng_seed = [args.seed, 99]
    for z_ref, caption, kernel, art in (
        (360.0, "kidneys: vessels, ureters, bowel, nodes", "standard", 0.0),
        (450.0, "lower abdomen: bowel gas, faeces, contrast", "soft", 0.0),
        (590.0, "hips: iliac/femoral vessels, beam hardening", "standard", 1.0),
        (150.0, "chest: pulmonary vessels (lung window)", "sharp", 0.0),
    ):
        hu, _ = body.render(
            z_ref * body.z_scale,
            grid,
            rng=np.random.default_rng(rng_seed),
            noise_sd=14.0,
            kernel=kernel,
            artefacts=art,
        )
        tiles.append(_tile(_window(hu, "lung" if z_ref < 250 else "soft_tissue"), f"{caption}, {kernel}", []))
    for ph in PHASES:
        hu, _ = body.with_phase(ph).render(
            300.0 * body.z_scale, grid, rng=np.random.default_rng(rng_seed), noise_sd=12.0
        )
        tiles.append(_tile(_window(hu, "soft_tissue"), f"{ph} phase", []))
    cols = 4
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * TILE, rows * TILE))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * TILE, (k // cols) * TILE))
    sheet.save(args.out / "synth_contact_sheet.png", optimize=True)
    print(f"{len(tiles)} tiles in {args.out / 'synth_contact_sheet.png'}")


if __name__ == "__main__":
    main()
