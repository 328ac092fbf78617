"""Slice reads from S3 (moto's server mode) with a warm local cache against the same slices on local disk."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.common import machine, record

SLICES = 40
SIZE = 512
PASSES = 6
TARGET_RATIO = 1.5
BUCKET = "lesion-review-bench"


def ct_like(seed: int) -> np.ndarray:
    """A 512 x 512 int16 slice: air, a soft-tissue body, a few organs and 15 HU noise (compresses like CT)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    hu = np.full((SIZE, SIZE), -1000.0)
    body = ((xx - 256) / 200.0) ** 2 + ((yy - 256) / 160.0) ** 2 < 1
    hu[body] = 40
    for _ in range(4):
        cx, cy, r = rng.integers(150, 360), rng.integers(150, 360), rng.integers(20, 60)
        hu[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.choice([-800, 60, 400])
    return (hu + rng.normal(0, 15, hu.shape)).astype(np.int16)


def timed_pass(store: object, names: list[str]) -> float:
    """Milliseconds per read over one pass through every name."""
    started = time.perf_counter()
    for name in names:
        store.read_hu(name)  # type: ignore[attr-defined]
    return (time.perf_counter() - started) * 1000 / len(names)


def main(argv: list[str]) -> int:
    """Print warm-cache ms per read for local disk and S3, their ratio; record; 1 when above the target."""
    from app.deeplesion import objectstore
    from app.deeplesion.store import SliceStore, write_hu_png
    from tests.components import start_s3_server

    server, endpoint = start_s3_server()
    if server is None:
        print(f"S3 server unavailable: {endpoint}")
        return 1
    root = Path(tempfile.mkdtemp(prefix="lr-objectstore-"))
    try:
        import boto3
        import s3fs

        local = root / "local"
        names = [f"000001_01_01_{i:03d}.png" for i in range(SLICES)]
        for i in range(SLICES):
            write_hu_png(local / "Images_png" / "000001_01_01" / f"{i:03d}.png", ct_like(i))
        options = {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=BUCKET)
        url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
        for path in sorted((local / "Images_png").rglob("*.png")):
            fs.pipe_file(f"{url[5:]}/{path.relative_to(local).as_posix()}", path.read_bytes())
        mean_kb = statistics.mean(p.stat().st_size for p in (local / "Images_png").rglob("*.png")) / 1024
        # The decoded-slice LRU is off on both sides: what is measured is reading and decoding the PNG.
        backend = objectstore.configure_backend(
            url, storage_options=options, cache_dir=root / "cache", cache_bytes=2**30
        )
        remote = SliceStore(url, cache_bytes=0)
        disk = SliceStore(local, cache_bytes=0)
        cold = timed_pass(remote, names)
        timed_pass(disk, names)
        local_ms, remote_ms = [], []
        for _ in range(PASSES):
            local_ms.append(timed_pass(disk, names))
            remote_ms.append(timed_pass(remote, names))
        loc, rem = statistics.median(local_ms), statistics.median(remote_ms)
        ratio = rem / loc
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    ok = ratio <= TARGET_RATIO
    line = (
        f"{SLICES} slices {SIZE} x {SIZE} ({mean_kb:.0f} KB PNG), {PASSES} passes: "
        f"local disk {loc:.2f} ms/read, S3 warm cache {rem:.2f} ms/read, "
        f"ratio {ratio:.2f}x (target <= {TARGET_RATIO}x, "
        f"{'OK' if ok else 'SLOW'}); S3 cold (first fetch) {cold:.2f} ms/read; requests: "
        f"{backend.gets} GET, {backend.heads} HEAD (identities trusted {backend._identities.ttl_s:.0f} s)"
    )
    print(line)
    record(
        "## Images on object storage (bench/bench_objectstore.py)",
        "`python -m bench bench_objectstore`: the same slices on local disk and in an S3 bucket served by "
        "moto's server mode on 127.0.0.1 (started by the bench). `SliceStore.read_hu` with the decoded-slice "
        "LRU off on both sides, so each read opens and decodes the PNG: from the local folder, or from the "
        "object store's local disk cache after one warm-up pass (identities from a HEAD memoised for 5 s, as "
        "served). Passes alternate between the two; medians of the per-pass mean. Target: S3 within 1.5x.\n",
        f"- {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC, {machine()}: {line}",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
