"""`lesion-review serve` in a child process (its own process group), for probes that need a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_server(
    data_dir: Path,
    database_url: str,
    port: int,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    timeout_s: float = 90,
) -> subprocess.Popen[bytes]:
    """Start `serve` without a model and return once it answers /api/health."""
    command = [
        sys.executable,
        "-c",
        "from app.cli import main; main()",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--model",
        str(data_dir / "no-model.onnx"),
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(
        command,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"server did not answer within {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop the server's whole process group (uvicorn's worker processes too)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
