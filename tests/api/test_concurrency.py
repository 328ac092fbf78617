"""A real uvicorn server under many simultaneous signed-in requests: no pool deadlock, no 5xx, one winner."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.config import Settings
from tests.api.conftest import PASSWORD, add_user
from tests.e2e.live import serve

# More requests at once than the server has worker threads (40) and pooled connections (5 + 10 overflow):
# a request that kept its connection while it waited for a thread would starve the others.
BURST = 120
# SQLAlchemy's pool gives up after 30 s; a deadlocked server answers only then, with 500s.
DEADLOCK_S = 30.0


def _signed_in(base_url: str, name: str) -> tuple[dict[str, str], str]:
    with httpx.Client(base_url=base_url) as c:
        r = c.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return dict(c.cookies.items()), r.json()["csrf_token"]


def _burst(
    base_url: str, cookies: dict[str, str], requests: list[tuple[str, str, dict | None, dict]]
) -> list[int]:
    """Send every request at the same moment from its own thread and connection; their status codes."""

    def one(req: tuple[str, str, dict | None, dict]) -> int:
        method, path, body, headers = req
        with httpx.Client(base_url=base_url, cookies=cookies, timeout=DEADLOCK_S + 30) as c:
            return c.request(method, path, json=body, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(one, requests))


@pytest.fixture
def server(app_settings: Settings, database_url: str):  # type: ignore[no-untyped-def]
    add_user(database_url, "burst", "reviewer")
    with serve(app_settings, detector=None) as url:
        yield url


@pytest.fixture
def tiny_server(app_settings: Settings, database_url: str):  # type: ignore[no-untyped-def]
    """A server with 3 worker threads sharing 1 database connection: the tightest pools there are."""
    add_user(database_url, "burst", "reviewer")
    tight = app_settings.model_copy(
        update={"worker_threads": 3, "db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_s": 5.0}
    )
    with serve(tight, detector=None) as url:
        yield url


def test_more_simultaneous_requests_than_threads_and_connections_never_deadlock(tiny_server: str) -> None:
    # A request that kept its connection while waiting for a thread would block the 3 threads, each waiting
    # for the 1 connection: 500s after the pool timeout.
    cookies, csrf = _signed_in(tiny_server, "burst")
    reads = [("GET", "/api/key-slices/000001_01_01_108.png", None, {})] * 30
    writes = [
        (
            "PUT",
            "/api/key-slices/000001_01_01_108.png/status",
            {"status": "done", "version": 0},
            {"X-CSRF-Token": csrf},
        )
    ] * 10
    codes = _burst(tiny_server, cookies, reads + writes)
    assert codes[:30] == [200] * 30, sorted(codes)
    assert sorted(set(codes[30:])) <= [200, 409] and codes[30:].count(200) == 1, sorted(codes)


def test_a_burst_of_signed_in_reads_larger_than_the_pools_gets_no_error(server: str) -> None:
    cookies, _ = _signed_in(server, "burst")
    started = time.monotonic()
    codes = _burst(server, cookies, [("GET", "/api/key-slices/000001_01_01_108.png", None, {})] * BURST)
    elapsed = time.monotonic() - started
    assert codes == [200] * BURST, sorted(set(codes))
    assert elapsed < DEADLOCK_S, f"{BURST} reads took {elapsed:.1f} s: requests waited on the pool"


def test_parallel_edits_of_one_lesion_give_one_winner_and_conflicts_never_a_5xx(server: str) -> None:
    cookies, csrf = _signed_in(server, "burst")
    with httpx.Client(base_url=server, cookies=cookies) as c:
        lesion = c.get("/api/key-slices/000001_01_01_108.png").json()["lesions"][0]
    body = {"version": lesion["version"], "lesion_type": 7}
    headers = {"X-CSRF-Token": csrf}
    codes = _burst(server, cookies, [("PUT", f"/api/lesions/{lesion['id']}/geometry", body, headers)] * 100)
    assert codes.count(200) == 1 and codes.count(409) == 99, sorted(codes)
    with httpx.Client(base_url=server, cookies=cookies) as c:
        history = c.get(f"/api/lesions/{lesion['id']}/history").json()
        now = c.get("/api/key-slices/000001_01_01_108.png").json()["lesions"][0]
    assert [e["action"] for e in history] == ["edit"]
    assert now["current"]["lesion_type"] == 7 and now["version"] == lesion["version"] + 1
