"""Setup shared by the review benchmarks: a 32,735-row synthetic CSV, scratch databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine, record

REAL_ROWS = 32735
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE_MD = PROJECT_ROOT / "docs" / "performance.md"


def make_csv(out_dir: Path, rows: int = REAL_ROWS, seed: int = 0) -> Path:
    """DL_info.csv with `rows` rows, from the synthetic metadata generator."""
    from app.deeplesion.synth import generate_metadata_only

    generate_metadata_only(out_dir, lesions=rows, seed=seed)
    return out_dir / "DL_info.csv"


def postgres_server() -> str:
    """The PostgreSQL server URL to benchmark on."""
    return os.environ.get("LESION_REVIEW_TEST_POSTGRES_URL", "") or DEFAULT_PG


def _pg(server: str, sql: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(server)
    with psycopg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


@contextmanager
def scratch_database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh, migrated database URL; a PostgreSQL scratch database is dropped afterwards."""
    from sqlalchemy.engine import make_url

    from app.db.session import upgrade_database

    if kind == "sqlite":
        path = tmp / f"bench_{uuid.uuid4().hex[:8]}.sqlite"
        url = f"sqlite:///{path}"
        upgrade_database(url)
        yield url
        return
    server = postgres_server()
    name = f"lr_bench_{uuid.uuid4().hex[:10]}"
    _pg(server, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        upgrade_database(url)
        yield url
    finally:
        _pg(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> tuple[bool, str]:
    """Whether the PostgreSQL server answers, and why not."""
    try:
        _pg(postgres_server(), "SELECT 1")
    except Exception as exc:  # any connection problem means: skip PostgreSQL, say why
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0]
    return True, ""


def append_figures(heading: str, lines: list[str]) -> None:
    """Append one dated block of figures under `heading` in docs/performance.md."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    record(heading, "", f"\n- {stamp}, {machine()}:\n" + "".join(f"  - {line}\n" for line in lines))
