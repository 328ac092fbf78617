"""Detector throughput on a local Ray cluster with 1 and 2 worker nodes (1 CPU each) against one process."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from app.detection.batch import SliceResult, SliceRunner, SliceTask
from bench.common import PROJECT_ROOT, machine, record

MODEL = PROJECT_ROOT / "models" / "lesion-detector.onnx"
KEY_SLICES = 160
SIZE = 256
THRESHOLD = 0.3
TARGET_EFFICIENCY = 0.8


def _timed(run: SliceRunner, tasks: Sequence[SliceTask]) -> tuple[float, float, dict[str, SliceResult]]:
    """Slices/s over the whole pass, slices/s once started (after the first tenth), and the results."""
    start = time.perf_counter()
    found: dict[str, SliceResult] = {}
    times: list[float] = []
    for r in run(tasks):
        found[r.task.file_name] = r
        times.append(time.perf_counter())
    n = len(tasks)
    # Actor start-up (process, imports, model load) is a fixed cost a 32,000-slice pass hardly notices.
    m = n // 10
    return n / (times[-1] - start), (n - m) / (times[-1] - times[m - 1]), found


def _best(
    run: SliceRunner, tasks: Sequence[SliceTask], repeats: int, reference: dict[str, SliceResult] | None
) -> tuple[float, float, dict[str, SliceResult], bool]:
    """The best of `repeats` passes (a shared machine's load only ever slows a pass down), and whether every
    pass returned exactly `reference`."""
    passes = [_timed(run, tasks) for _ in range(repeats)]
    found = passes[0][2]
    same = all(p[2] == (reference if reference is not None else found) for p in passes)
    return max(p[0] for p in passes), max(p[1] for p in passes), found, same


def main(argv: list[str]) -> int:
    """Run the benchmark; --no-record prints only. Exit 1 below the scaling target."""
    parser = argparse.ArgumentParser(prog="bench_ray")
    parser.add_argument("--key-slices", type=int, default=KEY_SLICES)
    parser.add_argument("--repeats", type=int, default=2, help="passes per configuration; the best counts")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)

    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.store import SliceStore
    from app.detection.batch import detect_locally
    from app.detection.cluster import ray_runner
    from app.detection.runtime import Detector
    from tests.api.ray_data import build_cluster_dataset
    from tests.components import start_ray_cluster

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cluster = None
    try:
        data = root / "data"
        build_cluster_dataset(data, key_slices=args.key_slices, size=SIZE)
        tasks = [SliceTask(r.file_name, r.spacing_mm) for r in read_dl_info(data / "DL_info.csv")]
        n = len(tasks)
        detector = Detector.load(MODEL, device="cpu")
        r = args.repeats
        local, _, reference, same_local = _best(
            detect_locally(detector, SliceStore(data), THRESHOLD), tasks, r, None
        )
        one_thread = Detector.load(MODEL, device="cpu", threads=1)
        local1, _, _, same1 = _best(
            detect_locally(one_thread, SliceStore(data), THRESHOLD), tasks, r, reference
        )
        # The head only schedules (0 CPUs): the actors run on the worker nodes, one CPU each.
        cluster, how = start_ray_cluster(workers=1, head_cpus=0)
        if cluster is None:
            print(f"Ray cluster unavailable: {how}")
            return 1
        runner = ray_runner(cluster.address, MODEL, data, THRESHOLD)
        one_wall, one_rate, _, same_one = _best(runner, tasks, r, reference)
        problem = cluster.add_worker(1)
        if problem:
            print(f"second worker node did not start: {problem}")
            return 1
        two_wall, two_rate, _, same_two = _best(runner, tasks, r, reference)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    same = same_local and same1 and same_one and same_two
    efficiency = two_rate / (2 * one_rate)
    wall_efficiency = two_wall / (2 * one_wall)
    ok = efficiency >= TARGET_EFFICIENCY and same
    line = (
        f"{n} key slices {SIZE}x{SIZE}, model {detector.model_version}, best of {r} passes: single process "
        f"{local:.2f} slices/s (2 ORT threads), {local1:.2f} slices/s (1 thread); Ray 1 worker node "
        f"{one_rate:.2f} slices/s once started ({one_wall:.2f} over the whole pass), 2 worker nodes "
        f"{two_rate:.2f} ({two_wall:.2f}); scaling efficiency 1->2 nodes {efficiency:.0%} once started "
        f"(target >= {TARGET_EFFICIENCY:.0%}, {'OK' if efficiency >= TARGET_EFFICIENCY else 'BELOW'}), "
        f"{wall_efficiency:.0%} over the whole pass; 2 nodes vs single process (2 threads) "
        f"{two_rate / local:.2f}x; results identical to the single process: {same}"
    )
    print(line)
    if not args.no_record:
        record(
            "## Screening on a Ray cluster (bench/bench_ray.py, issue 16)",
            "`nice -n 15 .venv/bin/python -m bench.bench_ray`: phantom key slices (tests/api/ray_data.py), "
            "the shipped model, threshold 0.3. Single process = `detect_locally` in the bench process. Ray = "
            "`ray_runner` (Ray Data `map_batches`, one ONNX Runtime actor of 1 CPU and 1 thread per worker "
            "CPU) on a local cluster started by the bench: a 0-CPU head, then 1 and 2 worker nodes of 1 CPU. "
            "Each configuration runs `--repeats` passes (default 2) and the best counts. "
            "'Once started' leaves out the first tenth of the results (actor process start, imports, model "
            "load: a fixed cost per pass); 'whole pass' includes it. Efficiency = rate(2 nodes) / "
            "(2 x rate(1 node)); target >= 80%.\n",
            f"- {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC, {machine()}: {line}",
        )
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
