"""API test fixtures: a tiny dataset, imported SQLite and PostgreSQL copies, signed-in clients."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.session import make_engine, make_session_factory, upgrade_database
from app.deeplesion.schema import LesionRecord
from app.main import create_app
from app.review.importer import import_dataset
from app.review.users import create_user
from tests.api.review_data import build_review_dataset
from tests.components import TESTED_COMPONENTS, postgres_server, require_component

PASSWORD = "correct-horse-battery"


def _admin_url(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


def _pg_execute(url: str, *statements: str) -> None:
    """Run statements on the server's `postgres` database in autocommit (CREATE/DROP DATABASE need it)."""
    import psycopg

    u = make_url(url)
    conninfo = {
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username or "postgres",
        "dbname": "postgres",
    }
    if u.password:
        conninfo["password"] = u.password
    with psycopg.connect(**conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
        for sql in statements:
            conn.execute(sql)  # type: ignore[arg-type]


def _pg_url(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    """Argon2 with minimal cost: every test signs users in, and the real cost is a deliberate ~0.1 s each."""
    from argon2 import PasswordHasher

    import app.review.users as users

    real = users._hasher
    users._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    users._hasher = real


@pytest.fixture(scope="session")
def review_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[LesionRecord]]:
    """The hand-made review dataset on disk (DL_info.csv + some stored PNGs)."""
    root = tmp_path_factory.mktemp("review_data")
    return root, build_review_dataset(root)


@dataclass
class Template:
    """A migrated, imported database to copy for each test."""

    kind: str
    url: str
    server_url: str | None = None


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_template(
    request: pytest.FixtureRequest,
    review_dataset: tuple[Path, list[LesionRecord]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Template]:
    """The dataset imported once per backend; tests get a fresh copy of it."""
    root, _ = review_dataset
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "template.db"
        url = f"sqlite:///{path}"
        upgrade_database(url)
        engine = make_engine(url)
        import_dataset(engine=engine, data_dir=root)
        engine.dispose()
        yield Template("sqlite", url)
        return
    server, how = postgres_server()
    require_component("postgresql", server is not None, how)
    assert server is not None
    TESTED_COMPONENTS["postgresql"] = f"{make_url(server).render_as_string(hide_password=True)} ({how})"
    name = f"lr_test_{uuid.uuid4().hex[:10]}"
    _pg_execute(server, f'CREATE DATABASE "{name}"')
    url = _pg_url(server, name)
    try:
        upgrade_database(url)
        engine = make_engine(url)
        import_dataset(engine=engine, data_dir=root)
        engine.dispose()
        yield Template("postgresql", url, server)
    finally:
        _pg_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(db_template: Template, tmp_path: Path) -> Iterator[str]:
    """A fresh copy of the imported template database for one test."""
    if db_template.kind == "sqlite":
        src = Path(make_url(db_template.url).database or "")
        dst = tmp_path / "test.db"
        shutil.copy(src, dst)
        yield f"sqlite:///{dst}"
        return
    assert db_template.server_url is not None
    template_name = make_url(db_template.url).database
    name = f"{template_name}_{uuid.uuid4().hex[:6]}"
    _pg_execute(db_template.server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield _pg_url(db_template.server_url, name)
    finally:
        _pg_execute(db_template.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_user(database_url: str, name: str, role: str = "reviewer") -> None:
    """Create a user directly in the database."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            create_user(session=session, name=name, password=PASSWORD, role=role)
    finally:
        engine.dispose()


class Api:
    """A TestClient on create_app with helpers to sign in and write with the CSRF token."""

    def __init__(self, client: TestClient, database_url: str) -> None:
        self.client = client
        self.database_url = database_url
        self.csrf = ""

    def login(self, name: str, role: str = "reviewer", *, create: bool = True) -> Api:
        """Create the user if asked, sign in, remember the CSRF token."""
        if create:
            add_user(self.database_url, name, role)
        r = self.client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        return self

    def write(self, method: str, url: str, **kwargs: object) -> object:
        """A write with the session's CSRF header."""
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
        headers["X-CSRF-Token"] = self.csrf
        return self.client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def app_settings(review_dataset: tuple[Path, list[LesionRecord]], database_url: str) -> Settings:
    """Settings pointing at the dataset and this test's database."""
    return Settings(data_dir=review_dataset[0], database_url=database_url, model_path=None)


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """An anonymous client (its address is not loopback, so no automatic sign-in)."""
    with TestClient(create_app(app_settings, detector=None)) as c:
        yield c


@pytest.fixture
def api(client: TestClient, database_url: str) -> Api:
    """Helpers around the anonymous client."""
    return Api(client, database_url)


@pytest.fixture
def second_api(app_settings: Settings, database_url: str) -> Iterator[Api]:
    """A second browser (own cookie jar) on the same database."""
    with TestClient(create_app(app_settings, detector=None)) as c:
        yield Api(c, database_url)
