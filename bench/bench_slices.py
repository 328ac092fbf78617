"""Windowed slice endpoint vs a naive handler (Pillow open + numpy window + PNG save), same server and run."""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.common import machine, record

TARGET_RATIO = 3.0
TARGET_RPS = 200.0
TARGET_P50_MS = 10.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE_MD = PROJECT_ROOT / "docs" / "performance.md"
HEADING = "## Slice images (bench/bench_slices.py, H6)"
WINDOWS = ({"preset": "soft_tissue"}, {"preset": "lung"}, {"center": "50", "width": "350"})


# -- the dataset ------------------------------------------------------------------------------------
def build_dataset(root: Path) -> list[str]:
    """A tiny synthetic dataset (H2's generator when present), migrated and imported; returns slice names."""
    from app.config import Settings
    from app.db.session import make_engine, make_session_factory, upgrade_database

    settings = Settings(data_dir=root)
    try:
        from app.deeplesion.synth import generate_dataset

        generate_dataset(root, patients=2, seed=1, max_studies=1, progress=False)
    except ImportError:
        _write_plain_slices(root)
    upgrade_database(settings.resolved_database_url())
    if (root / "DL_info.csv").is_file():
        from app.review.importer import import_dataset

        engine = make_engine(settings.resolved_database_url())
        try:
            import_dataset(data_dir=root, session_factory=make_session_factory(engine))
        finally:
            engine.dispose()
    folders = sorted((root / "Images_png").iterdir())
    names = [f"{folder.name}_{png.stem}" for folder in folders for png in sorted(folder.glob("*.png"))]
    return names[:8]


def _write_plain_slices(root: Path) -> None:
    """Fallback when the synthetic generator is absent: 512x512 slices with body-like HU and noise."""
    from app.deeplesion.store import write_hu_png

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) / 170.0) ** 2 + ((yy - 256) / 130.0) ** 2 < 1.0
    for index in range(100, 108):
        hu = np.where(body, 40, -1000) + rng.normal(0, 15, size=(512, 512))
        write_hu_png(root / "Images_png" / "000001_01_01" / f"{index:03d}.png", hu.astype(np.int16))


# -- the server -------------------------------------------------------------------------------------
def make_bench_app(data_dir: Path) -> object:
    """The real app plus the naive baseline route `/naive/{name}.png`."""
    from fastapi import Response
    from PIL import Image

    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(data_dir=data_dir), detector=None)

    def naive(name: str, center: float = 40.0, width: float = 400.0) -> Response:
        """What a first version would do: decode, window in float, encode with Pillow's defaults."""
        series, index = name.rsplit("_", 1)
        with Image.open(data_dir / "Images_png" / series / f"{index}.png") as img:
            hu = np.asarray(img).astype(np.float32) - 32768.0
        lo = center - width / 2.0
        u8 = (np.clip((hu - lo) / width, 0.0, 1.0) * 255.0).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(u8).save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png")

    app.add_api_route("/naive/{name}.png", naive, methods=["GET"], include_in_schema=False)
    return app


def serve(data_dir: Path, port: int) -> None:
    """Run the bench app with uvicorn (this is the subprocess)."""
    import uvicorn

    uvicorn.run(make_bench_app(data_dir), host="127.0.0.1", port=port, log_level="warning", access_log=False)  # type: ignore[arg-type]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll /api/health until the server answers."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bench server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("bench server did not start in time")


# -- the client -------------------------------------------------------------------------------------
def measure(urls: list[str], requests: int, threads: int) -> tuple[float, list[float]]:
    """Send `requests` GETs cycling over urls from `threads` keep-alive clients; (req/s, latencies ms)."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = max(1, requests // threads)
    errors: list[str] = []

    def worker(offset: int) -> None:
        local: list[float] = []
        with httpx.Client(timeout=30.0) as client:
            for i in range(per_thread):
                url = urls[(offset + i) % len(urls)]
                t0 = time.perf_counter()
                r = client.get(url)
                local.append((time.perf_counter() - t0) * 1000.0)
                if r.status_code != 200:
                    errors.append(f"{url}: {r.status_code}")
        with lock:
            latencies.extend(local)

    pool = [threading.Thread(target=worker, args=(k * 7,)) for k in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return len(latencies) / elapsed, latencies


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100)."""
    return float(np.percentile(np.asarray(values), q))


def run(requests: int, naive_requests: int, threads: int, record: bool) -> int:
    """Build the data, start the server, measure both handlers, print and optionally record."""
    with tempfile.TemporaryDirectory(prefix="bench_slices_") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        t0 = time.perf_counter()
        names = build_dataset(data_dir)
        print(f"dataset: {len(names)} slices in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_slices", "--serve", str(data_dir), "--port", str(port)],
            cwd=PROJECT_ROOT,
        )
        try:
            wait_ready(base, proc)
            fast_urls = [
                f"{base}/api/slices/{n}.png?" + "&".join(f"{k}={v}" for k, v in w.items())
                for n in names
                for w in WINDOWS
            ]
            naive_urls = [f"{base}/naive/{n}.png?center=40&width=400" for n in names]
            measure(fast_urls, len(fast_urls) * 2, 1)  # warm the caches
            measure(naive_urls, len(naive_urls), 1)  # warm the OS page cache equally
            fast_rps, _ = measure(fast_urls, requests, threads)
            _, fast_lat = measure(fast_urls, requests // 2, 1)
            naive_rps, _ = measure(naive_urls, naive_requests, threads)
            _, naive_lat = measure(naive_urls, naive_requests // 2, 1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return report(fast_rps, fast_lat, naive_rps, naive_lat, threads, record)


def report(
    fast_rps: float,
    fast_lat: list[float],
    naive_rps: float,
    naive_lat: list[float],
    threads: int,
    record: bool,
) -> int:
    """Print the figures and PASS/FAIL; append them to docs/performance.md when asked."""
    ratio = fast_rps / naive_rps
    p50, p95 = percentile(fast_lat, 50), percentile(fast_lat, 95)
    n50, n95 = percentile(naive_lat, 50), percentile(naive_lat, 95)
    checks: list[tuple[str, bool]] = [
        (f"throughput ratio {ratio:.1f}x >= {TARGET_RATIO:.0f}x", ratio >= TARGET_RATIO),
        (f"throughput {fast_rps:.0f} req/s >= {TARGET_RPS:.0f}", fast_rps >= TARGET_RPS),
        (f"p50 {p50:.2f} ms <= {TARGET_P50_MS:.0f} ms", p50 <= TARGET_P50_MS),
    ]
    rows = (("windowed PNG endpoint", fast_rps, p50, p95), ("naive handler", naive_rps, n50, n95))
    for label, rps, q50, q95 in rows:
        print(f"{label:22s}: {rps:7.0f} req/s ({threads} clients), p50 {q50:.2f} ms, p95 {q95:.2f} ms")
    print(f"ratio                 : {ratio:.1f}x")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {text}")
    passed = all(ok for _, ok in checks)
    if record:
        append_performance(fast_rps, p50, p95, naive_rps, n50, n95, ratio, threads, passed)
    return 0 if passed else 1


def append_performance(
    fast_rps: float,
    p50: float,
    p95: float,
    naive_rps: float,
    n50: float,
    n95: float,
    ratio: float,
    threads: int,
    passed: bool,
) -> None:
    """Append one dated row under this benchmark's heading in docs/performance.md."""
    intro = (
        "Warm cache, PNG, uvicorn on 127.0.0.1, keep-alive httpx clients in another process; "
        "p50/p95 from one sequential client. Naive = Pillow open + numpy float window + Pillow PNG save "
        "(default compression) per request, in the same server. Targets: >= 3x naive, >= 200 req/s, "
        "p50 <= 10 ms.\n\n"
        "| date (UTC) | machine | endpoint req/s | p50 ms | p95 ms | naive req/s | naive p50 ms "
        "| naive p95 ms | ratio | result |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {machine()}; {threads} client threads | {fast_rps:.0f} | "
        f"{p50:.2f} | {p95:.2f} | {naive_rps:.0f} | {n50:.1f} | {n95:.1f} | {ratio:.1f}x | "
        f"{'PASS' if passed else 'FAIL'} |\n"
    )
    # Rows go at the end of this section's table, before the next heading.
    record(HEADING, intro, row)


def main(argv: list[str]) -> int:
    """Entry point of `python -m bench.bench_slices` and of `python -m bench`."""
    parser = argparse.ArgumentParser(prog="bench_slices", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests to the real endpoint")
    parser.add_argument("--naive-requests", type=int, default=200, help="requests to the naive handler")
    parser.add_argument("--threads", type=int, default=4, help="concurrent keep-alive clients")
    parser.add_argument("--record", action="store_true", help="append the figures to docs/performance.md")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port)
        return 0
    return run(args.requests, args.naive_requests, args.threads, args.record)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
