"""A real Lesion Review server for the browser tests and benchmark: synthetic data, SQLite, uvicorn."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's string predicates (wait_for_function) run through eval in the page, which the app's CSP
# forbids (no 'unsafe-eval'). Functional tests therefore bypass the CSP; tests/e2e/test_security_browser.py
# checks every page under the real policy in a context that does not.
CONTEXT_OPTIONS: dict[str, Any] = {"bypass_csp": True}
REVIEWER = ("alice", "alice-password-1")
SECOND_REVIEWER = ("bob", "bob-password-2")
ADMIN = ("carol", "carol-password-3")


@dataclass
class LiveServer:
    """A running server and what the tests need to know about it."""

    url: str
    data_dir: Path
    database_url: str
    users: dict[str, str] = field(default_factory=dict)
    key_slices: list[str] = field(default_factory=list)


def chromium_available() -> bool:
    """Whether Debian's Chromium is installed where the tests expect it."""
    return CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)


def build_dataset(root: Path, *, patients: int = 2, seed: int = 1, max_studies: int = 1) -> Path:
    """A tiny synthetic DeepLesion folder (DL_info.csv + Images_png) in `root`."""
    from app.deeplesion.synth import generate_dataset

    generate_dataset(root, patients=patients, seed=seed, max_studies=max_studies, progress=False)
    return root


def prepare_database(data_dir: Path, users: dict[str, str]) -> str:
    """Migrate an SQLite database in `data_dir`, import DL_info.csv and create the users; returns its URL."""
    from app.db.session import make_engine, make_session_factory, upgrade_database
    from app.review.importer import import_dataset
    from app.review.users import create_user

    url = f"sqlite:///{(data_dir / 'lesion_review.db').resolve()}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        factory = make_session_factory(engine)
        import_dataset(data_dir=data_dir, session_factory=factory)
        with factory() as session, session.begin():
            for name, password in users.items():
                role = "admin" if name == ADMIN[0] else "reviewer"
                create_user(session=session, name=name, password=password, role=role)
    finally:
        engine.dispose()
    return url


def key_slice_names(data_dir: Path) -> list[str]:
    """Key slice file names of the dataset, in CSV order, without repeats."""
    from app.deeplesion.csvio import read_dl_info

    seen: dict[str, None] = {}
    for record in read_dl_info(data_dir / "DL_info.csv"):
        seen.setdefault(record.file_name, None)
    return list(seen)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(settings: Any, *, detector: Any = ..., timeout_s: float = 30.0) -> Iterator[str]:
    """Run create_app(settings) under uvicorn in a background thread; yields its base URL."""
    import uvicorn

    from app.main import create_app

    app = create_app(settings) if detector is ... else create_app(settings, detector=detector)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="lesion-review-e2e", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the e2e server stopped while starting; see the log above")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the e2e server did not start within {timeout_s:.0f} s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def live_server(
    root: Path,
    *,
    with_model: bool = True,
    patients: int = 2,
    max_studies: int = 1,
    model_path: Path | None = None,
) -> Iterator[LiveServer]:
    """Build data, database and users under `root` (and the tiny ONNX model unless given), and serve."""
    from app.config import Settings

    data_dir = build_dataset(root / "data", patients=patients, max_studies=max_studies)
    users = dict([REVIEWER, SECOND_REVIEWER, ADMIN])
    url = prepare_database(data_dir, users)
    if model_path is None and with_model:
        from app.detection.testing import build_tiny_model

        model_path = build_tiny_model(root / "tiny-detector.onnx")
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        model_path=model_path,
        device="cpu",
    )
    with serve(settings) as base_url:
        yield LiveServer(
            url=base_url,
            data_dir=data_dir,
            database_url=url,
            users=users,
            key_slices=key_slice_names(data_dir),
        )
