"""Several server processes on one database: `serve --workers N` keeps no per-process state that matters."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.deeplesion.schema import LesionRecord
from app.serving import worker_environment
from tests.api.conftest import PASSWORD, add_user
from tests.e2e.live import free_port
from tests.server_process import start_server, stop_server

KS = "000001_01_01_108.png"


def _clear_settings_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LESION_REVIEW_"):
            monkeypatch.delenv(name)


def _as_a_worker_reads_them(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a worker process builds from worker_environment(settings) alone."""
    _clear_settings_environment(monkeypatch)
    for name, value in worker_environment(settings).items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_settings_reach_worker_processes_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        data_dir=tmp_path,
        host="0.0.0.0",
        port=9123,
        database_url="postgresql+psycopg://u@db:5432/x",
        model_path=None,
        allowed_hosts="review.example.org",
        cookie_secure=True,
        public_images=True,
        worker_threads=7,
        db_pool_size=3,
        db_max_overflow=2,
        db_pool_timeout_s=4.5,
    )
    assert _as_a_worker_reads_them(settings, monkeypatch) == settings


def test_object_storage_settings_reach_worker_processes_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        data_dir="s3://bucket/deeplesion",
        database_url="postgresql+psycopg://u@db:5432/x",
        storage_options={"client_kwargs": {"endpoint_url": "http://minio:9000"}, "anon": False},
        cache_dir=tmp_path / "cache",
        cache_mb=0.5,
        object_ttl_s=2.5,
    )
    assert _as_a_worker_reads_them(settings, monkeypatch) == settings


def test_default_settings_also_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_settings_environment(monkeypatch)
    settings = Settings()
    assert _as_a_worker_reads_them(settings, monkeypatch) == settings


def _status_writes(base: str, cookies: dict[str, str], csrf: str, n: int) -> list[int]:
    """n writes, each on a fresh connection so that the kernel spreads them over the worker processes."""

    def one(i: int) -> int:
        with httpx.Client(base_url=base, cookies=cookies, timeout=60) as c:
            ks = c.get(f"/api/key-slices/{KS}").json()
            r = c.put(
                f"/api/key-slices/{KS}/status",
                json={"status": "done" if i % 2 else "in_progress", "version": ks["status_version"]},
                headers={"X-CSRF-Token": csrf},
            )
            return r.status_code

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def _sign_in(base: str, name: str, password: str) -> int:
    """One sign-in on a fresh connection (any worker may answer it)."""
    with httpx.Client(base_url=base, timeout=60) as c:
        return c.post("/api/auth/login", json={"username": name, "password": password}).status_code


@pytest.mark.slow
def test_two_workers_serve_auto_login_writes_and_share_the_sign_in_throttle(
    review_dataset: tuple[Path, list[LesionRecord]], database_url: str
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(review_dataset[0], database_url, port, workers=2)
    try:
        processes: set[str] = set()
        with httpx.Client(base_url=base, timeout=60) as c:
            csrf = c.get("/api/auth/me").json()["csrf_token"]
        # Auto-login (no users yet): every worker must accept the token any worker handed out.
        codes = _status_writes(base, {}, csrf, 20)
        assert all(code in (200, 409) for code in codes), codes
        assert codes.count(200) >= 1
        for _ in range(40):
            with httpx.Client(base_url=base, timeout=60) as c:
                processes.add(c.get("/api/health").headers["X-Server-Process"])
        assert len(processes) == 2, f"requests reached {len(processes)} worker process(es)"
        # Sign-in throttle: 5 wrong tries per name and client in all, however the workers share them.
        add_user(database_url, "worker_kate", "reviewer")
        answers = []
        for _ in range(8):
            with httpx.Client(base_url=base, timeout=60) as c:
                answers.append(
                    c.post(
                        "/api/auth/login", json={"username": "worker_kate", "password": "wrong"}
                    ).status_code
                )
        assert answers.count(401) == 5 and answers.count(429) == 3, answers
        with httpx.Client(base_url=base, timeout=60) as c:
            assert (
                c.post("/api/auth/login", json={"username": "worker_kate", "password": PASSWORD}).status_code
                == 429
            )
    finally:
        stop_server(proc)
