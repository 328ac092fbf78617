"""Follow-up matching on the synthetic follow-up set: link precision/recall, centre error, time for 32,735."""

# Baseline measured in the same run: greedy nearest normalised location between consecutive studies, no
# registration, size or gating (what one gets from DL_info.csv column 9 alone). Targets: precision and
# recall >= 95% and all 32,735 lesions matched in <= 10 s. The data is SYNTHETIC (known identities).

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from app.deeplesion.followup import LesionObs, MatchResult, match_all, patch_descriptor, scan_position
from app.deeplesion.schema import LesionRecord
from app.deeplesion.synth.followup import plan_followup
from bench.common import machine, record

TARGET_PR = 0.95
TARGET_SECONDS = 10.0


def observations(records: Sequence[LesionRecord]) -> list[LesionObs]:
    """One LesionObs per CSV row, keyed by row number."""
    return [
        LesionObs(
            key=i,
            patient=r.patient_index,
            study=r.study_index,
            norm=r.normalized_location,
            scan_mm=scan_position(r.box_px, r.spacing_mm, r.key_slice_index),
            long_mm=r.long_axis_mm,
            lesion_type=r.coarse_lesion_type,
        )
        for i, r in enumerate(records)
    ]


def greedy_baseline(obs: Sequence[LesionObs]) -> set[tuple[int, int]]:
    """Links by nearest normalised location, consecutive studies only, each lesion used once."""
    by: dict[tuple[int, int], list[LesionObs]] = {}
    for o in obs:
        by.setdefault((o.patient, o.study), []).append(o)
    links: set[tuple[int, int]] = set()
    for (p, s), later in by.items():
        earlier = by.get((p, s - 1))
        if not earlier:
            continue
        free = list(earlier)
        for o in later:
            if not free:
                break
            d = [
                sum(
                    (x - y) ** 2
                    for x, y in zip(o.norm, e.norm, strict=True)
                    if x is not None and y is not None
                )
                for e in free
            ]
            e = free.pop(int(np.argmin(d)))
            links.add((e.key, o.key))
    return links


def true_links(row_tracks: Sequence[str], obs: Sequence[LesionObs]) -> set[tuple[int, int]]:
    """Consecutive members of each true track."""
    members: dict[str, list[LesionObs]] = {}
    for o in obs:
        members.setdefault(row_tracks[o.key], []).append(o)
    out: set[tuple[int, int]] = set()
    for ms in members.values():
        ms.sort(key=lambda o: o.study)
        out.update((a.key, b.key) for a, b in zip(ms, ms[1:], strict=False))
    return out


def same_track_pairs(row_tracks: Sequence[str], track_of: dict[int, int]) -> tuple[float, float]:
    """Pairwise precision and recall of the tracks (every pair of rows in one track, across studies)."""
    from collections import Counter

    pred = Counter(track_of.values())
    true = Counter(row_tracks)
    both = Counter((row_tracks[k], t) for k, t in track_of.items())
    tp = sum(n * (n - 1) / 2 for n in both.values())
    pp = sum(n * (n - 1) / 2 for n in pred.values())
    tt = sum(n * (n - 1) / 2 for n in true.values())
    return tp / pp if pp else 1.0, tp / tt if tt else 1.0


def scores(pred: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float]:
    """Precision and recall of links."""
    tp = len(pred & truth)
    return tp / len(pred) if pred else 1.0, tp / len(truth) if truth else 1.0


def centre_errors(
    res: MatchResult, truth_rows: Sequence[dict[str, Any]], tracks: Sequence[str]
) -> np.ndarray:
    """mm from b's true centre to a's true centre moved by the estimated shift, over right links."""
    errs = []
    for link in res.links:
        if tracks[link.a] != tracks[link.b]:
            continue
        a = np.asarray(truth_rows[link.a]["scan_mm"], dtype=float)
        b = np.asarray(truth_rows[link.b]["scan_mm"], dtype=float)
        errs.append(float(np.linalg.norm(a + np.asarray(link.shift_mm) - b)))
    return np.asarray(errs)


def image_set(patients: int, seed: int) -> dict[str, Any]:
    """The image generator's follow-up mode: links with and without the patch descriptor, centre error."""
    from app.deeplesion.synth.generator import plan_dataset

    plan = plan_dataset(patients=patients, seed=seed, followup=True)
    records = plan.records()
    identity = [f"{p.index}-{ob.lesion.index}" for p, ob in plan.rows]
    rows_truth = []
    descriptors: list[tuple[float, ...]] = []
    for (patient, ob), rec in zip(plan.rows, records, strict=True):
        s = ob.series
        col, row = s.grid.to_px(ob.shape.centre[0], ob.shape.centre[1])
        rows_truth.append(
            {"scan_mm": [col * s.spacing_mm, row * s.spacing_mm, ob.shape.centre[2] - s.z_first]}
        )
        study = next(st for st in patient.studies if st.index == ob.study)
        shapes = tuple(o.shape for o in study.observations)
        hu, _ = (study.phantom or patient.phantom).render(
            s.z_of(ob.key_index),
            s.grid,
            shapes,
            rng=np.random.default_rng([seed, len(descriptors)]),
            noise_sd=s.noise_sd,
        )
        x1, y1, x2, y2 = (int(round(v)) for v in rec.box_px)
        descriptors.append(
            patch_descriptor(np.asarray(hu, dtype=float)[max(0, y1) : y2 + 1, max(0, x1) : x2 + 1])
        )
    obs = observations(records)
    truth = true_links(identity, obs)
    out: dict[str, Any] = {"lesions": len(obs), "patients": patients, "true_links": len(truth)}
    for name, o in (
        ("metadata", obs),
        ("appearance", [replace(x, descriptor=d) for x, d in zip(obs, descriptors, strict=True)]),
    ):
        res = match_all(o)
        p, r = scores({(lk.a, lk.b) for lk in res.links}, truth)
        err = centre_errors(res, rows_truth, identity)
        out[name] = {
            "precision": p,
            "recall": r,
            "centre_mean_mm": float(err.mean()) if err.size else float("nan"),
        }
    return out


def main(argv: list[str]) -> int:
    """Generate, match, score, print; record in docs/performance.md with --record. 0 when targets are met."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lesions", type=int, default=32735)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true")
    parser.add_argument(
        "--images", type=int, default=0, help="Also the image follow-up mode with N patients."
    )
    args = parser.parse_args(argv)
    plan = plan_followup(args.lesions, args.seed)
    obs = observations(plan.records)
    truth = true_links(plan.row_tracks, obs)
    t0 = time.perf_counter()
    base = greedy_baseline(obs)
    base_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = match_all(obs)
    match_s = time.perf_counter() - t0
    links = {(lk.a, lk.b) for lk in res.links}
    p, r = scores(links, truth)
    bp, br = scores(base, truth)
    tp, tr = same_track_pairs(plan.row_tracks, res.track_of)
    err = centre_errors(res, plan.truth["rows"], plan.row_tracks)
    ok = p >= TARGET_PR and r >= TARGET_PR and match_s <= TARGET_SECONDS
    patients = len({o.patient for o in obs})
    studies = len({(o.patient, o.study) for o in obs})
    print(
        f"SYNTHETIC follow-up set: {len(obs)} lesions, {patients} patients, {studies} studies, "
        f"{len(truth)} true links"
    )
    print(
        f"matching: {match_s:.2f} s, links precision {p:.4f} recall {r:.4f}; "
        f"track pairs precision {tp:.4f} recall {tr:.4f}"
    )
    print(
        f"centre error of right links: mean {err.mean():.2f} mm, median {np.median(err):.2f} mm, "
        f"p95 {np.percentile(err, 95):.2f} mm"
    )
    print(
        f"baseline (greedy nearest normalised location): {base_s:.2f} s, precision {bp:.4f} recall {br:.4f}"
    )
    print(f"ratio: link errors (1 - F1) baseline / ours = {_err(bp, br) / max(_err(p, r), 1e-9):.1f}x")
    print(f"machine: {machine()}  result: {'PASS' if ok else 'FAIL'}")
    if args.images:
        img = image_set(args.images, args.seed)
        m, a = img["metadata"], img["appearance"]
        print(
            f"image follow-up mode: {img['lesions']} lesions of {img['patients']} patients, "
            f"{img['true_links']} true links; metadata only: precision {m['precision']:.4f} recall "
            f"{m['recall']:.4f} centre {m['centre_mean_mm']:.2f} mm; with the patch descriptor: precision "
            f"{a['precision']:.4f} recall {a['recall']:.4f} centre {a['centre_mean_mm']:.2f} mm"
        )
    if args.record:
        record(
            "## Follow-up matching",
            "`python -m bench.bench_followup --record` on the SYNTHETIC follow-up set "
            "(app/deeplesion/synth/followup.py, metadata only, identities known); not patient data. "
            "Baseline = greedy nearest normalised location between consecutive studies. "
            "Centre error = distance between a lesion's true "
            "centre and the earlier lesion's true centre carried by the estimated study shift, over right "
            "links.\n\n"
            "| date | machine | lesions | seconds | precision | recall | centre error mean / p95 mm "
            "| baseline precision / recall | result |\n|---|---|---|---|---|---|---|---|---|\n",
            f"| {datetime.date.today()} | {machine()} | {len(obs)} | {match_s:.2f} | {p:.4f} | {r:.4f} "
            f"| {err.mean():.2f} / {np.percentile(err, 95):.2f} | {bp:.4f} / {br:.4f} "
            f"| {'PASS' if ok else 'FAIL'} |",
        )
    return 0 if ok else 1


def _err(p: float, r: float) -> float:
    return 1.0 - (2 * p * r / (p + r) if p + r else 0.0)


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
