"""RECIST proposals vs the phantoms' true RECIST: long-axis error in mm against box-based estimates."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, record

TARGET_MM = 2.0  # the target; MULAN reports 1.78 mm on real CT
HEADING = "## RECIST proposals (bench/bench_recist.py, issue 15)"


def truth_items(root: Path) -> list[dict[str, Any]]:
    """Every visible lesion on a stored key slice: file name, true RECIST, pixel spacing."""
    truth = json.loads((root / "synth_truth.json").read_text())
    spacing = {
        s["series_id"]: s["pixel_spacing_mm"]
        for p in truth["patients"]
        for st in p["studies"]
        for s in st["series"]
    }
    return [
        {"file_name": it["file_name"], "recist": it["recist"], "mm": spacing[it["series_id"]]}
        for les in truth["lesions"]
        for it in les["studies"]
        if it["recist"] and it["key_slice_stored"]
    ]


def long_errors(items: list[dict[str, Any]], boxes: list[list[float]], store: Any) -> dict[str, list[float]]:
    """Absolute long-axis errors (mm) of the proposal and of the two box estimates, per item."""
    from app.deeplesion.geometry import box_diameters, recist_diameters
    from app.deeplesion.schema import BOX_PADDING_PX
    from app.detection.recist import propose_recist

    out: dict[str, list[float]] = {"proposal": [], "box side": [], "box diagonal": []}
    for it, box in zip(items, boxes, strict=True):
        true_long = recist_diameters(it["recist"])[0]
        hu = store.read_hu(it["file_name"])
        prop = recist_diameters(propose_recist(hu, box))[0]
        w = max(0.0, box[2] - box[0] - 2 * BOX_PADDING_PX)
        h = max(0.0, box[3] - box[1] - 2 * BOX_PADDING_PX)
        out["proposal"].append(abs(prop - true_long) * it["mm"])
        out["box side"].append(abs(box_diameters(box)[0] - true_long) * it["mm"])
        out["box diagonal"].append(abs(float(np.hypot(w, h)) - true_long) * it["mm"])
    return out


def detector_boxes(
    root: Path, items: list[dict[str, Any]], model: Path
) -> tuple[list[int], list[list[float]]]:
    """Per item, the best detector box hitting it (IoU >= 0.5); items that no box hits are left out."""
    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.geometry import box_from_recist, iou_matrix
    from app.deeplesion.store import SliceStore
    from app.detection.runtime import Detector

    det = Detector.load(model, device="cpu")
    spacing = {r.file_name: r.spacing_mm for r in read_dl_info(root / "DL_info.csv")}
    store = SliceStore(root)
    cache: dict[str, list[Any]] = {}
    keep, boxes = [], []
    for i, it in enumerate(items):
        name = it["file_name"]
        if name not in cache:
            sp = spacing.get(name, (it["mm"], it["mm"], 0.0))
            cache[name] = det.predict(name, store, spacing_mm=sp, threshold=0.05)
        dets = cache[name]
        if not dets:
            continue
        ious = iou_matrix([d.box for d in dets], [box_from_recist(it["recist"])])[:, 0]
        hit = [j for j in range(len(dets)) if ious[j] >= 0.5]
        if hit:
            keep.append(i)
            boxes.append(list(dets[hit[0]].box))
    return keep, boxes


def run(patients: int, seed: int, model: Path | None) -> dict[str, Any]:
    """Generate phantoms, propose RECIST on true boxes (and detector hits), and time the proposals."""
    from app.deeplesion.geometry import box_from_recist
    from app.deeplesion.store import SliceStore
    from app.deeplesion.synth import generate_dataset
    from app.detection.recist import propose_recist

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_dataset(root, patients=patients, seed=seed, progress=False)
        store = SliceStore(root)
        items = truth_items(root)
        true_boxes = [list(box_from_recist(it["recist"])) for it in items]
        res: dict[str, Any] = {"lesions": len(items), "true_box": long_errors(items, true_boxes, store)}
        times = []
        for it, box in zip(items, true_boxes, strict=True):
            hu = store.read_hu(it["file_name"])
            t0 = time.perf_counter()
            propose_recist(hu, box)
            times.append((time.perf_counter() - t0) * 1e3)
        res["ms_p50"], res["ms_max"] = statistics.median(times), max(times)
        if model is not None and model.is_file():
            keep, boxes = detector_boxes(root, items, model)
            res["detected"] = len(keep)
            res["detector_box"] = long_errors([items[i] for i in keep], boxes, store)
    return res


def _line(name: str, errs: dict[str, list[float]]) -> str:
    m = {k: float(np.mean(v)) if v else float("nan") for k, v in errs.items()}
    med = float(np.median(errs["proposal"])) if errs["proposal"] else float("nan")
    return (
        f"{name}: proposal mean {m['proposal']:.2f} mm (median {med:.2f}); box side {m['box side']:.2f} mm, "
        f"box diagonal {m['box diagonal']:.2f} mm -> ratio {m['box side'] / m['proposal']:.2f}x vs box side"
    )


def main(argv: list[str]) -> int:
    """Run the benchmark; exit 1 when the proposal's mean long-axis error on detector boxes misses 2 mm."""
    from app.config import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m bench.bench_recist", description=__doc__)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1515)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--no-record", action="store_true", help="Do not append to docs/performance.md.")
    args = parser.parse_args(argv)
    res = run(args.patients, args.seed, args.model)
    lines = [
        f"{res['lesions']} visible lesions on stored key slices (seed {args.seed}, {args.patients} patients)"
    ]
    lines.append(_line("true boxes", res["true_box"]))
    if "detector_box" in res:
        lines.append(_line(f"detector boxes hitting a lesion ({res['detected']})", res["detector_box"]))
    lines.append(f"proposal time per box: p50 {res['ms_p50']:.1f} ms, max {res['ms_max']:.1f} ms")
    print("\n".join(lines))
    errs = res.get("detector_box", res["true_box"])["proposal"]
    if not args.no_record:
        intro = (
            "Long-axis error (mm) of `app.detection.recist.propose_recist` against the phantoms' true RECIST "
            "(synth_truth.json), on the true boxes and on the shipped detector's boxes that hit a lesion "
            "(IoU >= 0.5, best score), against two box estimates in the same run (the unpadded box's longer "
            "side, and its diagonal). Target <= 2 mm (MULAN: 1.78 mm on real CT).\n"
        )
        record(
            HEADING,
            intro,
            f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}:\n\n"
            + "\n".join(f"- {x}" for x in lines)
            + "\n",
        )
    return 0 if errs and float(np.mean(errs)) <= TARGET_MM else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
