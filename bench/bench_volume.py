"""Volume vs key-slice screening on synthetic data: left-out lesions found at equal queue precision."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import imported_database, machine, record

TARGET_RATIO = 2.0
# The key-slice screen's default score threshold (lesion-review screen): its queue's precision there is
# the precision both queues are compared at.
KEY_THRESHOLD = 0.3
# Boxes are stored down to this score so that every threshold above it can be read off one run.
STORE_THRESHOLD = 0.05
HEADING = "## Volume screening vs key-slice screening (bench/bench_volume.py, #16)"
# Runs on the sub-volume model of missed lesions (--missed-off-key) form their own series.
MISSED_HEADING = (
    "## Volume screening on the sub-volume model of missed lesions"
    " (bench/bench_volume.py --missed-off-key, #16)"
)
INTRO = (
    "The shipped detector on every stored slice of each synthetic sub-volume, boxes joined into 3D\n"
    "candidates (app.detection.volume), against the same detector on the key slices only (its boxes on the\n"
    "key slices of the same run). Both queues hold what matches no DL_info.csv lesion; an item finds a\n"
    "left-out lesion (synth_truth.json, `in_csv` false, shown on a stored slice) when one of its boxes has\n"
    "IoU >= 0.3 with the lesion's cut on that slice. Compared at the key-slice queue's precision at its\n"
    "default threshold 0.3.\n"
)


def heading(missed_off_key: float | None) -> str:
    """The docs/performance.md section a run's figures belong to: one per model of missed lesions."""
    return HEADING if missed_off_key is None else MISSED_HEADING


def compare(
    *,
    database_url: str,
    data_dir: Path,
    detector: Any,
    store_threshold: float = STORE_THRESHOLD,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Screen every stored slice once; derive both queues from the same detections and compare them.

    `cache` keeps the detector's boxes of every slice (JSON): written after a run, replayed when present,
    so the joining and ranking rules can be compared without running the detector again.
    """
    from sqlalchemy import select

    from app.db.models import KeySlice, Lesion, Series, VolumeCandidate
    from app.db.session import make_engine, make_session_factory
    from app.deeplesion.geometry import matches_any
    from app.deeplesion.store import SliceStore
    from app.detection.batch import SliceResult, SliceTask, detect_locally
    from app.detection.decode import Detection
    from app.detection.volume import SliceBox
    from app.detection.volume_truth import QueueEntry, load_left_out, queue_curve
    from app.review.volume import screen_volumes

    seen: dict[str, SliceResult] = {}
    local = detect_locally(detector, SliceStore(data_dir), store_threshold)
    replay = json.loads(cache.read_text()) if cache is not None and cache.exists() else None
    if replay is not None:

        def local(tasks: Sequence[SliceTask]) -> Iterator[SliceResult]:
            for t in tasks:
                got = replay.get(t.file_name)
                dets = tuple(Detection(tuple(d[:4]), d[4]) for d in got or ())  # type: ignore[arg-type]
                yield SliceResult(t, dets, None if got is not None else "not in the cache")

    def recording(tasks: Sequence[SliceTask]) -> Iterator[SliceResult]:
        for res in local(tasks):
            seen[res.task.file_name] = res
            yield res

    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    started = time.perf_counter()
    summary = screen_volumes(
        session_factory=factory,
        data_dir=data_dir,
        detector=detector,
        runner=recording,
        threshold=store_threshold,
    )
    seconds = time.perf_counter() - started
    if cache is not None and replay is None:
        cache.write_text(
            json.dumps(
                {f: [[*d.box, d.score] for d in r.detections] for f, r in seen.items() if r.error is None}
            )
        )
    with factory() as s:
        folders = {sid: f for sid, f in s.execute(select(Series.id, Series.folder))}
        volume = [
            QueueEntry(
                folders[c.series_id],
                tuple(SliceBox(int(v[0]), (v[1], v[2], v[3], v[4]), float(v[5])) for v in c.slices),
                c.score,
            )
            for c in s.scalars(select(VolumeCandidate).where(VolumeCandidate.matches_annotation.is_(False)))
        ]
        keys = s.execute(select(KeySlice.id, KeySlice.file_name, KeySlice.key_slice_index)).all()
        marked: dict[int, list[list[float]]] = {}
        # The key-slice screen's rule (app.review.screening.missed_queue): lesions on the key slice itself.
        for ks_id, box in s.execute(
            select(Lesion.key_slice_id, Lesion.box)
            .join(KeySlice, KeySlice.id == Lesion.key_slice_id)
            .where(Lesion.is_current, Lesion.slice_index == KeySlice.key_slice_index)
        ):
            marked.setdefault(ks_id, []).append(box)
    engine.dispose()
    key_queue = []
    for ks_id, file_name, index in keys:
        res = seen.get(file_name)
        for d in res.detections if res is not None else ():
            if not matches_any(d.box, marked.get(ks_id, ())):
                key_queue.append(
                    QueueEntry(file_name.rpartition("_")[0], (SliceBox(int(index), d.box, d.score),), d.score)
                )
    left_out = load_left_out(data_dir) or []
    truth = Path(data_dir) / "synth_truth.json"
    generator = json.loads(truth.read_text()).get("generator", {}) if truth.exists() else {}
    kc, vc = queue_curve(key_queue, left_out), queue_curve(volume, left_out)
    at_default = [p for p in kc.points if p["threshold"] >= KEY_THRESHOLD]
    key_point = at_default[-1] if at_default else {"precision": None, "found": 0, "queue_length": 0}
    precision = key_point["precision"] if key_point["precision"] is not None else 1.0
    vol_point = vc.best_at_precision(precision)
    ratio = vol_point["found"] / key_point["found"] if key_point["found"] else float("inf")
    levels = (0.1, 0.2, 0.3, 0.5)
    return {
        # The generator's model of missed lesions (None: the default, key-slice model).
        "missed_off_key": generator.get("missed_off_key"),
        "left_out_lesions": len(left_out),
        "on_key_slices": sum(1 for lesion in left_out if lesion.on_key_slices),
        "slices": summary["slices"],
        "series": summary["series"],
        "seconds": round(seconds, 1),
        "key_slice": {**key_point},
        "volume": {**vol_point},
        "ratio": ratio,
        # Were the volume queue to find every left-out lesion at that precision: the most this data allows.
        "ratio_ceiling": len(left_out) / key_point["found"] if key_point["found"] else float("inf"),
        "found_at_precision": {
            str(p): {
                "key_slice": kc.best_at_precision(p)["found"],
                "volume": vc.best_at_precision(p)["found"],
            }
            for p in levels
        },
        "found_anywhere": {
            "key_slice": kc.points[-1]["found"] if kc.points else 0,
            "volume": vc.points[-1]["found"] if vc.points else 0,
        },
    }


def main(argv: list[str]) -> int:
    """Generate (or reuse) a synthetic dataset, import it, screen it both ways, print and record the ratio."""
    parser = argparse.ArgumentParser(prog="bench_volume", description=__doc__)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="An existing synthetic dataset to use.")
    parser.add_argument(
        "--missed-off-key",
        type=float,
        default=None,
        help="Generate with the sub-volume model of missed lesions at this rate (lesion-review synth).",
    )
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument(
        "--cache", type=Path, default=None, help="Boxes of every slice: written, or replayed."
    )
    args = parser.parse_args(argv)
    if args.data is not None and args.missed_off_key is not None:
        parser.error("--missed-off-key generates data; an existing --data folder was made already")

    from app.detection.runtime import Detector

    model = args.model or Path(__file__).resolve().parent.parent / "models" / "lesion-detector.onnx"
    detector = Detector.load(model)
    with tempfile.TemporaryDirectory(prefix="bench_volume_") as tmp:
        root = Path(tmp)
        data = args.data
        if data is None:
            from app.deeplesion.synth import generate_dataset

            data = root / "synth"
            generate_dataset(
                data,
                patients=args.patients,
                seed=args.seed,
                progress=False,
                missed_off_key=args.missed_off_key,
            )
        url = imported_database_at(root, data)
        res = compare(database_url=url, data_dir=data, detector=detector, cache=args.cache)
    print(json.dumps(res, indent=1))
    ratio = res["ratio"]
    k, v = res["key_slice"], res["volume"]
    print(
        f"left-out lesions found at queue precision >= {k['precision']}: volume {v['found']} "
        f"(queue {v['queue_length']}), key slices {k['found']} (queue {k['queue_length']}) of "
        f"{res['left_out_lesions']}: ratio {ratio:.2f} (target >= {TARGET_RATIO}; this data allows at most "
        f"{res['ratio_ceiling']:.2f})"
    )
    if not args.no_record:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        fp = res["found_at_precision"]
        anywhere = res["found_anywhere"]
        source = f"--data {args.data}" if args.data else f"{args.patients} patients, seed {args.seed}"
        if res["missed_off_key"] is not None:
            source += f", --missed-off-key {res['missed_off_key']:g}"
        entry = (
            f"\n- {now}, {machine()}: synthetic data ({source}), "
            f"{res['series']} series, {res['slices']} slices "
            f"({res['seconds']} s on CPU), {res['left_out_lesions']} left-out lesions "
            f"({res['on_key_slices']} on a CSV key slice). "
            f"At the key-slice queue's precision {k['precision']} "
            f"(threshold {KEY_THRESHOLD}, queue {k['queue_length']}): key slices find {k['found']}, volume "
            f"{v['found']} (queue {v['queue_length']}, threshold {v['threshold']}): **ratio {ratio:.2f}** "
            f"(target {TARGET_RATIO}, at most {res['ratio_ceiling']:.2f} on this data). "
            "Found at precision >= 0.1/0.2/0.3/0.5, key vs volume: "
            + ", ".join(f"{fp[p]['key_slice']} vs {fp[p]['volume']}" for p in fp)
            + f"; anywhere in the queue: {anywhere['key_slice']} vs {anywhere['volume']}."
        )
        record(heading(res["missed_off_key"]), INTRO, entry)
    return 0 if ratio >= TARGET_RATIO else 1


def imported_database_at(root: Path, data: Path) -> str:
    """A migrated SQLite database in root holding data's DL_info.csv."""
    from app.db.session import make_engine, upgrade_database
    from app.review.importer import import_dataset

    url = f"sqlite:///{root / 'volume.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        import_dataset(engine=engine, data_dir=data, progress=False)
    finally:
        engine.dispose()
    return url


__all__ = ["compare", "imported_database", "main"]

if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
