"""Load probe: signed-in reviewers with think time against a real server, then a burst of requests.

Used by tests/api/test_load.py (small) and bench/bench_load.py (50 reviewers for 60 s, burst of 200).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from app.deeplesion.store import SliceStore

CONFLICT = 409


@dataclass
class EndpointFigures:
    """Latencies (ms) and answers of one kind of request."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    conflicts: int = 0

    def percentile(self, q: float) -> float:
        """The q-th percentile latency in ms (nan when none)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@dataclass
class LoadResult:
    """Per-endpoint figures of a run, and what went wrong."""

    endpoints: dict[str, EndpointFigures] = field(default_factory=lambda: defaultdict(EndpointFigures))
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        """Requests sent."""
        return sum(len(f.latencies_ms) for f in self.endpoints.values())

    @property
    def errors(self) -> int:
        """Answers that were neither success nor an honest 409 conflict (5xx, timeouts, other 4xx)."""
        return sum(f.errors for f in self.endpoints.values())

    def table(self, baseline: LoadResult | None = None) -> list[str]:
        """Markdown rows: endpoint, requests, errors, 409s, p50/p95/p99 ms, p95 / unloaded p50 ratio."""
        rows = []
        for name in sorted(self.endpoints):
            f = self.endpoints[name]
            ratio = ""
            if baseline is not None and name in baseline.endpoints:
                ratio = f"{f.percentile(95) / baseline.endpoints[name].percentile(50):.1f}"
            rows.append(
                f"| {name} | {len(f.latencies_ms)} | {f.errors} | {f.conflicts} | {f.percentile(50):.0f} | "
                f"{f.percentile(95):.0f} | {f.percentile(99):.0f} | {ratio} |"
            )
        return rows


TABLE_HEADER = [
    "| endpoint | requests | errors | 409 | p50 ms | p95 ms | p99 ms | p95 / unloaded p50 |",
    "|---|---|---|---|---|---|---|---|",
]


class _Recorder:
    def __init__(self, result: LoadResult) -> None:
        self.result = result
        self.lock = threading.Lock()

    def call(
        self, client: httpx.Client, name: str, method: str, url: str, **kwargs: object
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            with self.lock:
                fig = self.result.endpoints[name]
                fig.latencies_ms.append((time.perf_counter() - started) * 1000)
                fig.errors += 1
                self.result.problems.append(f"{name}: {type(exc).__name__}")
            return None
        elapsed = (time.perf_counter() - started) * 1000
        with self.lock:
            fig = self.result.endpoints[name]
            fig.latencies_ms.append(elapsed)
            if r.status_code == CONFLICT:
                fig.conflicts += 1
            elif r.status_code >= 400:
                fig.errors += 1
                if len(self.result.problems) < 50:
                    self.result.problems.append(f"{name}: {r.status_code} {r.text[:120]}")
        return r if r.status_code < 400 else None


def sign_in(base: str, name: str, password: str) -> tuple[dict[str, str], str]:
    """A session's cookies and CSRF token."""
    with httpx.Client(base_url=base, timeout=120) as c:
        r = c.post("/api/auth/login", json={"username": name, "password": password})
        r.raise_for_status()
        return dict(c.cookies.items()), str(r.json()["csrf_token"])


def _review_one(rec: _Recorder, c: httpx.Client, csrf: str, file_name: str, rng: random.Random) -> None:
    """What a reviewer does on one key slice: open it, its images and neighbours, and make one change."""
    detail = rec.call(c, "GET key slice", "GET", f"/api/key-slices/{file_name}")
    rec.call(c, "GET neighbours", "GET", f"/api/key-slices/{file_name}/neighbours")
    if detail is None:
        return
    body = detail.json()
    series = file_name.removesuffix(".png").rsplit("_", 1)[0]
    key = body["key_slice_index"]
    # The key slice and the stored slices next to it, as the viewer loads them first.
    for index in (key, key - 1, key + 1):
        if index in body["stored_slices"]:
            rec.call(c, "GET slice png", "GET", f"/api/slices/{series}_{index:03d}.png")
    headers = {"X-CSRF-Token": csrf}
    # Status first: a correction starts the key slice for its reviewer, which moves status_version.
    status = "done" if body["status"] != "done" else "in_progress"
    rec.call(
        c,
        "PUT status",
        "PUT",
        f"/api/key-slices/{file_name}/status",
        json={"status": status, "version": body["status_version"]},
        headers=headers,
    )
    lesions = body["lesions"]
    if lesions and rng.random() < 0.5:
        lesion = rng.choice(lesions)
        if lesion["flag"] is None:
            rec.call(
                c,
                "POST flag",
                "POST",
                f"/api/lesions/{lesion['id']}/flag",
                json={"version": lesion["version"], "reason": "not_a_lesion"},
                headers=headers,
            )
        else:
            rec.call(
                c,
                "POST unflag",
                "POST",
                f"/api/lesions/{lesion['id']}/unflag",
                json={"version": lesion["version"]},
                headers=headers,
            )


def reviewers(
    base: str,
    sessions: list[tuple[dict[str, str], str]],
    key_slices: list[str],
    *,
    seconds: float,
    think_s: tuple[float, float],
    pages: int,
    seed: int = 0,
) -> LoadResult:
    """Each session reviews random key slices (work list page, key slice, images, a change) for `seconds`."""
    result = LoadResult()
    rec = _Recorder(result)
    stop = time.monotonic() + seconds

    def run(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        cookies, csrf = sessions[n]
        with httpx.Client(base_url=base, cookies=cookies, timeout=60) as c:
            while time.monotonic() < stop:
                page = rng.randint(1, pages)
                rec.call(c, "GET work list", "GET", "/api/key-slices", params={"page": page, "page_size": 50})
                _review_one(rec, c, csrf, rng.choice(key_slices), rng)
                time.sleep(rng.uniform(*think_s))

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 300)
    result.seconds = time.perf_counter() - started
    return result


def stored_key_slices(data_dir: Path, key_slices: list[str]) -> list[str]:
    """The key slices whose image is on disk."""
    return [k for k in key_slices if SliceStore(data_dir).exists(k)]


def burst(base: str, sessions: list[tuple[dict[str, str], str]], key_slices: list[str], n: int) -> LoadResult:
    """n signed-in requests released at the same instant (work list, key slice, slice image in turn).

    `key_slices` must be stored on disk: a missing image is an honest 404, not what a burst measures.
    """
    result = LoadResult()
    rec = _Recorder(result)
    barrier = threading.Barrier(n)
    clients = [
        httpx.Client(base_url=base, cookies=sessions[i % len(sessions)][0], timeout=120) for i in range(n)
    ]

    def run(i: int) -> None:
        c = clients[i]
        file_name = key_slices[i % len(key_slices)]
        kind = i % 3
        barrier.wait()
        if kind == 0:
            rec.call(c, "burst GET work list", "GET", "/api/key-slices", params={"page": 1 + i % 5})
        elif kind == 1:
            rec.call(c, "burst GET key slice", "GET", f"/api/key-slices/{file_name}")
        else:
            rec.call(c, "burst GET slice png", "GET", f"/api/slices/{file_name.removesuffix('.png')}.png")

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for c in clients:
        c.close()
    result.seconds = time.perf_counter() - started
    return result
