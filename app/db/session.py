"""Engine and session helpers, migration checks: SQLite (WAL, foreign keys) or PostgreSQL by URL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


class SchemaOutdatedError(RuntimeError):
    """The database is not migrated to the current schema; the message names the fixing command."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL makes NORMAL durable enough (a crash can lose the last commit, never corrupt the file).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # 64 MiB page cache (grows only as used): a bulk import otherwise spills pages to the WAL mid-transaction,
    # which made the 32,735-row import I/O-bound (10 s instead of 4 s on a busy disk).
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def make_engine(
    url: str, *, pool_size: int = 5, max_overflow: int = 10, pool_timeout_s: float = 30.0
) -> Engine:
    """An engine for the URL; SQLite files get WAL mode and foreign keys on every connection."""
    parsed = make_url(url)
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout_s}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False}, **pool)
        else:
            engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to the engine; objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def database_kind(engine: Engine) -> str:
    """'sqlite' or 'postgresql'."""
    return "postgresql" if engine.dialect.name.startswith("postgres") else engine.dialect.name


def _quiet_alembic() -> None:
    """Alembic's per-plugin INFO lines (logged on import) drown the CLI's output; keep them for --verbose."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py prefers this attribute over Settings, so programmatic callers choose the database.
    cfg.attributes["database_url"] = url
    return cfg


def head_revision() -> str:
    """The newest migration revision."""
    _quiet_alembic()
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The alembic revision the database is at, or None when it was never migrated."""
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_database(url: str) -> None:
    """Apply every pending migration to the database at `url`."""
    _quiet_alembic()
    from alembic import command

    make_engine(url).dispose()  # creates the SQLite folder when needed
    command.upgrade(_alembic_config(url), "head")


def assert_schema_current(engine: Engine) -> None:
    """Raise SchemaOutdatedError unless the database is at the head revision."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaOutdatedError(
            f"database at {where} is not migrated (revision {current or 'none'}, need {head}): "
            "run `lesion-review migrate` (or `lesion-review import DATA_DIR`)"
        )
