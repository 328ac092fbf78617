"""Crash-safety probe: SIGKILL a server while clients write, restart it, check every acknowledged write.

Used by tests/api/test_crash_safety.py (3 rounds) and bench/bench_crash.py (10 rounds).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.live import free_port
from tests.server_process import start_server, stop_server

KEY_SLICE = "000001_01_01_108.png"
CLIENTS = 20


@dataclass
class RoundResult:
    """What one kill round saw: writes acknowledged before the kill, and those missing afterwards."""

    acknowledged: int
    missing: list[int] = field(default_factory=list)
    without_audit: list[int] = field(default_factory=list)
    integrity: str = "ok"


def _sign_in(base: str, user: str, password: str) -> tuple[dict[str, str], str]:
    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/api/auth/login", json={"username": user, "password": password})
        r.raise_for_status()
        return dict(c.cookies.items()), str(r.json()["csrf_token"])


def _writer(
    base: str, session: tuple[dict[str, str], str], n: int, acked: list[int], stop: threading.Event
) -> None:
    """Add lesions until the server dies; remember each one the server acknowledged (201)."""
    cookies, csrf = session
    try:
        with httpx.Client(base_url=base, cookies=cookies, timeout=10) as c:
            i = 0
            while not stop.is_set():
                x, y = 2 + (n * 5 + i) % 100, 2 + (n * 7 + i * 3) % 100
                body = {"box": [x, y, x + 12, y + 12], "lesion_type": 7}
                r = c.post(f"/api/key-slices/{KEY_SLICE}/lesions", json=body, headers={"X-CSRF-Token": csrf})
                if r.status_code == 201:
                    acked.append(int(r.json()["lesion_id"]))
                i += 1
    except (httpx.HTTPError, KeyError, ValueError):
        return  # the server was killed mid-request: that write was never acknowledged


def kill_round(
    data_dir: Path, database_url: str, users: list[tuple[str, str]], *, write_s: float = 1.5
) -> RoundResult:
    """Start the server, let CLIENTS writers run, SIGKILL it, restart, check, stop."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(data_dir, database_url, port)
    acked: list[int] = []
    stop = threading.Event()
    # Sign in first (password hashing is slow on purpose), so the kill lands among writes, not logins.
    sessions = [_sign_in(base, user, password) for user, password in users]
    threads = [
        threading.Thread(
            target=_writer, args=(base, sessions[n % len(sessions)], n, acked, stop), daemon=True
        )
        for n in range(CLIENTS)
    ]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < CLIENTS and time.monotonic() < deadline:  # every writer under way
            time.sleep(0.05)
        time.sleep(write_s)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-write, no shutdown hooks
        proc.wait(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    proc = start_server(data_dir, database_url, port)
    try:
        result = RoundResult(acknowledged=len(acked))
        with httpx.Client(base_url=base, timeout=30) as c:
            c.post("/api/auth/login", json={"username": users[0][0], "password": users[0][1]})
            live = {le["id"] for le in c.get(f"/api/key-slices/{KEY_SLICE}").json()["lesions"]}
            audited = {
                e["lesion_id"]
                for e in c.get(f"/api/key-slices/{KEY_SLICE}/history").json()
                if e["action"] == "add"
            }
        result.missing = sorted(set(acked) - live)
        result.without_audit = sorted(set(acked) - audited)
        if database_url.startswith("sqlite"):
            import sqlite3

            with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
                result.integrity = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        return result
    finally:
        stop_server(proc)
