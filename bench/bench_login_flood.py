"""A reviewer's read latency while 100 clients guess passwords at once, against the same reads alone."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_slices import free_port, wait_ready
from bench.common import PROJECT_ROOT, machine

READ = "/api/key-slices?page_size=50"
# The figure to hold: reads during the flood at most this many times slower than without it.
TARGET_RATIO = 10.0


def _server_rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of the server process, MB (Linux /proc)."""
    now = peak = float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        pass
    return now, peak


def _reads(base: str, cookies: dict[str, str], n: int, failed: list[str]) -> list[float]:
    """Milliseconds of n sequential work-list reads by the signed-in reviewer; failures go to `failed`."""
    import httpx

    out: list[float] = []
    with httpx.Client(base_url=base, cookies=cookies, timeout=120.0) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                r = c.get(READ)
                status = str(r.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            out.append((time.perf_counter() - t0) * 1000)
            if status != "200":
                failed.append(status)
    return out


def _flood(
    base: str, clients: int, stop: threading.Event, statuses: dict[int, int]
) -> list[threading.Thread]:
    """`clients` threads posting wrong passwords for distinct unknown names until stopped."""
    import httpx

    lock = threading.Lock()

    def guess(i: int) -> None:
        with httpx.Client(base_url=base, timeout=120.0) as c:
            k = 0
            while not stop.is_set():
                k += 1
                try:
                    r = c.post(
                        "/api/auth/login", json={"username": f"guess{i}x{k}", "password": "wrong-guess"}
                    )
                    code = r.status_code
                except httpx.HTTPError:
                    code = 0
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1

    threads = [threading.Thread(target=guess, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    return threads


def run(project: Path, clients: int, reads: int) -> dict[str, float]:
    """Serve `project`'s app on a small synthetic dataset and measure reads without and with the flood."""
    import httpx

    from tests.e2e.live import REVIEWER, build_dataset, prepare_database

    with tempfile.TemporaryDirectory(prefix="bench-login-") as tmp:
        data_dir = build_dataset(Path(tmp) / "data", patients=2, max_studies=1)
        url = prepare_database(data_dir, dict([REVIEWER]))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(project),
            "LESION_REVIEW_DATA_DIR": str(data_dir),
            "LESION_REVIEW_DATABASE_URL": url,
            "LESION_REVIEW_MODEL_PATH": str(Path(tmp) / "no-model.onnx"),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "app.main:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "error",
            ],
            cwd=project,
            env=env,
        )
        try:
            wait_ready(base, proc)
            r = httpx.post(f"{base}/api/auth/login", json={"username": REVIEWER[0], "password": REVIEWER[1]})
            r.raise_for_status()
            cookies = dict(r.cookies)
            failed_alone: list[str] = []
            failed_flood: list[str] = []
            _reads(base, cookies, 5, failed_alone)  # warm up
            baseline = _reads(base, cookies, reads, failed_alone)
            idle_rss, _ = _server_rss_mb(proc.pid)
            stop = threading.Event()
            statuses: dict[int, int] = {}
            threads = _flood(base, clients, stop, statuses)
            time.sleep(2.0)  # let the flood build up
            flooded = _reads(base, cookies, reads, failed_flood)
            flood_rss, peak_rss = _server_rss_mb(proc.pid)
            stop.set()
            for t in threads:
                t.join(timeout=120)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"sign-in answers during the flood: {dict(sorted(statuses.items()))}")
    print(f"failed reviewer reads: {failed_alone or 'none'} alone, {failed_flood or 'none'} during the flood")
    return {
        "baseline_ms": statistics.median(baseline),
        "flood_ms": statistics.median(flooded),
        "flood_max_ms": max(flooded),
        "ratio": statistics.median(flooded) / statistics.median(baseline),
        "idle_rss_mb": idle_rss,
        "flood_rss_mb": flood_rss,
        "peak_rss_mb": peak_rss,
        "failed_reads": float(len(failed_alone) + len(failed_flood)),
    }


def main(argv: list[str]) -> int:
    """Entry point of `python -m bench.bench_login_flood` and of `python -m bench`."""
    parser = argparse.ArgumentParser(prog="bench_login_flood", description=__doc__)
    parser.add_argument("--clients", type=int, default=100, help="parallel password guessers")
    parser.add_argument("--reads", type=int, default=20, help="reviewer reads per phase")
    parser.add_argument("--project", type=Path, default=PROJECT_ROOT, help="checkout whose app to serve")
    args = parser.parse_args(argv)
    print(machine())
    f = run(args.project.resolve(), args.clients, args.reads)
    print(
        f"reviewer read {READ}: median {f['baseline_ms']:.1f} ms alone, {f['flood_ms']:.1f} ms "
        f"(max {f['flood_max_ms']:.0f} ms) during {args.clients} parallel wrong sign-ins: "
        f"ratio {f['ratio']:.1f}x (target <= {TARGET_RATIO:g}x)"
    )
    print(
        f"server memory: {f['idle_rss_mb']:.0f} MB before the flood, {f['flood_rss_mb']:.0f} MB during it, "
        f"peak {f['peak_rss_mb']:.0f} MB"
    )
    return 0 if f["ratio"] <= TARGET_RATIO and not f["failed_reads"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
