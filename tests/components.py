"""Optional test components (PostgreSQL, Chromium, torch, S3 server): skip loudly on a laptop, fail in CI."""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest

REQUIRE_ALL = os.environ.get("LESION_REVIEW_REQUIRE_ALL", "") not in ("", "0", "false", "no")

POSTGRES_ENV = "LESION_REVIEW_TEST_POSTGRES_URL"
# Tried in this order when POSTGRES_ENV is unset: a local server that lets these users in without a
# password (trust authentication), as on a developer machine or in the Docker image.
LOCAL_POSTGRES_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
)
PROBE_TIMEOUT_S = 2

# Filled while the run goes; printed at the very end of the run (tests/conftest.py).
SKIPPED_COMPONENTS: dict[str, str] = {}
TESTED_COMPONENTS: dict[str, str] = {}


def skip_reason(name: str, why: str) -> str:
    """The skip message of a test whose component is absent (the end-of-run summary counts by it)."""
    return f"{name} unavailable: {why}"


def require_component(name: str, available: bool, why: str) -> None:
    """Skip (laptop) or fail (LESION_REVIEW_REQUIRE_ALL=1) the calling test when a component is absent."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{name} is required (LESION_REVIEW_REQUIRE_ALL=1) but unavailable: {why}", pytrace=False)
    SKIPPED_COMPONENTS[name] = why
    pytest.skip(skip_reason(name, why))


def _can_create_databases(url: str) -> str | None:
    """None when the server at url answers and its user may create databases, else why not."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:
        with psycopg.connect(
            host=u.host or "127.0.0.1",
            port=u.port or 5432,
            user=u.username or "postgres",
            password=u.password or None,
            dbname=u.database or "postgres",
            connect_timeout=PROBE_TIMEOUT_S,
        ) as conn:
            row = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not row or not row[0]:
        return f"user {u.username} may not create databases"
    return None


@functools.cache
def postgres_server() -> tuple[str | None, str]:
    """The PostgreSQL server URL the tests create their scratch databases on, and how it was chosen.

    POSTGRES_ENV names it (`off` skips the PostgreSQL tests); unset, a local server is used when one
    answers on 127.0.0.1:5432 as user postgres or root. Without a server the URL is None and the text
    says why.
    """
    named = os.environ.get(POSTGRES_ENV, "").strip()
    if named.lower() == "off":
        return None, f"{POSTGRES_ENV}=off"
    if named:
        return named, f"{POSTGRES_ENV}"
    tried: list[str] = []
    for url in LOCAL_POSTGRES_URLS:
        problem = _can_create_databases(url)
        if problem is None:
            return url, f"found on 127.0.0.1:5432; set {POSTGRES_ENV} to choose another server, =off to skip"
        tried.append(f"{url}: {problem}")
    return None, (
        f"no local server answered ({'; '.join(tried)}); "
        f"set {POSTGRES_ENV}=postgresql+psycopg://user@host:port/db"
    )


S3_ENV = "LESION_REVIEW_TEST_S3"
S3_START_TIMEOUT_S = 20


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_s3_server() -> tuple[Any | None, str]:
    """A local S3-compatible server (moto's server mode on 127.0.0.1, a free port) and its endpoint URL.

    `LESION_REVIEW_TEST_S3=off` skips the object-store tests. Without a server the first value is None and
    the text says why; the caller stops a started server with `.stop()`.
    """
    if os.environ.get(S3_ENV, "").strip().lower() == "off":
        return None, f"{S3_ENV}=off"
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        return None, f"moto's server mode is not installed ({exc}); pip install -e '.[test]'"
    import logging
    import time
    import urllib.request

    # The server's per-request log lines would drown a test run's or a benchmark's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except Exception as exc:  # any failure to start is the component being unavailable
        return None, f"moto server did not start: {exc}"
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + S3_START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return server, endpoint
        except Exception as exc:
            if time.monotonic() > deadline:
                server.stop()
                return None, f"moto server on {endpoint} did not answer: {exc}"
            time.sleep(0.1)
