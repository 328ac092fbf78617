"""Helpers every benchmark shares: the machine description and recording figures in docs/performance.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE_MD = PROJECT_ROOT / "docs" / "performance.md"
RELIABILITY_MD = PROJECT_ROOT / "docs" / "reliability.md"


def machine() -> str:
    """Core count, CPU model, Python version and the 1-minute load average."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # The machines are shared: the load average says how much else was running during the run.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}, load {load:.1f}"


def record(heading: str, intro: str, entry: str, doc: Path = PERFORMANCE_MD) -> None:
    """Append `entry` to the `heading` section of `doc`, creating the section with `intro` first."""
    text = doc.read_text() if doc.exists() else f"# {doc.stem.capitalize()}\n"
    if heading not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n{intro}"
    start = text.index(heading) + len(heading)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt == -1 else nxt
    text = text[:end].rstrip("\n") + "\n" + entry + text[end:]
    doc.write_text(text)
    print(f"recorded in docs/{doc.name} under {heading!r}")


def imported_database(root: Path, server: str | None, name: str) -> str:
    """A migrated database holding root/DL_info.csv: an SQLite file in root, or a new PostgreSQL database."""
    import uuid

    from app.db.session import make_engine, upgrade_database
    from app.review.importer import import_dataset
    from tests.api.conftest import _pg_execute, _pg_url

    if server:
        database = f"lr_{name}_{uuid.uuid4().hex[:8]}"
        _pg_execute(server, f'CREATE DATABASE "{database}"')
        url = _pg_url(server, database)
    else:
        url = f"sqlite:///{root / f'{name}.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    try:
        import_dataset(engine=engine, data_dir=root, progress=False)
    finally:
        engine.dispose()
    return url
