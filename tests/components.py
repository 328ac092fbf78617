"""Optional test components (PostgreSQL, Chromium, torch, S3 server): skip loudly on a laptop, fail in CI."""

from __future__ import annotations

import contextlib
import functools
import logging
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


RAY_ENV = "LESION_REVIEW_TEST_RAY"
RAY_START_TIMEOUT_S = 90
RAY_STOP_GRACE_S = 3
# Small, so that a test cluster does not take a shared machine's memory (Ray's minimum is ~75 MB).
RAY_OBJECT_STORE_BYTES = 100 * 2**20


class RayCluster:
    """Ray nodes on 127.0.0.1 started by this process (`ray start --block`), each stopped by its own pid.

    Never `ray stop`: that stops every Ray node of the machine's user, other people's too.
    """

    def __init__(self, temp_dir: str) -> None:
        self.temp_dir = temp_dir
        self.address = ""
        self.nodes: list[Any] = []
        self.cpus = 0

    def _start(self, args: list[str], log_name: str) -> str | None:
        import shutil
        import subprocess
        import sys
        from pathlib import Path

        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
        if ray is None:
            return "the `ray` command is not installed; pip install -e '.[cluster]'"
        ports = [
            "--node-manager-port",
            str(_free_port()),
            "--object-manager-port",
            str(_free_port()),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--dashboard-agent-grpc-port",
            str(_free_port()),
            "--metrics-export-port",
            str(_free_port()),
            "--runtime-env-agent-port",
            str(_free_port()),
        ]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        log = open(Path(self.temp_dir) / log_name, "wb")  # noqa: SIM115 - kept open while the node runs
        # Its own session: the node's daemons can be found (and ended) through its process group.
        proc = subprocess.Popen(
            [ray, "start", "--block", *args, *ports],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.nodes.append(proc)
        return None

    def _cpus(self) -> tuple[int, str]:
        """CPUs the cluster counts now (this process connects to it first), and why 0."""
        import ray

        try:
            if not ray.is_initialized():
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
            return int(ray.cluster_resources().get("CPU", 0)), ""
        except Exception as exc:  # any failure to connect is the cluster not being up yet
            return 0, f"{type(exc).__name__}: {exc}"

    def _wait_for_cpus(self, cpus: int) -> str | None:
        import time

        deadline = time.monotonic() + RAY_START_TIMEOUT_S
        why = ""
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.nodes):
                return f"a ray node exited with {[p.poll() for p in self.nodes]}; logs in {self.temp_dir}"
            counted, why = self._cpus()
            if counted >= cpus:
                return None
            time.sleep(1)
        return f"the cluster at {self.address} showed no {cpus} CPUs within {RAY_START_TIMEOUT_S} s: {why}"

    def start_head(self, cpus: int, *, wait: bool = True) -> str | None:
        """Start the head node with `cpus` CPUs; None when it runs (without wait: was launched), else why."""
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        head = [
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            str(cpus),
            "--object-store-memory",
            str(RAY_OBJECT_STORE_BYTES),
            "--include-dashboard=false",
            "--temp-dir",
            self.temp_dir,
        ]
        self.cpus = cpus
        return self._start(head, "head.log") or (self._wait_for_cpus(cpus) if wait else None)

    def add_worker(self, cpus: int, *, wait: bool = True) -> str | None:
        """Start one more node with `cpus` CPUs (it waits for the head itself) and wait until it counts."""
        worker = [
            "--address",
            self.address,
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(cpus),
            "--object-store-memory",
            str(RAY_OBJECT_STORE_BYTES),
        ]
        self.cpus += cpus
        problem = self._start(worker, f"worker{len(self.nodes)}.log")
        return problem or (self._wait_for_cpus(self.cpus) if wait else None)

    def stop(self, *, keep_logs: bool = False) -> None:
        """Disconnect, then end every node this object started (its `ray start` process and process group)."""
        import shutil
        import signal
        import subprocess
        import time

        import ray

        ray.shutdown()

        # Each node runs in its own session (start_new_session): its group is exactly what it started.
        for proc in reversed(self.nodes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + RAY_STOP_GRACE_S
        for proc in reversed(self.nodes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Whatever of that node is left (raylet, workers started in its session).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.nodes.clear()
        if not keep_logs:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_ray_cluster(workers: int = 1, head_cpus: int = 1, worker_cpus: int = 1) -> tuple[Any | None, str]:
    """A local Ray cluster (head + `workers` nodes on 127.0.0.1) and how it was started, or None and why.

    This process is connected to it (ray.init). `LESION_REVIEW_TEST_RAY=off` skips the cluster tests. The
    caller stops a started cluster with `.stop()`.
    """
    if os.environ.get(RAY_ENV, "").strip().lower() == "off":
        return None, f"{RAY_ENV}=off"
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return None, f"Ray is not installed ({exc}); pip install -e '.[cluster]'"
    import tempfile

    # Short: Ray's socket paths under it must stay below the 107-byte limit of a Unix socket name.
    cluster = RayCluster(tempfile.mkdtemp(prefix="lr-ray-", dir="/tmp"))
    # All nodes start at once (a worker node waits for the head by itself); then the cluster must count them.
    problem = cluster.start_head(head_cpus, wait=False)
    for _ in range(workers):
        problem = problem or cluster.add_worker(worker_cpus, wait=False)
    problem = problem or cluster._wait_for_cpus(cluster.cpus)
    if problem is not None:
        cluster.stop(keep_logs=True)
        return None, problem
    return cluster, f"{1 + workers} local nodes at {cluster.address} (logs in {cluster.temp_dir})"
